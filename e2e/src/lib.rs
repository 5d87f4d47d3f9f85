//! End-to-end tests across services live in `tests/`; this library is empty.
