#!/usr/bin/env bash
# `just dlq …`: dead-letter-service's API with grpcurl, as an admin.
#   list [JSON filter]   e.g. '{"topic": "task-events", "types": ["todo.task.completed.v2"]}'
#   show ID | replay ID | discard ID
# DLQ_ADDR (default 127.0.0.1:50056); the caller is DLQ_TOKEN (a bearer JWT) when set, else
# the dev-mode header x-user-id: DLQ_ADMIN (default admin, in DLQ_ADMINS).
source "$(dirname "$0")/lib.sh"
action="${1:-list}"
arg="${2:-}"
addr="${DLQ_ADDR:-127.0.0.1:50056}"
GRPCURL="$BIN_DIR/grpcurl"
[[ -x "$GRPCURL" ]] || GRPCURL="$(command -v grpcurl)" || die "grpcurl is missing: run just bootstrap"
if [[ -n "${DLQ_TOKEN:-}" ]]; then
  who=(-H "authorization: Bearer $DLQ_TOKEN")
else
  who=(-H "x-user-id: ${DLQ_ADMIN:-admin}")
fi
svc=todo.deadletters.v1.DeadLetterService
need_id() { [[ -n "$arg" ]] || die "just dlq $action ID (the id from just dlq list)"; }
case "$action" in
  list) body="${arg:-{\}}"; method=ListDeadLetters ;;
  show) need_id; body="{\"id\": \"$arg\"}"; method=GetDeadLetter ;;
  replay) need_id; body="{\"id\": \"$arg\"}"; method=ReplayDeadLetter ;;
  discard) need_id; body="{\"id\": \"$arg\"}"; method=DiscardDeadLetter ;;
  *) die "just dlq list [FILTER] | show ID | replay ID | discard ID (got $action)" ;;
esac
exec "$GRPCURL" -plaintext "${who[@]}" -d "$body" "$addr" "$svc/$method"
