#!/usr/bin/env bash
# Builds daprd from Dapr's own Go module, keeping only the components this project uses.
source "$(dirname "$0")/lib.sh"
locked bootstrap-daprd "$0" "$@"

OUT="$BIN_DIR/daprd-$DAPR_VERSION"
if [[ -x "$OUT" ]] && "$OUT" --version 2>/dev/null | grep -qx "$DAPR_VERSION"; then
  say "daprd $DAPR_VERSION: cached at $OUT"
  ln -sf "$OUT" "$BIN_DIR/daprd"
  exit 0
fi

need go "Install Go >= 1.26 (https://go.dev/dl or Debian's golang package)."
say "daprd $DAPR_VERSION: downloading github.com/dapr/dapr@v$DAPR_VERSION from the Go module proxy"
MODDIR=$(go mod download -json "github.com/dapr/dapr@v$DAPR_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p') \
  || die "go mod download github.com/dapr/dapr@v$DAPR_VERSION failed: is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))?"
[[ -d "$MODDIR" ]] || die "go mod download did not report a module folder for dapr v$DAPR_VERSION"

SRC="$CACHE_DIR/src/dapr-$DAPR_VERSION"
say "daprd $DAPR_VERSION: writable copy in $SRC"
rm -rf "$SRC"; mkdir -p "$(dirname "$SRC")"
cp -r "$MODDIR" "$SRC"; chmod -R u+w "$SRC"

# Keep only the component registrations this project uses: fewer modules, faster build.
KEEP="pubsub_kafka.go state_sqlite.go state_postgres.go secretstores_local_env.go secretstores_local_file.go nameresolution_mdns.go"
for f in "$SRC"/cmd/daprd/components/*.go; do
  b=$(basename "$f")
  [[ "$b" == zz_notag.go ]] && continue
  [[ " $KEEP " == *" $b "* ]] || rm -f "$f"
done
say "daprd $DAPR_VERSION: kept components: $KEEP"

say "daprd $DAPR_VERSION: building ./cmd/daprd (first build takes several minutes)"
(cd "$SRC" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -tags stablecomponents \
   -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$DAPR_VERSION -X github.com/dapr/dapr/pkg/buildinfo.gitcommit=v$DAPR_VERSION" \
   -o "$OUT.tmp" ./cmd/daprd) || die "building daprd failed (see the Go output above)"
mv "$OUT.tmp" "$OUT"
ln -sf "$OUT" "$BIN_DIR/daprd"
say "daprd $DAPR_VERSION: built $OUT ($("$OUT" --version))"
