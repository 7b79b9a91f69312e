//! One handler per Kafka API, and the dispatch that picks it.

mod cluster;
mod configs;
mod error_code;
mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod produce;
mod reassignments;
mod records;
mod topics;

use std::sync::Arc;

use protocol::frame::Request;
use protocol::kafka_protocol::messages::{RequestKind, ResponseKind};
use protocol::kafka_protocol::protocol::StrBytes;

use crate::connection::Reply;
use crate::node::Node;

pub(crate) use error_code::error_code;

/// Routes a decoded request to its handler. `peer` is the client's address.
pub(crate) async fn dispatch(node: &Arc<Node>, request: Request, peer: &str) -> Reply {
    let version = request.api_version;
    let client_id = request.header.client_id.as_ref().map(ToString::to_string).unwrap_or_default();
    match request.body {
        RequestKind::ApiVersions(_) => Reply::Now(ResponseKind::ApiVersions(cluster::api_versions())),
        RequestKind::Metadata(body) => Reply::Now(ResponseKind::Metadata(metadata::handle(node, body, version).await)),
        RequestKind::Produce(body) => produce::handle(node, body).await,
        RequestKind::Fetch(body) => fetch::handle(node, body),
        RequestKind::ListOffsets(body) => {
            Reply::Now(ResponseKind::ListOffsets(list_offsets::handle(node, body, version).await))
        }
        RequestKind::FindCoordinator(body) => {
            Reply::Now(ResponseKind::FindCoordinator(groups::find_coordinator(node, body, version).await))
        }
        RequestKind::JoinGroup(body) => {
            // Kafka shows the client's address with a leading slash.
            let host = format!("/{}", peer.rsplit_once(':').map_or(peer, |(host, _)| host));
            groups::join_group(node, body, version, (&client_id, &host))
        }
        RequestKind::SyncGroup(body) => groups::sync_group(node, body, version),
        RequestKind::Heartbeat(body) => Reply::Now(ResponseKind::Heartbeat(groups::heartbeat(node, body).await)),
        RequestKind::LeaveGroup(body) => {
            Reply::Now(ResponseKind::LeaveGroup(groups::leave_group(node, body, version).await))
        }
        RequestKind::OffsetCommit(body) => {
            Reply::Now(ResponseKind::OffsetCommit(groups::offset_commit(node, body).await))
        }
        RequestKind::OffsetFetch(body) => {
            Reply::Now(ResponseKind::OffsetFetch(groups::offset_fetch(node, body, version).await))
        }
        RequestKind::ListGroups(body) => {
            Reply::Now(ResponseKind::ListGroups(groups::list_groups(node, body, version).await))
        }
        RequestKind::DescribeGroups(body) => {
            Reply::Now(ResponseKind::DescribeGroups(groups::describe_groups(node, body, version).await))
        }
        RequestKind::DeleteGroups(body) => {
            Reply::Now(ResponseKind::DeleteGroups(groups::delete_groups(node, body).await))
        }
        RequestKind::OffsetDelete(body) => {
            Reply::Now(ResponseKind::OffsetDelete(groups::offset_delete(node, body).await))
        }
        RequestKind::DescribeCluster(_) => Reply::Now(ResponseKind::DescribeCluster(cluster::describe_cluster(node))),
        RequestKind::CreateTopics(body) => {
            Reply::Now(ResponseKind::CreateTopics(topics::create_topics(node, body, version).await))
        }
        RequestKind::DeleteTopics(body) => {
            Reply::Now(ResponseKind::DeleteTopics(topics::delete_topics(node, body).await))
        }
        RequestKind::ElectLeaders(body) => {
            Reply::Now(ResponseKind::ElectLeaders(topics::elect_leaders(node, body).await))
        }
        RequestKind::CreatePartitions(body) => {
            Reply::Now(ResponseKind::CreatePartitions(topics::create_partitions(node, body).await))
        }
        RequestKind::DescribeConfigs(body) => {
            Reply::Now(ResponseKind::DescribeConfigs(configs::describe_configs(node, body)))
        }
        RequestKind::AlterConfigs(body) => {
            Reply::Now(ResponseKind::AlterConfigs(configs::alter_configs(node, body).await))
        }
        RequestKind::IncrementalAlterConfigs(body) => {
            Reply::Now(ResponseKind::IncrementalAlterConfigs(configs::incremental_alter_configs(node, body).await))
        }
        RequestKind::InitProducerId(body) => {
            Reply::Now(ResponseKind::InitProducerId(init_producer_id::handle(node, body).await))
        }
        RequestKind::AlterPartitionReassignments(body) => {
            Reply::Now(ResponseKind::AlterPartitionReassignments(reassignments::alter(node, body).await))
        }
        RequestKind::ListPartitionReassignments(body) => {
            Reply::Now(ResponseKind::ListPartitionReassignments(reassignments::list(node, body)))
        }
        RequestKind::DeleteRecords(body) => {
            Reply::Now(ResponseKind::DeleteRecords(records::delete_records(node, body).await))
        }
        other => {
            // versions::SUPPORTED lists only the APIs above, so the frame decoder refuses any
            // other key before dispatch.
            unreachable!("request kind {other:?} passed version gating but has no handler")
        }
    }
}

/// A `StrBytes` from a string.
pub(crate) fn str_bytes(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}
