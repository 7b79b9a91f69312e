//! weir's black-box suite: the real `weir` binary on loopback, driven by real clients.
//!
//! # Design
//!
//! Every test starts its own node ([`harness::WeirProcess`]) on a free port and a temporary
//! data directory, so tests run in parallel and never share state. Clients are the native
//! client (`weir-client`), kcat (librdkafka), confluent-kafka-python and kafka-python (scripts
//! under `tests/python/`), hand-built protocol frames, and the `weir` CLI. Tests assert on
//! content (keys, values, headers, offsets, error codes), never on timing.
//!
//! # Requirements
//!
//! * the binary: `cargo build -p weir-server` (or `WEIR_BIN=/path/to/weir`);
//! * `kcat` on `PATH` (`apt-get install kcat`);
//! * Python with confluent-kafka and kafka-python at `<repo>/.venv/bin/python` (or
//!   `WEIR_PYTHON`).
//!
//! A missing requirement fails the test that needs it, with the command to install it.
//!
//! Layout: `harness.rs` (processes and external tools), `tester.rs` (native-client helpers),
//! then one module per area: `clients`, `offsets`, `configs`, `durability`, `bad_input`,
//! `disk_full`, `cli`, `dev_cluster`, `roles`, `replication`, `groups`.

mod bad_input;
mod cli;
mod clients;
mod compaction;
mod configs;
mod dev_cluster;
mod disk_full;
mod durability;
mod groups;
mod harness;
mod offsets;
mod replication;
mod roles;
mod tester;
