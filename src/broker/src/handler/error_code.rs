//! The one place where crate errors become Kafka error codes.

use protocol::ResponseError;
use storage::StorageError;

use crate::error::BrokerError;

/// The Kafka error code for a broker error.
pub(crate) fn error_code(error: &BrokerError) -> i16 {
    let code = match error {
        BrokerError::Storage(storage) => return storage_error_code(storage),
        BrokerError::MetadataApply(metadata::image::ApplyError::TopicExists { .. }) => {
            ResponseError::TopicAlreadyExists
        }
        BrokerError::MetadataApply(_) => ResponseError::UnknownTopicOrPartition,
        BrokerError::MetadataDecode(_) | BrokerError::DataDir { .. } | BrokerError::Io { .. } => {
            ResponseError::KafkaStorageError
        }
    };
    code.code()
}

/// The Kafka error code for a storage error. A full disk is `KAFKA_STORAGE_ERROR`, which
/// clients retry, so producers resume by themselves once space returns.
pub(crate) fn storage_error_code(error: &StorageError) -> i16 {
    let code = match error {
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::InvalidBatch { .. } => ResponseError::CorruptMessage,
        _ => ResponseError::KafkaStorageError,
    };
    code.code()
}
