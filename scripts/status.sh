#!/usr/bin/env bash
# What a running `just up` is doing, as an operator would read it in the Dapr dashboard:
# each app, its sidecar, their health, the components the sidecar loaded and its
# subscriptions (routes, dead-letter topics), from daprd's metadata API (GET /v1.0/metadata
# on its HTTP port); events consumed by outcome and dead letters from the Prometheus
# metrics of the app and of daprd; task-service's outbox depth and age.
#   bash scripts/status.sh          (`just status`)
# The apps and ports are read from scripts/up.sh (its `sidecar` lines) and the metrics
# address from each binary's --help default, so this follows when up.sh changes.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
export PATH="$BIN_DIR:$PATH"
need jq "apt-get install jq."
need curl "apt-get install curl."
need grpcurl "run just bootstrap."

# Colours only on a terminal (plain text when piped or pasted).
if [[ -t 1 ]]; then
  bold() { printf '\033[1m%s\033[0m' "$*"; }
  ok() { printf '\033[32m%s\033[0m' "$*"; }
  bad() { printf '\033[31m%s\033[0m' "$*"; }
else
  bold() { printf '%s' "$*"; }
  ok() { printf '%s' "$*"; }
  bad() { printf '%s' "$*"; }
fi

# default_of <binary> <flag>: the [default: ...] its --help gives for --<flag>.
default_of() {
  [[ -x "target/release/$1" ]] || return 0
  "target/release/$1" --help 2>/dev/null | tr '\n' ' ' | tr -s ' ' \
    | sed -n "s/.*--$2 <VALUE> [^[]*\[default: \([^]]*\)\].*/\1/p"
}

# metric <url> <name> [<jq filter on labels>]: sum of the samples of a metric.
scrape() { curl -sf --max-time 2 "$1" 2>/dev/null || true; }
sum_of() { # sum_of <text> <name> <label regex>
  awk -v n="$2" -v re="${3:-}" '
    $1 ~ "^"n"({|$)" && (re == "" || $1 ~ re) { s += $NF; found = 1 }
    END { if (found) printf "%g", s; else printf "-" }' <<<"$1"
}
# by_label <text> <name> <label> [<label regex>]: "value=sum ..." over one label.
by_label() {
  awk -v n="$2" -v l="$3" -v re="${4:-}" '
    $1 ~ "^"n"{" && (re == "" || $1 ~ re) {
      v = $1; if (match(v, l"=\"[^\"]*\"")) { k = substr(v, RSTART + length(l) + 2, RLENGTH - length(l) - 3) } else k = "?"
      s[k] += $NF }
    END { for (k in s) printf "%s=%g ", k, s[k] }' <<<"$1"
}

printf '%s  %s\n' "$(bold "todo-dapr status")" "$(date -u +%FT%TZ)"
if kafka=$(bash scripts/kafka.sh status 2>/dev/null); then echo "kafka        $(ok up) $kafka"; else echo "kafka        $(bad down) (just kafka-up)"; fi

# The apps with a sidecar: `sidecar <app-id> <app port> <dapr grpc> <dapr http> <dapr metrics>`.
mapfile -t sidecars < <(grep -E '^sidecar [a-z]' scripts/up.sh)
((${#sidecars[@]})) || die "no sidecar lines in scripts/up.sh"
any_up=0
for line in "${sidecars[@]}"; do
  read -r _ app app_port grpc_port http_port dapr_metrics <<<"$line"
  bin=$(grep -oE "run $app target/release/[a-z0-9_-]+" scripts/up.sh | head -1 | sed 's|.*/||'); bin="${bin:-$app}"
  echo
  # The app: grpc.health.v1 on its app port (the port its sidecar calls).
  if health=$(grpcurl -plaintext -max-time 2 "127.0.0.1:$app_port" grpc.health.v1.Health/Check 2>/dev/null | jq -r .status); then
    app_state=$([[ "$health" == SERVING ]] && ok "$health" || bad "$health")
  else app_state=$(bad "not answering"); fi
  printf '%s  app 127.0.0.1:%s %s\n' "$(bold "$app")" "$app_port" "$app_state"

  # Its sidecar: healthz, then the metadata API.
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$http_port/v1.0/healthz" || true)
  if [[ "$code" != 204 ]]; then
    printf '  daprd  http %s grpc %s: %s\n' "$http_port" "$grpc_port" "$(bad "not healthy (healthz $code)")"
    continue
  fi
  any_up=1
  meta=$(curl -sf --max-time 2 "http://127.0.0.1:$http_port/v1.0/metadata")
  printf '  daprd  %s http %s grpc %s metrics %s: %s; app channel %s\n' \
    "$(jq -r .runtimeVersion <<<"$meta")" "$http_port" "$grpc_port" "$dapr_metrics" "$(ok healthy)" \
    "$(jq -r '.appConnectionProperties | "\(.protocol // "?")://\(.channelAddress // "?"):\(.port // "?")" + (if .health then " (app health check every \(.health.healthProbeInterval // "?"))" else "" end)' <<<"$meta")"
  jq -r '"  components: " + ([.components[]? | "\(.name) (\(.type)/\(.version))"] | join(", "))' <<<"$meta"
  jq -r '.subscriptions[]? |
    "  subscription \(.pubsubname)/\(.topic) -> " +
    ([.rules[]? | (if (.match // "") == "" then "" else "[\(.match)] " end) + (if (.path // "") == "" then "(default route)" else .path end)] | join(", ")) +
    "  dead letters: " + (.deadLetterTopic // "NONE") +
    (if .metadata.bulkSubscribe == "true" or (.metadata | tostring | test("bulk"; "i")) then "  (bulk)" else "" end) +
    (if (.metadata.rawPayload // "") == "true" then " (rawPayload)" else "" end)' <<<"$meta"
  [[ "$(jq '.subscriptions | length' <<<"$meta")" != 0 ]] || echo "  subscriptions: none"
  jq -r '.subscriptions[]? | select((.deadLetterTopic // "") == "") | "  WARNING: \(.topic) has no dead-letter topic"' <<<"$meta"

  # Events: what the app answered (events_consumed_total by outcome), what daprd did
  # (dapr_component_pubsub_ingress_count by process_status; drop = sent to the dead-letter
  # topic), what daprd published (egress).
  app_metrics_addr=$(default_of "$bin" metrics-addr)
  am=""; [[ -z "$app_metrics_addr" || "$app_metrics_addr" == off ]] || am=$(scrape "http://$app_metrics_addr/metrics")
  dm=$(scrape "http://127.0.0.1:$dapr_metrics/metrics")
  if [[ -n "$am" ]]; then
    consumed=$(by_label "$am" events_consumed_total outcome)
    echo "  app metrics http://$app_metrics_addr/metrics: consumed ${consumed:-none yet}"
    for t in $(awk '$1 ~ /^events_consumed_total\{/ { if (match($1, /topic="[^"]*"/)) print substr($1, RSTART + 7, RLENGTH - 8) }' <<<"$am" | sort -u); do
      echo "    $t: $(by_label "$am" events_consumed_total outcome "topic=\"$t\"")"
    done
  else echo "  app metrics: $(bad "not answering") (${app_metrics_addr:-unknown address})"; fi
  if [[ -n "$dm" ]]; then
    drops=$(sum_of "$dm" dapr_component_pubsub_ingress_count 'process_status="drop"')
    retries=$(sum_of "$dm" dapr_component_pubsub_ingress_count 'process_status="retry"')
    egress=$(sum_of "$dm" dapr_component_pubsub_egress_count 'success="true"')
    bulk_egress=$(sum_of "$dm" dapr_component_pubsub_egress_bulk_event_count 'success="true"')
    dl=$([[ "$drops" == - || "$drops" == 0 ]] && echo "${drops/-/0}" || bad "$drops")
    echo "  daprd: dead letters (dropped to <topic>-dlq) $dl, retried $retries, published $egress (bulk $bulk_egress)"
    [[ "$drops" == - || "$drops" == 0 ]] || echo "    by topic: $(by_label "$dm" dapr_component_pubsub_ingress_count topic 'process_status="drop"')"
  fi

  # task-service's transactional outbox.
  if grep -q '^outbox_depth' <<<"$am"; then
    depth=$(sum_of "$am" outbox_depth); age=$(sum_of "$am" outbox_oldest_age_seconds)
    age_s=$(awk -v a="$age" 'BEGIN { if (a == "-") print a; else printf "%.1f s", a }')
    state=$(awk -v a="$age" 'BEGIN { exit !(a != "-" && a > 60) }' && bad "(stuck? see docs/runbook.md)" || true)
    echo "  outbox: depth $depth, oldest $age_s $state; published $(sum_of "$am" outbox_events_published_total), publish failures $(sum_of "$am" outbox_publish_failures_total)"
  fi
done

# Apps started without a sidecar (mcp-server): is their HTTP address answering?
echo
for bin in $(grep -oE 'run [a-z0-9-]+ target/release/[a-z0-9_-]+' scripts/up.sh | awk '{print $2 "=" $3}'); do
  app="${bin%%=*}"; b="${bin##*/}"
  grep -qE "^sidecar $app " scripts/up.sh && continue
  addr=$(default_of "$b" mcp-addr)
  [[ -n "$addr" ]] || { echo "$(bold "$app")  (no sidecar)"; continue; }
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$addr/mcp" || true)
  if [[ "$code" != 000 ]]; then state=$(ok "answering (HTTP $code on /mcp)"); else state=$(bad "not answering"); fi
  printf '%s  http://%s/mcp %s (no sidecar: a gRPC client of task-service)\n' "$(bold "$app")" "$addr" "$state"
done
((any_up)) || { echo; die "no sidecar answers: is just up running?"; }
