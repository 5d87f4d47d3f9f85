#!/usr/bin/env bash
# Everything `just up` and `just test` need, idempotent and cached under ~/.cache/todo-dapr.
source "$(dirname "$0")/lib.sh"
here="$(dirname "$0")"
start=$(date +%s)
say "cache: $CACHE_DIR"
need cargo "Install Rust with rustup (https://rustup.rs)."
bash "$here/bootstrap-daprd.sh"
bash "$here/bootstrap-kafka.sh"
bash "$here/bootstrap-go-tool.sh" grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION"
bash "$here/bootstrap-go-tool.sh" buf github.com/bufbuild/buf/cmd/buf "$BUF_VERSION"
bash "$here/bootstrap-postgres.sh"
say "done in $(( $(date +%s) - start )) s: daprd $("$BIN_DIR/daprd" --version), kafka $KAFKA_VERSION, $("$BIN_DIR/grpcurl" -version 2>&1), buf $("$BIN_DIR/buf" --version)"
