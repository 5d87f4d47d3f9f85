//! What the benchmark binaries (`src/bin/bench_*.rs`) share: figures and report lines, and
//! the recording consumer that measures delivery latency. Machine facts, CPU samples and
//! fresh PostgreSQL databases come from `todo_harness` (the tests use them too).

pub mod api;
pub mod db;
pub mod pipe;
pub mod report;
