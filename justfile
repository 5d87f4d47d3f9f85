# Every workflow of the Todo system. `just --list` shows them all.
# Tools are pinned in scripts/lib.sh and cached under ~/.cache/todo-dapr (outside the clone).

set shell := ["bash", "-euo", "pipefail", "-c"]
set export

cache := env_var_or_default("TODO_CACHE_DIR", env_var("HOME") / ".cache/todo-dapr")
PATH := cache / "bin" + ":" + env_var("PATH")

# List the recipes.
default:
    @just --list

# Install/build everything the other recipes need (daprd, Kafka jars, grpcurl, buf, PostgreSQL). Idempotent.
bootstrap:
    bash scripts/bootstrap.sh

# Run the system on this machine in the foreground: Kafka, then each service with its daprd. Ctrl-C stops all.
up: bootstrap kafka-up
    cargo build --release --bins
    bash scripts/up.sh

# Run every check and test against the real daprd, Kafka, SQLite and PostgreSQL.
test: bootstrap k8s-check k8s-apply images-test
    bash scripts/test.sh

# Seeded fault soak (about 3 minutes): every service and sidecar a process, Kafka and PostgreSQL of its own, a
# nemesis (SIGKILL/restart/SIGSTOP), a load driver and a checker; exits non-zero on any violation. Knobs (env or
# flags): CHAOS_SEED, CHAOS_DURATION_SECS, CHAOS_USERS, CHAOS_RATE, CHAOS_FAULTS, CHAOS_PROFILE; `just chaos --help`.
chaos *args: bootstrap
    cargo build --bins
    cargo run -q -p todo-chaos --bin chaos -- {{args}}

# Build every Kustomize overlay and validate it offline (kubeconform against the vendored schemas; the Grafana dashboard's and alerts' metrics).
k8s-check:
    bash scripts/k8s-check.sh

# Apply every overlay to a real API server (etcd, kube-apiserver and kube-controller-manager built from k8s.io/kubernetes; the CRDs; the Secrets a deployer creates): every object admitted, every Deployment gets its Pods.
k8s-apply:
    bash scripts/k8s-apply.sh

# Regenerate kustomize/schemas/ from the Kubernetes, Dapr, Strimzi and KEDA packages (after a version bump or a new kind).
k8s-schemas:
    bash scripts/k8s-schemas.sh

# Formatting, clippy, and protobuf lint + breaking-change check.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    bash scripts/buf-check.sh

# Start the single-node KRaft Kafka broker on 127.0.0.1:19092 (data under the cache).
kafka-up:
    bash scripts/kafka.sh up

# Stop the Kafka broker.
kafka-down:
    bash scripts/kafka.sh down

# Start PostgreSQL on 127.0.0.1:15432 (Debian's package, run as the postgres user).
pg-up:
    bash scripts/pg.sh up

# Stop PostgreSQL.
pg-down:
    bash scripts/pg.sh down

# Apply the task-service database migrations to DATABASE_URL (default: the local SQLite file).
migrate:
    cargo run -q -p task-service -- migrate

# The raw pipe baseline: events/s and publish→deliver latency through daprd → Kafka → daprd.
bench-pipe: bootstrap kafka-up
    cargo run --release -p todo-bench --bin bench_pipe

# Task API throughput and latency on SQLite and PostgreSQL.
bench-api: bootstrap pg-up
    cargo run --release -p todo-bench --bin bench_api

# Task events end to end: mutations/s through the outbox, relay, daprd and Kafka to a
# consumer, and commit→consumer latency, next to the raw pipe measured in the same run.
bench-events: bootstrap kafka-up pg-up
    cargo run --release -p todo-bench --bin bench_events

# Recurring tasks: completion → next occurrence visible, p50/p99.
bench-recurrence: bootstrap kafka-up
    cargo run --release -p todo-bench --bin bench_recurrence

# Reminders: 10,000 due within 60 s; lateness p50/p99 and duplicates. BENCH_DATABASE and
# BENCH_STATE_STORE (sqlite or postgres) pick where the tasks and the delivery log are kept.
bench-reminders: bootstrap kafka-up pg-up
    cargo run --release -p todo-bench --bin bench_reminders

# audit-service ingestion: its release binary as a child process with its own daprd,
# bulk-consuming task-events into SQLite (and PostgreSQL): burst events/s, lag p50/p99 at a
# sustained rate, CPU per event, next to the raw pipe measured in the same run.
bench-audit: bootstrap kafka-up pg-up
    cargo build --release -p audit-service
    DATABASE_URL_PG="${DATABASE_URL_PG:-$(bash scripts/pg.sh url)}" cargo run --release -p todo-bench --bin bench_audit

# Live sync: 10,000 WatchTasks streams on one sync-service replica while 500 changes/s are committed (commit → watcher latency, messages/s, CPU, RSS).
bench-watch: bootstrap kafka-up
    cargo build --release -p sync-service
    cargo run --release -p todo-bench --bin bench_watch

# All benchmarks.
bench: bench-pipe bench-api bench-events bench-recurrence bench-reminders bench-audit bench-watch

# OCI images of every service with buildah, FROM scratch, nothing pulled; built from HEAD, tagged as overlays/dev says; prints sizes.
images:
    bash scripts/images.sh build

# Build the images, then run each one's binary inside its image (--help as uid 65532); check user and labels.
# Part of `just test`: ~35 s when the services did not change; a release build (~10 min on 2 cores) when they did.
images-test: images
    bash scripts/images.sh test

# What the running `just up` does: apps, sidecars, health, components, subscriptions and dead letters, outbox.
status:
    bash scripts/status.sh

# Dead letters of the running `just up` (admin `DLQ_ADMIN`, default admin): just dlq list ['{"topic": "task-events"}'] | show ID | replay ID | discard ID.
dlq action="list" arg="":
    bash scripts/dlq.sh {{action}} '{{arg}}'

# Stop everything this project started in the background.
down: kafka-down pg-down
