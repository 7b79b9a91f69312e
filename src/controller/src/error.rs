//! The controller's errors.

use storage::StorageError;

/// What can go wrong in the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// This controller is not the active controller (or not yet ready to act as it).
    #[error("not the active controller (leader: {leader_id:?})")]
    NotController {
        /// The leader this controller knows of.
        leader_id: Option<u64>,
    },
    /// The proposal does not fit the metadata image.
    #[error("invalid metadata change: {0}")]
    Invalid(String),
    /// The operation does not fit the metadata image.
    #[error(transparent)]
    Op(#[from] metadata::ops::OpError),
    /// Leadership changed before the proposal's outcome was known: it may or may not commit.
    #[error("leadership changed before the change was known to commit")]
    Indeterminate,
    /// No controller could be reached as the active one (from a client's side).
    #[error("the controller quorum is unavailable: {0}")]
    Unavailable(String),
    /// The controller is shutting down.
    #[error("the controller stopped")]
    Stopped,
    /// The quorum configuration is unusable.
    #[error("invalid controller quorum config: {0}")]
    InvalidConfig(String),
    /// A stored or received snapshot does not load.
    #[error(transparent)]
    Snapshot(#[from] metadata::image::SnapshotError),
    /// The Raft log store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
