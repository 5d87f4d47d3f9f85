#!/usr/bin/env bash
# Shared helpers for the bootstrap scripts: versions, cache layout, logging.
set -euo pipefail

# Pinned versions (one place).
DAPR_VERSION="${DAPR_VERSION:-1.18.2}"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
GRPCURL_VERSION="${GRPCURL_VERSION:-v1.9.3}"
BUF_VERSION="${BUF_VERSION:-v1.75.0}"

CACHE_DIR="${TODO_CACHE_DIR:-$HOME/.cache/todo-dapr}"
BIN_DIR="$CACHE_DIR/bin"
mkdir -p "$BIN_DIR"

say() { printf '\033[1;34m[bootstrap]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[bootstrap] error:\033[0m %s\n' "$*" >&2; exit 1; }

need() {
  # need <command> <how to get it>
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed. $2"
}
