//! weir's black-box tests. The suite itself is the `blackbox` integration-test binary
//! (`src/main.rs`): it starts the real `weir` binary on loopback and drives it with the native
//! client, kcat (librdkafka), confluent-kafka-python, kafka-python, raw protocol frames and
//! weir's own CLI. This library target is empty; it exists so the package has a crate root.
//!
//! Run with `cargo build -p weir-server && cargo test -p weir-tests`.
