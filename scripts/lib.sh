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

# locked <name> <script> [args…]: runs the rest of <script> holding the exclusive lock
# $CACHE_DIR/<name>.lock, so two runs on one machine (a CI run beside a `just up`, a killed
# run whose recipes go on) take turns instead of both formatting Kafka's storage or writing
# the same cache folder. Call it first thing; it re-runs the script under flock(1) and exits
# with its status. The lock is held by flock itself (-o): a server the script starts does
# not inherit it and does not keep it after the script returns.
locked() {
  local name=$1 script=$2; shift 2
  local flag="TODO_LOCKED_${name//[^A-Za-z0-9]/_}"
  [[ -n "${!flag:-}" ]] && return 0
  export "$flag"=1
  local lock="$CACHE_DIR/$name.lock" rc=0
  if ! flock -n "$lock" true; then say "$name: another run holds $lock; waiting (at most 30 min)"; fi
  flock -o -w 1800 -E 75 "$lock" bash "$script" "$@" || rc=$?
  [[ $rc -eq 75 ]] && die "$name: $lock still held after 30 min"
  exit "$rc"
}
