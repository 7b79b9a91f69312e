//! How a failed client operation is classified in a history: `Fail` only when it certainly
//! did not happen, `Info` (indeterminate) otherwise. Shared by the simulator's workload and the
//! fault harness (`jepsen/`).

use client::{ClientError, ProduceError};
use protocol::ResponseError;

use crate::checker::Outcome;

/// Whether a broker error code means the record certainly was not written.
pub fn classify_code(error: ResponseError) -> Outcome {
    match error {
        // The append happened (or may have) and only the wait for durability ended. A leader
        // that lost its leadership while an acks=all write waited answers NOT_LEADER_OR_FOLLOWER
        // (as Kafka does), whether or not the write survives: indeterminate too.
        ResponseError::RequestTimedOut
        | ResponseError::NotLeaderOrFollower
        | ResponseError::NotEnoughReplicasAfterAppend
        | ResponseError::NetworkException
        | ResponseError::UnknownServerError => Outcome::Info,
        _ => Outcome::Fail,
    }
}

/// The outcome of an admin or consumer request that failed.
pub fn classify_client_error(error: &ClientError) -> Outcome {
    match error {
        ClientError::Broker { error, .. } => classify_code(*error),
        _ => Outcome::Info,
    }
}

/// The outcome of a send whose delivery failed.
pub fn classify_send_error(error: &ProduceError) -> Outcome {
    match error {
        ProduceError::Broker { error, .. } => classify_code(*error),
        ProduceError::RetriesExhausted { last_error, .. } => classify_client_error(last_error),
        ProduceError::Client(error) => classify_client_error(error),
        _ => Outcome::Info,
    }
}
