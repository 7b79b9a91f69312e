//! The broker's operating errors.

use std::path::PathBuf;

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The replication state machine refused (not the leader, not enough replicas, ...).
    #[error(transparent)]
    Replication(replication::ReplicationError),
    /// A storage operation failed.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// A metadata record did not fit the image (a bug in the caller, or a corrupt log).
    #[error("metadata record refused: {0}")]
    MetadataApply(#[from] metadata::image::ApplyError),
    /// The metadata log holds a record weir cannot decode.
    #[error("metadata log is corrupt: {0}")]
    MetadataDecode(#[from] metadata::record::DecodeError),
    /// The metadata change does not fit the metadata.
    #[error(transparent)]
    Op(#[from] metadata::ops::OpError),
    /// The controller quorum could not commit the change.
    #[error(transparent)]
    Controller(#[from] controller::ControllerError),
    /// The change committed, but this broker's image did not apply it in time.
    #[error("metadata change at index {index} committed but not yet applied here")]
    ApplyTimeout {
        /// The change's index.
        index: u64,
    },
    /// The data directory belongs to another node or is unreadable.
    #[error("data directory {path} is unusable: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file operation outside the partition logs failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was attempted.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}
