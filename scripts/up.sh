#!/usr/bin/env bash
# Runs the system in the foreground: each service with its daprd sidecar, logs prefixed
# with their name. Ctrl-C (or SIGTERM) stops everything cleanly. Kafka must be up (`just up` does it).
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
export PATH="$BIN_DIR:$PATH"
mkdir -p .data

pids=()
stop() {
  trap - INT TERM EXIT
  say "stopping: ${#pids[@]} processes"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
  done
  say "stopped"
}
trap stop INT TERM EXIT

# run <name> <command...>: start in the background with prefixed output.
run() {
  local name="$1"; shift
  ( exec "$@" ) > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
}

# sidecar <app-id> <app port> <dapr grpc port> <dapr http port> <metrics port>
sidecar() {
  run "$1-dapr" daprd --app-id "$1" --app-port "$2" --app-protocol grpc --app-channel-address 127.0.0.1 \
    --dapr-grpc-port "$3" --dapr-http-port "$4" --metrics-port "$5" \
    --dapr-internal-grpc-port $(( $3 + 1000 )) --profile-port $(( $4 + 1000 )) \
    --dapr-listen-addresses 127.0.0.1 --metrics-listen-address 127.0.0.1 \
    --resources-path dapr-components --config dapr-components/configuration.yaml \
    --placement-host-address "" --scheduler-host-address "" --log-level warn
}

# `just up` builds them all (cargo build --release --bins).
for bin in task-service recurring-task-service notification-service audit-service sync-service dead-letter-service todo-mcp; do
  [[ -x "target/release/$bin" ]] || die "target/release/$bin is missing: run cargo build --release --bins (just up does)"
done

export AUTH_MODE="${AUTH_MODE:-dev}"
export RUST_LOG="${RUST_LOG:-info,sqlx=warn,sea_orm=warn}"

# task-service: gRPC API + AppCallback on 50051, sidecar gRPC 50001 / HTTP 3500.
APP_ADDR=127.0.0.1:50051 DAPR_GRPC_PORT=50001 DATABASE_URL="${DATABASE_URL:-sqlite://.data/tasks.db?mode=rwc}" \
  run task-service target/release/task-service
sidecar task-service 50051 50001 3500 9090

# mcp-server (binary todo-mcp): MCP over streamable HTTP on http://127.0.0.1:8765/mcp, a
# gRPC client of task-service (no sidecar on one machine). In dev mode it acts as `alice`
# for callers without a bearer token; with AUTH_MODE=jwt each caller brings their own.
mcp_dev_user=""; [[ "$AUTH_MODE" == dev ]] && mcp_dev_user="${MCP_DEV_USER:-alice}"
MCP_TRANSPORT=http MCP_ADDR=127.0.0.1:8765 TASK_SERVICE_URL=http://127.0.0.1:50051 MCP_DEV_USER="$mcp_dev_user" \
  run mcp-server target/release/todo-mcp

# recurring-task-service: AppCallback on 50052, sidecar gRPC 50002 / HTTP 3502.
APP_ADDR=127.0.0.1:50052 DAPR_GRPC_PORT=50002 run recurring-task-service target/release/recurring-task-service
sidecar recurring-task-service 50052 50002 3502 9092

# notification-service: API + AppCallback on 50053, sidecar gRPC 50003 / HTTP 3503.
APP_ADDR=127.0.0.1:50053 DAPR_GRPC_PORT=50003 run notification-service target/release/notification-service
sidecar notification-service 50053 50003 3503 9093

# audit-service: API + AppCallback (bulk) on 50054, sidecar gRPC 50004 / HTTP 3504. Its own
# database (rule 1): AUDIT_DATABASE_URL here, DATABASE_URL in its environment.
APP_ADDR=127.0.0.1:50054 DAPR_GRPC_PORT=50004 DATABASE_URL="${AUDIT_DATABASE_URL:-sqlite://.data/audit.db?mode=rwc}" \
  run audit-service target/release/audit-service
sidecar audit-service 50054 50004 3504 9094

# sync-service: WatchTasks (gRPC and gRPC-Web) + AppCallback on 50055, sidecar gRPC 50005 /
# HTTP 3505. Its sidecar consumes task-updates through kafka-broadcast (a group of its own).
APP_ADDR=127.0.0.1:50055 DAPR_GRPC_PORT=50005 run sync-service target/release/sync-service
sidecar sync-service 50055 50005 3505 9095

# dead-letter-service: DeadLetterService (admins) + AppCallback on 50056, sidecar gRPC 50006 /
# HTTP 3506. Its sidecar consumes every <topic>-dlq; replays are published through it. Its own
# database: DLQ_DATABASE_URL here, DATABASE_URL in its environment.
APP_ADDR=127.0.0.1:50056 DAPR_GRPC_PORT=50006 DATABASE_URL="${DLQ_DATABASE_URL:-sqlite://.data/dead-letters.db?mode=rwc}" \
  run dead-letter-service target/release/dead-letter-service
sidecar dead-letter-service 50056 50006 3506 9096

cat <<MSG

  task-service  grpc://127.0.0.1:50051  (reflection on; AUTH_MODE=$AUTH_MODE)
  mcp-server    http://127.0.0.1:8765/mcp  (MCP streamable HTTP; dev user: ${mcp_dev_user:-none, send a bearer JWT})
  its daprd     grpc 50001, http 3500, metrics http://127.0.0.1:9090/metrics
  outbox/relay  metrics http://127.0.0.1:9464/metrics
  recurring-task-service  grpc://127.0.0.1:50052 (AppCallback, health); daprd grpc 50002
                          metrics http://127.0.0.1:9465/metrics
  notification-service    grpc://127.0.0.1:50053 (ListNotifications, reflection); daprd grpc 50003
                          metrics http://127.0.0.1:9466/metrics
                          each notification is a JSON line prefixed [notification-service]
  audit-service           grpc://127.0.0.1:50054 (ListTaskActivity, ListActivity, reflection); daprd grpc 50004
                          metrics http://127.0.0.1:9467/metrics; audit log .data/audit.db (or AUDIT_DATABASE_URL)
  sync-service            grpc://127.0.0.1:50055 (WatchTasks, gRPC and gRPC-Web, reflection); daprd grpc 50005
                          metrics http://127.0.0.1:9468/metrics
  dead-letter-service     grpc://127.0.0.1:50056 (DeadLetterService for admins: x-user-id admin); daprd grpc 50006
                          metrics http://127.0.0.1:9469/metrics; dead letters .data/dead-letters.db (just dlq list)
  kafka         127.0.0.1:19092

  Try:  grpcurl -plaintext -H 'x-user-id: alice' -d '{"task": {"title": "Buy milk"}}' \\
          127.0.0.1:50051 todo.v1.TaskService/CreateTask
        grpcurl -plaintext -H 'x-user-id: alice' 127.0.0.1:50051 todo.v1.TaskService/ListTasks
        grpcurl -plaintext -H 'x-user-id: alice' 127.0.0.1:50053 todo.notifications.v1.NotificationService/ListNotifications
        grpcurl -plaintext -H 'x-user-id: alice' -d '{"task_id": "<id>"}' \\
          127.0.0.1:50054 todo.audit.v1.AuditService/ListTaskActivity
        grpcurl -plaintext -H 'x-user-id: alice' -d '{}' 127.0.0.1:50055 todo.sync.v1.SyncService/WatchTasks
          (in another terminal: every change of alice's tasks, as it happens; see README "Live sync")

  Ctrl-C stops everything.

MSG
wait -n "${pids[@]}" || true
say "a process exited; stopping the rest"
