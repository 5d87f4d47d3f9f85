#!/usr/bin/env bash
# kafka.sh up|down|status — a single-node KRaft broker on 127.0.0.1, data under $KAFKA_DATA_DIR.
source "$(dirname "$0")/lib.sh"
[[ "${1:-}" == up || "${1:-}" == down ]] && locked "kafka-${KAFKA_PORT:-19092}" "$0" "$@"

KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
DATA="${KAFKA_DATA_DIR:-$CACHE_DIR/kafka-data}"
LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PIDFILE="$DATA/kafka.pid"
LOG="$DATA/kafka.log"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; }
# (A killed broker may stay a zombie for a moment: that is not running.)
running() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null \
    && [[ "$(sed 's/.*) //' "/proc/$(cat "$PIDFILE")/stat" 2>/dev/null | cut -c1)" != Z ]]
}
java_cmd() { java -Xms256m -Xmx768m -XX:+UseG1GC -Dlog4j2.configurationFile="$REPO/kafka/log4j2.properties" -cp "$LIBS/*" "$@"; }

up() {
  [[ -f "$LIBS/.complete" ]] || bash "$(dirname "$0")/bootstrap-kafka.sh"
  if running && answers; then say "kafka: already running on 127.0.0.1:$KAFKA_PORT (pid $(cat "$PIDFILE"))"; return 0; fi
  # Started but not answering yet (a broker with many topics takes a while to load them):
  # wait for it; a second broker on the same data folder would corrupt its metadata log.
  if running; then
    say "kafka: pid $(cat "$PIDFILE") is starting; waiting for it"
    wait_ready
    return 0
  fi
  if answers; then die "port $KAFKA_PORT is taken by another process; set KAFKA_PORT"; fi
  # Test topics are unique per run and never read again: a test run starts the broker on
  # empty storage (KAFKA_FRESH=1) instead of carrying every earlier run's topics (14,451
  # partitions after a few days of runs here made creating a topic slow enough that first
  # publishes to new topics failed, and flaky tests followed).
  if [[ "${KAFKA_FRESH:-}" == 1 && -d "$DATA/logs" ]]; then
    say "kafka: fresh storage (KAFKA_FRESH=1): removing $DATA/logs"
    rm -rf "$DATA/logs"
  fi
  mkdir -p "$DATA"
  cat > "$DATA/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA/logs
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
PROPS
  if [[ ! -f "$DATA/logs/meta.properties" ]]; then
    say "kafka: formatting storage in $DATA/logs"
    java_cmd kafka.tools.StorageTool format -t "todo-dapr-local-kafka1" -c "$DATA/server.properties" >"$DATA/format.log" 2>&1 \
      || { cat "$DATA/format.log" >&2; die "formatting Kafka storage failed"; }
  fi
  say "kafka $KAFKA_VERSION: starting on 127.0.0.1:$KAFKA_PORT (log: $LOG)"
  nohup bash -c "$(declare -f java_cmd); REPO='$REPO' LIBS='$LIBS'; exec java -Xms256m -Xmx768m -XX:+UseG1GC -Dlog4j2.configurationFile='$REPO/kafka/log4j2.properties' -cp '$LIBS/*' kafka.Kafka '$DATA/server.properties'" >"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  wait_ready
}

# Waits (at most 180 s) until the broker of $PIDFILE has started and answers.
wait_ready() {
  for _ in $(seq 1 360); do
    if grep -q "Kafka Server started" "$LOG" 2>/dev/null && answers; then say "kafka: ready"; return 0; fi
    running || { tail -30 "$LOG" >&2; die "kafka exited during start (log: $LOG)"; }
    sleep 0.5
  done
  tail -30 "$LOG" >&2; die "kafka did not answer within 180 s (log: $LOG)"
}

down() {
  if running; then
    local pid; pid=$(cat "$PIDFILE")
    say "kafka: stopping (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { say "kafka: did not stop in 30 s, killing"; kill -KILL "$pid"; }
    rm -f "$PIDFILE"
    say "kafka: stopped"
  else
    say "kafka: not running"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if running && answers; then echo "running (pid $(cat "$PIDFILE")) on 127.0.0.1:$KAFKA_PORT"; else echo "not running"; exit 1; fi ;;
  *) die "usage: kafka.sh up|down|status" ;;
esac
