#!/usr/bin/env bash
# buf lint on proto/, and buf breaking against the main branch's protos (when main has them).
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
BUF="$BIN_DIR/buf"
[[ -x "$BUF" ]] || bash scripts/bootstrap-go-tool.sh buf github.com/bufbuild/buf/cmd/buf "$BUF_VERSION"
say "buf lint proto/"
"$BUF" lint proto
against="${BUF_AGAINST_REF:-main}"
if git rev-parse --verify -q "$against:proto/buf.yaml" >/dev/null; then
  say "buf breaking proto/ against $against"
  "$BUF" breaking proto --against ".git#ref=$against,subdir=proto"
else
  say "buf breaking: $against has no proto/buf.yaml yet; nothing to compare"
fi
