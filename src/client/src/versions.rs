//! Which version of each API the client sends, and the ApiVersions handshake's parsing.
//!
//! The client sends `min(client max, broker max)` and fails with
//! [`ClientError::UnsupportedVersion`] if that falls below either side's minimum, as the
//! Java client does. The client's floor is what the `kafka-protocol` crate can encode; its
//! ceiling is [`CLIENT_MAX_VERSIONS`] for the APIs this crate implements, and the crate's own
//! maximum for any other API sent through [`crate::Client::send`].

use std::collections::BTreeMap;

use bytes::Bytes;
use protocol::frame::{decode_response, FrameError};
use protocol::kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseKind};
use protocol::ResponseError;

use crate::error::ClientError;

/// The highest version this client sends for each API it implements.
pub const CLIENT_MAX_VERSIONS: &[(ApiKey, i16)] = &[
    (ApiKey::Produce, 11),
    (ApiKey::Fetch, 12),
    (ApiKey::ListOffsets, 8),
    (ApiKey::Metadata, 12),
    (ApiKey::ApiVersions, 3),
    (ApiKey::CreateTopics, 7),
    (ApiKey::DeleteTopics, 6),
    (ApiKey::DeleteRecords, 2),
    (ApiKey::DescribeConfigs, 4),
    (ApiKey::AlterConfigs, 2),
    (ApiKey::IncrementalAlterConfigs, 1),
    (ApiKey::CreatePartitions, 3),
    (ApiKey::DescribeCluster, 1),
    // v3: one key per request (v4 batches keys in another field).
    (ApiKey::FindCoordinator, 3),
    // Group administration: the single-group OffsetFetch layout, and no topic ids.
    (ApiKey::OffsetFetch, 7),
    (ApiKey::OffsetCommit, 8),
    (ApiKey::ListGroups, 5),
    (ApiKey::DescribeGroups, 5),
    (ApiKey::DeleteGroups, 2),
    (ApiKey::InitProducerId, 4),
];

/// The version the handshake opens with (KIP-511's first flexible ApiVersions).
pub const API_VERSIONS_HANDSHAKE_VERSION: i16 = 3;

/// The client's own `(min, max)` for an API.
pub fn client_range(api_key: ApiKey) -> (i16, i16) {
    let valid = api_key.valid_versions();
    let max = CLIENT_MAX_VERSIONS.iter().find(|(key, _)| *key == api_key).map_or(valid.max, |(_, max)| *max);
    (valid.min, max)
}

/// The version ranges one broker advertised in its ApiVersions response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerApiVersions {
    /// `api_key -> (min, max)`; an API missing here is not served by the broker.
    ranges: BTreeMap<i16, (i16, i16)>,
}

impl BrokerApiVersions {
    /// Collects the ranges of an ApiVersions response (any version, including the v0 fallback).
    pub fn from_response(response: &ApiVersionsResponse) -> Self {
        let ranges = response.api_keys.iter().map(|api| (api.api_key, (api.min_version, api.max_version))).collect();
        BrokerApiVersions { ranges }
    }

    /// The broker's `(min, max)` for an API, if it serves it.
    pub fn range(&self, api_key: ApiKey) -> Option<(i16, i16)> {
        self.ranges.get(&(api_key as i16)).copied()
    }

    /// The version to send: the highest both sides support.
    ///
    /// # Errors
    /// `UnsupportedApi` if the broker does not list the API (with an empty address; the
    /// connection fills it in), `UnsupportedVersion` if the ranges do not overlap.
    pub fn choose(&self, api_key: ApiKey) -> Result<i16, ClientError> {
        let Some((broker_min, broker_max)) = self.range(api_key) else {
            return Err(ClientError::UnsupportedApi { address: String::new(), api_key });
        };
        let (client_min, client_max) = client_range(api_key);
        let version = client_max.min(broker_max);
        if version < client_min.max(broker_min) {
            return Err(ClientError::UnsupportedVersion { api_key, client_min, client_max, broker_min, broker_max });
        }
        Ok(version)
    }
}

/// Decodes an ApiVersions response frame (without the length prefix) to a request sent at
/// `version`. A broker that does not serve `version` answers UNSUPPORTED_VERSION in the v0
/// format (KIP-511), which the flexible decoder would misread, so the error code is peeked
/// first (the header is always v0: just the correlation id) and such a frame is decoded as v0.
///
/// # Errors
/// `MalformedResponse` if the frame decodes at neither version.
pub fn decode_api_versions_response(version: i16, frame: Bytes) -> Result<(i32, ApiVersionsResponse), FrameError> {
    let error_code = frame.get(4..6).map(|bytes| i16::from_be_bytes([bytes[0], bytes[1]]));
    let unsupported = Some(ResponseError::UnsupportedVersion.code());
    let decode_version = if version > 0 && error_code == unsupported { 0 } else { version };
    match decode_response(ApiKey::ApiVersions, decode_version, frame)? {
        (correlation_id, ResponseKind::ApiVersions(response)) => Ok((correlation_id, response)),
        _ => Err(FrameError::MalformedResponse {
            api_key: ApiKey::ApiVersions,
            api_version: decode_version,
            reason: "decoded to another response kind".to_owned(),
        }),
    }
}

/// The ApiVersions version to retry with after an UNSUPPORTED_VERSION answer: the highest
/// one both sides support, or 0 if the broker did not list ApiVersions at all.
pub fn api_versions_retry_version(response: &ApiVersionsResponse) -> i16 {
    let (_, client_max) = client_range(ApiKey::ApiVersions);
    BrokerApiVersions::from_response(response)
        .range(ApiKey::ApiVersions)
        .map_or(0, |(_, broker_max)| broker_max.min(client_max).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Buf, BufMut, BytesMut};
    use protocol::frame::encode_api_versions_fallback;
    use protocol::kafka_protocol::messages::api_versions_response::ApiVersion;

    fn broker(ranges: &[(ApiKey, i16, i16)]) -> BrokerApiVersions {
        let response = ApiVersionsResponse::default().with_api_keys(
            ranges
                .iter()
                .map(|(key, min, max)| {
                    ApiVersion::default().with_api_key(*key as i16).with_min_version(*min).with_max_version(*max)
                })
                .collect(),
        );
        BrokerApiVersions::from_response(&response)
    }

    #[test]
    fn the_version_is_the_lower_of_the_two_maxima() {
        let versions = broker(&[(ApiKey::Produce, 0, 13), (ApiKey::Fetch, 4, 7), (ApiKey::Metadata, 0, 12)]);
        assert_eq!(versions.choose(ApiKey::Produce).expect("overlap"), 11);
        assert_eq!(versions.choose(ApiKey::Fetch).expect("overlap"), 7);
        assert_eq!(versions.choose(ApiKey::Metadata).expect("overlap"), 12);
    }

    #[test]
    fn disjoint_ranges_and_missing_apis_are_errors() {
        // The crate cannot encode Produce below v3; a broker serving only v0..=2 is unusable.
        let versions = broker(&[(ApiKey::Produce, 0, 2), (ApiKey::Fetch, 13, 18)]);
        assert!(matches!(
            versions.choose(ApiKey::Produce),
            Err(ClientError::UnsupportedVersion { client_min: 3, broker_max: 2, .. })
        ));
        assert!(matches!(versions.choose(ApiKey::Fetch), Err(ClientError::UnsupportedVersion { .. })));
        assert!(matches!(versions.choose(ApiKey::CreateTopics), Err(ClientError::UnsupportedApi { .. })));
    }

    #[test]
    fn apis_without_a_client_cap_use_the_crate_range() {
        assert_eq!(client_range(ApiKey::JoinGroup), (0, 9));
        assert_eq!(client_range(ApiKey::Produce), (3, 11));
        for (api_key, max) in CLIENT_MAX_VERSIONS {
            assert!(*max <= api_key.valid_versions().max, "{api_key:?} above the crate's max");
        }
    }

    #[test]
    fn an_unsupported_version_answer_is_parsed_as_v0() {
        let mut frame = encode_api_versions_fallback(9, ResponseError::UnsupportedVersion.code());
        frame.advance(4);
        let (correlation_id, response) = decode_api_versions_response(3, frame.freeze()).expect("v0 fallback decodes");
        assert_eq!(correlation_id, 9);
        assert_eq!(response.error_code, 35);
        let versions = BrokerApiVersions::from_response(&response);
        assert_eq!(versions.range(ApiKey::Produce), Some((0, 11)));
        assert_eq!(api_versions_retry_version(&response), 3);
    }

    #[test]
    fn the_retry_version_is_capped_by_the_broker_and_defaults_to_zero() {
        // A hand-built v0 error body listing ApiVersions 0..=2 only.
        let mut body = BytesMut::new();
        body.put_i32(4); // correlation id
        body.put_i16(35);
        body.put_i32(1);
        body.put_i16(ApiKey::ApiVersions as i16);
        body.put_i16(0);
        body.put_i16(2);
        let (_, response) = decode_api_versions_response(3, body.freeze()).expect("decodes");
        assert_eq!(api_versions_retry_version(&response), 2);
        assert_eq!(api_versions_retry_version(&ApiVersionsResponse::default()), 0);
    }

    #[test]
    fn a_successful_v3_answer_decodes_as_v3() {
        let response = ApiVersionsResponse::default()
            .with_api_keys(vec![ApiVersion::default().with_api_key(3).with_min_version(0).with_max_version(12)]);
        let frame = protocol::frame::encode_response(ApiKey::ApiVersions, 3, 1, &ResponseKind::ApiVersions(response))
            .expect("encodes");
        let mut frame = frame;
        frame.advance(4);
        let (_, decoded) = decode_api_versions_response(3, frame.freeze()).expect("decodes");
        assert_eq!(BrokerApiVersions::from_response(&decoded).range(ApiKey::Metadata), Some((0, 12)));
    }
}
