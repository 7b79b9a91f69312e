//! ApiVersions, FindCoordinator and DescribeCluster.

use std::sync::Arc;

use protocol::kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use protocol::kafka_protocol::messages::describe_cluster_response::{DescribeClusterBroker, DescribeClusterResponse};
use protocol::kafka_protocol::messages::BrokerId;

use super::metadata::AUTHORIZED_OPERATIONS_OMITTED;
use super::str_bytes;
use crate::node::Node;

/// The ApiVersions response: every served API with its advertised range.
pub(crate) fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        protocol::versions::advertised()
            .into_iter()
            .map(|(api_key, min, max)| {
                ApiVersion::default().with_api_key(api_key as i16).with_min_version(min).with_max_version(max)
            })
            .collect(),
    )
}

/// DescribeCluster: the registered brokers.
pub(crate) fn describe_cluster(node: &Arc<Node>) -> DescribeClusterResponse {
    let image = node.image();
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(node.cluster_id.clone()))
        .with_controller_id(BrokerId(node.controller_id()))
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        .with_brokers(
            image
                .unfenced_brokers()
                .map(|broker| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(broker.broker_id.0))
                        .with_host(str_bytes(broker.host.clone()))
                        .with_port(i32::from(broker.port))
                        .with_rack(broker.rack.clone().map(str_bytes))
                })
                .collect(),
        )
}
