#!/usr/bin/env bash
# pg.sh up|down|status|url — a PostgreSQL server for this project on 127.0.0.1:$PG_PORT,
# data under the cache, run as the `postgres` system user (the server refuses root).
source "$(dirname "$0")/lib.sh"
[[ "${1:-}" == up || "${1:-}" == down ]] && locked "postgresql-${PG_PORT:-15432}" "$0" "$@"
PG_PORT="${PG_PORT:-15432}"
# The server runs as `postgres`, which cannot enter root's home: its data lives in the
# postgres user's own home (Debian: /var/lib/postgresql), outside the clone.
PG_HOME=$(getent passwd postgres | cut -d: -f6 || true)
DATA="${PG_DATA_DIR:-${PG_HOME:-/var/lib/postgresql}/todo-dapr-$PG_PORT}"
LOG="$DATA.log"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
URL="postgres://todo:todo@127.0.0.1:$PG_PORT/todo"

as_pg() { if [[ $(id -un) == postgres ]]; then "$@"; elif [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }

up() {
  [[ -n "$PGBIN" ]] || bash "$(dirname "$0")/bootstrap-postgres.sh"
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  if as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    say "postgresql: already running on 127.0.0.1:$PG_PORT"; return 0
  fi
  if [[ ! -f "$DATA/PG_VERSION" ]]; then
    say "postgresql: initdb in $DATA"
    mkdir -p "$DATA"; chown postgres:postgres "$DATA" "$(dirname "$DATA")"; chmod 700 "$DATA"
    touch "$LOG"; chown postgres:postgres "$LOG"
    as_pg "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null \
      || die "initdb failed"
  fi
  touch "$LOG"; chown postgres:postgres "$LOG"
  say "postgresql: starting on 127.0.0.1:$PG_PORT (log: $LOG)"
  as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k /tmp -c max_connections=300 -c fsync=on" start >/dev/null \
    || { tail -20 "$LOG" >&2; die "postgresql did not start"; }
  as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='todo'" | grep -q 1 \
    || as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE ROLE todo LOGIN PASSWORD 'todo' CREATEDB"
  as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='todo'" | grep -q 1 \
    || as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE todo OWNER todo"
  say "postgresql: ready at $URL"
}

down() {
  if [[ -n "$PGBIN" ]] && as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null && say "postgresql: stopped"
  else
    say "postgresql: not running"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  url) echo "$URL" ;;
  status) as_pg "$PGBIN/pg_ctl" -D "$DATA" status ;;
  *) die "usage: pg.sh up|down|status|url" ;;
esac
