//! weir's controller: a Raft quorum (raft-rs) whose log is the cluster metadata log, kept in
//! raft-engine.
//!
//! # Design
//!
//! KRaft's shape with raft-rs underneath. One, three or five controllers are the voters of one
//! Raft group; the leader is the *active controller*. Every metadata change is a batch of
//! [`metadata::record::MetadataRecord`]s proposed to the leader and acted on only once it is
//! committed and applied: [`Quorum::propose`] resolves after this controller applied the entry
//! (KIP-631's rule that the active controller never makes future state visible).
//!
//! * [`quorum`]: the driver task owning raft-rs's `RawNode`; it validates proposals against the
//!   image with every pending proposal applied, persists before it sends what depends on the
//!   write, applies committed entries in order, and snapshots the image every
//!   `snapshot_interval_entries` so the log stays bounded.
//! * [`memlog`]: the in-memory log raft-rs reads (`raft::Storage`), mirroring the store.
//! * `storage::raft_log`: raft-engine on its own thread, the durable copy.
//! * [`transport`]: raft-rs messages between controllers over TCP.
//!
//! Randomness: raft-rs draws election timeouts from an RNG the simulator cannot seed, so the
//! driver overwrites the draw from the rt RNG after every role, term or leader change.
//!
//! # Invariants
//!
//! * Entries reach raft-engine (fsynced) before any message that depends on them is sent and
//!   before they count towards a commit.
//! * The image is a fold of committed entries in index order, from a snapshot; a snapshot is
//!   taken only at an applied index.
//! * A proposal is answered `Ok(index)` only if the entry at `index` carries the proposal's
//!   term (it is the proposal, not another leader's entry).

pub mod error;
mod memlog;
pub mod quorum;
pub mod rpc;
pub mod service;
pub mod transport;

pub use error::ControllerError;
pub use quorum::{AppliedEntry, ApplyObserver, CommittedImage, Quorum, QuorumConfig, QuorumStatus, Role};
