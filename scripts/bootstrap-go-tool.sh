#!/usr/bin/env bash
# bootstrap-go-tool.sh <name> <module/cmd path> <version> — installs a pinned Go tool into the cache.
source "$(dirname "$0")/lib.sh"
locked "bootstrap-${1:-go-tool}" "$0" "$@"
name="$1"; pkg="$2"; version="$3"
OUT="$BIN_DIR/$name-$version"
if [[ -x "$OUT" ]]; then
  say "$name $version: cached at $OUT"
else
  need go "Install Go >= 1.26 to build $name."
  say "$name $version: go install $pkg@$version"
  tmp=$(mktemp -d)
  GOBIN="$tmp" go install -ldflags "-X main.version=$version" "$pkg@$version" || die "go install $pkg@$version failed: is the Go module proxy reachable?"
  mv "$tmp/$name" "$OUT"; rm -rf "$tmp"
fi
ln -sf "$OUT" "$BIN_DIR/$name"
