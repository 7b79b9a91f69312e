//! InitProducerId: hands out producer ids for idempotent producers.
//!
//! Ids come from blocks recorded in the metadata log, so they are never reused, even across
//! restarts. A producer that asks again with its id and epoch (KIP-360) gets the same id with
//! the epoch bumped; one whose epoch is exhausted gets a fresh id. Transactions are not served
//! yet: a request with a transactional id is refused with `TRANSACTIONAL_ID_AUTHORIZATION_FAILED`.
//!
//! The ids are used by each partition's producer-state table (sequence checks and
//! deduplication; `replication::producer_state`).

use std::sync::Arc;

use protocol::kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use protocol::kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use protocol::kafka_protocol::messages::ProducerId;
use protocol::ResponseError;

use crate::handler::error_code;
use crate::node::Node;

/// Handles InitProducerId.
pub(crate) async fn handle(node: &Arc<Node>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let refused = |error: i16| {
        InitProducerIdResponse::default()
            .with_error_code(error)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        return refused(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    let (current_id, current_epoch) = (request.producer_id.0, request.producer_epoch);
    if current_id >= 0 && current_epoch >= 0 && current_epoch < i16::MAX - 1 {
        return InitProducerIdResponse::default()
            .with_producer_id(ProducerId(current_id))
            .with_producer_epoch(current_epoch + 1);
    }
    match node.allocate_producer_id().await {
        Ok(producer_id) => {
            InitProducerIdResponse::default().with_producer_id(ProducerId(producer_id)).with_producer_epoch(0)
        }
        Err(error) => refused(error_code(&error)),
    }
}
