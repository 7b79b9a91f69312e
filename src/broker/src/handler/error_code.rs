//! The one place where crate errors become Kafka error codes.

use protocol::ResponseError;
use storage::StorageError;

use crate::error::BrokerError;

/// The Kafka error code for a broker error.
pub(crate) fn error_code(error: &BrokerError) -> i16 {
    let code = match error {
        BrokerError::Storage(storage) => return storage_error_code(storage),
        BrokerError::Replication(error) => return error.error_code(),
        BrokerError::MetadataApply(metadata::image::ApplyError::TopicExists { .. }) => {
            ResponseError::TopicAlreadyExists
        }
        BrokerError::MetadataApply(_) => ResponseError::UnknownTopicOrPartition,
        BrokerError::Op(error) => return op_error_code(error).code(),
        BrokerError::Controller(controller::ControllerError::Op(error)) => return op_error_code(error).code(),
        BrokerError::Controller(controller::ControllerError::Invalid(_)) => ResponseError::InvalidRequest,
        // Forwarding failed or its outcome is unknown: a retriable timeout, as Kafka's
        // forwarding reports it.
        BrokerError::Controller(_) | BrokerError::ApplyTimeout { .. } => ResponseError::RequestTimedOut,
        BrokerError::MetadataDecode(_) | BrokerError::DataDir { .. } | BrokerError::Io { .. } => {
            ResponseError::KafkaStorageError
        }
    };
    code.code()
}

/// The Kafka error for a metadata operation that does not fit.
pub(crate) fn op_error_code(error: &metadata::ops::OpError) -> ResponseError {
    use metadata::ops::OpError;
    match error {
        OpError::TopicExists { .. } => ResponseError::TopicAlreadyExists,
        OpError::UnknownTopic => ResponseError::UnknownTopicOrPartition,
        OpError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        OpError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        OpError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        OpError::StaleBrokerEpoch { .. } => ResponseError::StaleBrokerEpoch,
        OpError::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
        OpError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
        OpError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
        OpError::InvalidUpdateVersion { .. } => ResponseError::InvalidUpdateVersion,
        OpError::IneligibleReplica(_) => ResponseError::IneligibleReplica,
        OpError::InvalidIsr(_) => ResponseError::InvalidRequest,
        OpError::NoReassignmentInProgress => ResponseError::NoReassignmentInProgress,
        OpError::TooManyRecords { .. } => ResponseError::PolicyViolation,
        OpError::Apply(_) => ResponseError::UnknownTopicOrPartition,
    }
}

/// The Kafka error code for a storage error. A full disk is `KAFKA_STORAGE_ERROR`, which
/// clients retry, so producers resume by themselves once space returns.
pub(crate) fn storage_error_code(error: &StorageError) -> i16 {
    let code = match error {
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::InvalidBatch { .. } => ResponseError::CorruptMessage,
        StorageError::ProducerSequence { source } => return source.error_code(),
        _ => ResponseError::KafkaStorageError,
    };
    code.code()
}

/// The outcome of one item (a partition) of a request whose valid items were committed as one
/// metadata change: an item that passed its own checks takes the commit's failure, if any.
pub(crate) fn with_commit(
    committed: &Result<(), BrokerError>,
    outcome: Result<(), (ResponseError, String)>,
) -> Result<(), (ResponseError, String)> {
    match (committed, outcome) {
        (Err(error), Ok(())) => Err((
            ResponseError::try_from_code(error_code(error)).unwrap_or(ResponseError::UnknownServerError),
            error.to_string(),
        )),
        (_, outcome) => outcome,
    }
}
