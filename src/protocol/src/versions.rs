//! Which API versions weir advertises and which it decodes.
//!
//! Ranges follow `reference/kafka-api-versions.md`. Two rules shape them:
//!
//! * librdkafka before 2.11.1 (Debian's 2.0.2) enables features only when the advertised range
//!   contains exact versions: compression needs Produce to contain 0 and coordinator lookup
//!   needs FindCoordinator to contain 0. So Produce is advertised from 0 although weir (like
//!   Kafka 4, KAFKA-18659) decodes only v3 and later, the first with record batches. A Produce
//!   v0-v2 request gets its connection closed, as Kafka 4 does; no client that negotiates sends
//!   one.
//! * The decodable floor is what the `kafka-protocol` crate (Kafka 4.1 schemas) can decode,
//!   never below it, and the maximum is the highest version whose semantics weir implements
//!   (Fetch stops at 12: v13 and later use topic ids in fetch sessions).

use std::ops::RangeInclusive;

use kafka_protocol::messages::ApiKey;

/// One served API: what is advertised in ApiVersions and what is decoded.
#[derive(Debug, Clone, Copy)]
pub struct ApiRange {
    /// The API.
    pub api_key: ApiKey,
    /// Lowest version advertised.
    pub advertised_min: i16,
    /// Lowest version decoded (at or above `advertised_min`).
    pub decodable_min: i16,
    /// Highest version advertised and decoded.
    pub max: i16,
}

const fn api(api_key: ApiKey, advertised_min: i16, decodable_min: i16, max: i16) -> ApiRange {
    ApiRange { api_key, advertised_min, decodable_min, max }
}

/// Every API the broker serves.
pub const SUPPORTED: &[ApiRange] = &[
    api(ApiKey::Produce, 0, 3, 11),
    api(ApiKey::Fetch, 4, 4, 12),
    api(ApiKey::ListOffsets, 1, 1, 8),
    api(ApiKey::Metadata, 0, 0, 12),
    api(ApiKey::FindCoordinator, 0, 0, 4),
    api(ApiKey::ApiVersions, 0, 0, 4),
    api(ApiKey::CreateTopics, 2, 2, 7),
    api(ApiKey::DeleteTopics, 1, 1, 6),
    api(ApiKey::DeleteRecords, 0, 0, 2),
    api(ApiKey::InitProducerId, 0, 0, 4),
    api(ApiKey::DescribeConfigs, 1, 1, 4),
    api(ApiKey::AlterConfigs, 0, 0, 2),
    api(ApiKey::CreatePartitions, 0, 0, 3),
    api(ApiKey::IncrementalAlterConfigs, 0, 0, 1),
    api(ApiKey::DescribeCluster, 0, 0, 1),
    api(ApiKey::ElectLeaders, 0, 0, 2),
    api(ApiKey::AlterPartitionReassignments, 0, 0, 0),
    api(ApiKey::ListPartitionReassignments, 0, 0, 0),
    api(ApiKey::JoinGroup, 0, 0, 9),
    api(ApiKey::SyncGroup, 0, 0, 5),
    api(ApiKey::Heartbeat, 0, 0, 4),
    api(ApiKey::LeaveGroup, 0, 0, 5),
    api(ApiKey::OffsetCommit, 2, 2, 9),
    api(ApiKey::OffsetFetch, 1, 1, 9),
    api(ApiKey::ListGroups, 0, 0, 5),
    api(ApiKey::DescribeGroups, 0, 0, 5),
    api(ApiKey::DeleteGroups, 0, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0, 0),
];

/// The decodable version range of an API, or `None` if weir does not serve it.
pub fn decodable(api_key: ApiKey) -> Option<RangeInclusive<i16>> {
    SUPPORTED.iter().find(|range| range.api_key == api_key).map(|range| range.decodable_min..=range.max)
}

/// The version range of an API as advertised, or `None`.
pub fn advertised_range(api_key: ApiKey) -> Option<RangeInclusive<i16>> {
    SUPPORTED.iter().find(|range| range.api_key == api_key).map(|range| range.advertised_min..=range.max)
}

/// `(key, min, max)` for the ApiVersions response.
pub fn advertised() -> Vec<(ApiKey, i16, i16)> {
    SUPPORTED.iter().map(|range| (range.api_key, range.advertised_min, range.max)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_range_is_within_what_kafka_protocol_decodes() {
        for range in SUPPORTED {
            let valid = range.api_key.valid_versions();
            assert!(range.advertised_min <= range.decodable_min, "{:?}", range.api_key);
            assert!(range.decodable_min >= valid.min, "{:?} decodes below the crate's floor", range.api_key);
            assert!(range.max <= valid.max, "{:?} advertises above the crate's max", range.api_key);
        }
    }

    #[test]
    fn librdkafka_2_0_feature_gates_are_satisfied() {
        let contains = |key, version| advertised_range(key).is_some_and(|range| range.contains(&version));
        // MsgVer2, ZSTD, coordinator lookup and the compression writer's [0,0] probe.
        assert!(contains(ApiKey::Produce, 3) && contains(ApiKey::Fetch, 4));
        assert!(contains(ApiKey::Produce, 7) && contains(ApiKey::Fetch, 10));
        assert!(contains(ApiKey::FindCoordinator, 0));
        assert!(contains(ApiKey::Produce, 0));
    }

    #[test]
    fn java_4_floors_are_honoured() {
        for (key, floor) in [
            (ApiKey::Produce, 3),
            (ApiKey::Fetch, 4),
            (ApiKey::ListOffsets, 1),
            (ApiKey::CreateTopics, 2),
            (ApiKey::DeleteTopics, 1),
            (ApiKey::DescribeConfigs, 1),
        ] {
            let range = advertised_range(key).expect("served");
            assert!(*range.end() >= floor, "{key:?} max below the Java floor");
            assert!(decodable(key).expect("served").contains(&floor.max(*range.start())));
        }
    }
}
