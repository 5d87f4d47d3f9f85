//! What the benchmark binaries (`src/bin/bench_*.rs`) share beyond `todo_harness::bench`.
