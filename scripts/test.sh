#!/usr/bin/env bash
# The whole test suite: lint, then every crate's tests against real Kafka, daprd and databases.
# Stops the servers it started (and only those), also when a step fails.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
export PATH="$BIN_DIR:$PATH"
start=$(date +%s)
# A cold CI clone gains nothing from incremental state; it only costs disk.
[[ "${CI:-}" == true ]] && export CARGO_INCREMENTAL=0
say "disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free where the build goes"

started=()
cleanup() {
  for s in "${started[@]}"; do bash "scripts/$s.sh" down || true; done
}
trap cleanup EXIT

bash scripts/kafka.sh status >/dev/null 2>&1 || { KAFKA_FRESH=1 bash scripts/kafka.sh up; started+=(kafka); }
bash scripts/pg.sh status >/dev/null 2>&1 || { bash scripts/pg.sh up; started+=(pg); }
export DATABASE_URL_PG="${DATABASE_URL_PG:-$(bash scripts/pg.sh url)}"
# Each test makes its own database t_<uuid>; drop those of earlier runs.
if command -v psql >/dev/null; then
  old=$(psql "$DATABASE_URL_PG" -tAc "SELECT datname FROM pg_database WHERE datname LIKE 't\_%'" 2>/dev/null || true)
  for db in $old; do psql "$DATABASE_URL_PG" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true; done
  [[ -z "$old" ]] || say "dropped $(echo "$old" | wc -w) test databases of earlier runs"
fi

say "versions: daprd $(daprd --version), kafka $KAFKA_VERSION, $(cargo --version)"
say "lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
bash scripts/buf-check.sh

say "tests"
cargo test --workspace --locked --no-fail-fast

# A small run of `just chaos` (docs/chaos.md): the services as processes with their
# sidecars, four faults from a fixed seed, the checker; about 80 s.
say "chaos: a small seeded fault soak"
# The binaries `cargo test` built above, with the same features: nothing is compiled again.
cargo build --workspace --all-targets --locked
CHAOS_SEED="${CHAOS_SEED:-1}" "${CARGO_TARGET_DIR:-target}/debug/chaos" \
  --duration 45 --faults 4 --users 8 --rate 20 --quiesce 120

say "all tests passed in $(( $(date +%s) - start )) s"
