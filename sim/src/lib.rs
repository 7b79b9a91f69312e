//! weir's deterministic simulator.
//!
//! The real node code (`server::run_node`, the broker, the storage engine) runs inside a
//! madsim runtime on simulated hosts, on a simulated disk ([`disk::SimDisk`]) and with
//! per-node wall clocks ([`clock::SimClock`]); weir's native client is the workload. A
//! nemesis crashes, pauses and partitions nodes, fills disks and steps clocks; the history of
//! every client operation is checked afterwards ([`checker`]). A run is determined by
//! (scenario, seed, commit) and leaves an event trace whose hash must repeat ([`trace`]).
//!
//! Build and run through `sim/run` (which sets `RUSTFLAGS="--cfg madsim"` and its own target
//! directory); without `--cfg madsim` this crate compiles, but [`scenario::run`] only reports
//! that the simulator is not compiled in.

pub mod checker;
pub mod clock;
pub mod disk;
pub mod group_check;
pub mod image_check;
pub mod outcome;
pub mod quorum_check;
pub mod raft_fs;
pub mod replica_check;
pub mod scenario;
pub mod trace;
