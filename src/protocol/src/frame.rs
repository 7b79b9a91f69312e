//! Size-prefixed Kafka frames: request decoding for the broker, request encoding and response
//! decoding for the client.
//!
//! A frame is a big-endian `i32` length followed by that many bytes. Every request starts with
//! `api_key: i16, api_version: i16, correlation_id: i32`; the rest of the header and the body
//! depend on the key and version. The broker checks the length against
//! `socket.request.max.bytes` before reading the body, and checks key and version against
//! [`crate::versions`] before handing the bytes to the `kafka-protocol` decoder.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::versions;

/// Bytes of the frame length prefix.
pub const FRAME_LENGTH_BYTES: usize = 4;
/// Bytes every request header starts with: key, version, correlation id.
pub const REQUEST_HEADER_PREFIX_BYTES: usize = 8;

/// Why a request frame could not be decoded. The broker answers none of these with a response
/// body (Kafka closes the connection), except ApiVersions, which has a v0 fallback.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame is shorter than the fixed request-header prefix.
    #[error("request frame of {length} bytes is shorter than a request header")]
    TooShort {
        /// The frame length.
        length: usize,
    },
    /// The length prefix is negative or above the configured maximum.
    #[error("frame length {length} is outside 0..={max_bytes}")]
    InvalidLength {
        /// The announced length.
        length: i64,
        /// The configured maximum.
        max_bytes: usize,
    },
    /// An API key weir does not know.
    #[error("unknown API key {api_key}")]
    UnknownApiKey {
        /// The key sent.
        api_key: i16,
    },
    /// A known API at a version weir does not serve.
    #[error("API {api_key:?} version {api_version} is not supported")]
    UnsupportedVersion {
        /// The API.
        api_key: ApiKey,
        /// The version sent.
        api_version: i16,
        /// The correlation id, so ApiVersions can still be answered.
        correlation_id: i32,
    },
    /// The header or body does not decode at the announced version.
    #[error("malformed {api_key:?} v{api_version} request: {reason}")]
    Malformed {
        /// The API.
        api_key: ApiKey,
        /// The version sent.
        api_version: i16,
        /// What the decoder reported.
        reason: String,
    },
    /// A response could not be decoded (client side).
    #[error("malformed {api_key:?} v{api_version} response: {reason}")]
    MalformedResponse {
        /// The API.
        api_key: ApiKey,
        /// The version.
        api_version: i16,
        /// What the decoder reported.
        reason: String,
    },
    /// A message could not be encoded (a bug or an unencodable value for this version).
    #[error("cannot encode {api_key:?} v{api_version}: {reason}")]
    Encode {
        /// The API.
        api_key: ApiKey,
        /// The version.
        api_version: i16,
        /// What the encoder reported.
        reason: String,
    },
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    /// The API.
    pub api_key: ApiKey,
    /// The version the client chose.
    pub api_version: i16,
    /// The full request header (correlation id, client id).
    pub header: RequestHeader,
    /// The request body.
    pub body: RequestKind,
}

/// Checks a frame length prefix against the maximum.
///
/// # Errors
/// `InvalidLength` if negative or above `max_bytes`.
pub fn check_frame_length(length: i32, max_bytes: usize) -> Result<usize, FrameError> {
    match usize::try_from(length) {
        Ok(length) if length <= max_bytes => Ok(length),
        _ => Err(FrameError::InvalidLength { length: i64::from(length), max_bytes }),
    }
}

/// Reads key, version and correlation id from the start of a request frame (without the
/// length prefix).
///
/// # Errors
/// `TooShort` if the frame has fewer than 8 bytes.
pub fn peek_request_header(frame: &[u8]) -> Result<(i16, i16, i32), FrameError> {
    if frame.len() < REQUEST_HEADER_PREFIX_BYTES {
        return Err(FrameError::TooShort { length: frame.len() });
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Ok((api_key, api_version, correlation_id))
}

/// Decodes a request frame (without its length prefix) that the broker serves.
///
/// # Errors
/// Any [`FrameError`]; keys and versions outside [`versions::SUPPORTED`] are rejected before
/// the body is decoded.
pub fn decode_request(mut frame: Bytes) -> Result<Request, FrameError> {
    let (raw_key, api_version, correlation_id) = peek_request_header(&frame)?;
    let api_key = ApiKey::try_from(raw_key).map_err(|()| FrameError::UnknownApiKey { api_key: raw_key })?;
    let Some(range) = versions::decodable(api_key) else {
        return Err(FrameError::UnknownApiKey { api_key: raw_key });
    };
    if !range.contains(&api_version) {
        return Err(FrameError::UnsupportedVersion { api_key, api_version, correlation_id });
    }
    let malformed = |reason: String| FrameError::Malformed { api_key, api_version, reason };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(api_version))
        .map_err(|error| malformed(error.to_string()))?;
    let body = RequestKind::decode(api_key, &mut frame, api_version).map_err(|error| malformed(error.to_string()))?;
    Ok(Request { api_key, api_version, header, body })
}

/// Encodes a response with its length prefix.
///
/// # Errors
/// `Encode` if the body cannot be encoded at this version.
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<BytesMut, FrameError> {
    let encode_error = |error: anyhow::Error| FrameError::Encode { api_key, api_version, reason: error.to_string() };
    let mut buffer = BytesMut::with_capacity(256);
    buffer.put_i32(0);
    // ApiVersions responses always use header v0, even at flexible versions (KIP-511).
    let header_version = if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(api_version) };
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buffer, header_version)
        .map_err(encode_error)?;
    body.encode(&mut buffer, api_version).map_err(encode_error)?;
    let length = i32::try_from(buffer.len() - FRAME_LENGTH_BYTES).map_err(|_| FrameError::Encode {
        api_key,
        api_version,
        reason: "response larger than 2 GiB".to_owned(),
    })?;
    buffer[0..4].copy_from_slice(&length.to_be_bytes());
    Ok(buffer)
}

/// Encodes a request with its length prefix (client side).
///
/// # Errors
/// `Encode` if the body cannot be encoded at this version.
pub fn encode_request(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    client_id: &str,
    body: &RequestKind,
) -> Result<BytesMut, FrameError> {
    let encode_error = |error: anyhow::Error| FrameError::Encode { api_key, api_version, reason: error.to_string() };
    let mut buffer = BytesMut::with_capacity(256);
    buffer.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(api_version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_owned())))
        .encode(&mut buffer, api_key.request_header_version(api_version))
        .map_err(encode_error)?;
    body.encode(&mut buffer, api_version).map_err(encode_error)?;
    let length = i32::try_from(buffer.len() - FRAME_LENGTH_BYTES).map_err(|_| FrameError::Encode {
        api_key,
        api_version,
        reason: "request larger than 2 GiB".to_owned(),
    })?;
    buffer[0..4].copy_from_slice(&length.to_be_bytes());
    Ok(buffer)
}

/// Decodes a response frame (without its length prefix) for a request of `api_key` at
/// `api_version`, returning the correlation id and body (client side).
///
/// # Errors
/// `MalformedResponse` if it does not decode.
pub fn decode_response(api_key: ApiKey, api_version: i16, mut frame: Bytes) -> Result<(i32, ResponseKind), FrameError> {
    let malformed = |reason: String| FrameError::MalformedResponse { api_key, api_version, reason };
    let header_version = if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(api_version) };
    let header = ResponseHeader::decode(&mut frame, header_version).map_err(|error| malformed(error.to_string()))?;
    let body = ResponseKind::decode(api_key, &mut frame, api_version).map_err(|error| malformed(error.to_string()))?;
    Ok((header.correlation_id, body))
}

/// Encodes the ApiVersions error response in v0 format, which every client understands, listing
/// the versions weir serves (KIP-511: a client that sent an unsupported ApiVersions version
/// retries with the highest version it finds here).
pub fn encode_api_versions_fallback(correlation_id: i32, error_code: i16) -> BytesMut {
    let mut body = BytesMut::with_capacity(512);
    body.put_i32(correlation_id);
    body.put_i16(error_code);
    let advertised = versions::advertised();
    body.put_i32(advertised.len() as i32);
    for (api_key, min, max) in advertised {
        body.put_i16(api_key as i16);
        body.put_i16(min);
        body.put_i16(max);
    }
    let mut frame = BytesMut::with_capacity(body.len() + FRAME_LENGTH_BYTES);
    frame.put_i32(body.len() as i32);
    frame.put(body);
    frame
}

/// Reads the correlation id at the start of a response frame.
pub fn peek_correlation_id(frame: &[u8]) -> Option<i32> {
    let mut prefix = frame.get(0..4)?;
    Some(prefix.get_i32())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};

    fn strip_length(mut frame: BytesMut) -> Bytes {
        frame.advance(FRAME_LENGTH_BYTES);
        frame.freeze()
    }

    #[test]
    fn a_request_round_trips_through_encode_and_decode() {
        let body = RequestKind::Metadata(MetadataRequest::default().with_allow_auto_topic_creation(true));
        let frame = encode_request(ApiKey::Metadata, 12, 42, "test", &body).expect("encodes");
        let request = decode_request(strip_length(frame)).expect("decodes");
        assert_eq!(request.api_key, ApiKey::Metadata);
        assert_eq!(request.api_version, 12);
        assert_eq!(request.header.correlation_id, 42);
        assert!(matches!(request.body, RequestKind::Metadata(ref m) if m.allow_auto_topic_creation));
    }

    #[test]
    fn unknown_keys_and_versions_are_rejected_before_decoding() {
        let mut frame = BytesMut::new();
        frame.put_i16(9999);
        frame.put_i16(0);
        frame.put_i32(1);
        assert!(matches!(decode_request(frame.freeze()), Err(FrameError::UnknownApiKey { api_key: 9999 })));

        let body = RequestKind::ApiVersions(ApiVersionsRequest::default());
        let frame = encode_request(ApiKey::ApiVersions, 3, 7, "test", &body).expect("encodes");
        let mut raw = strip_length(frame).to_vec();
        raw[2..4].copy_from_slice(&99i16.to_be_bytes());
        match decode_request(Bytes::from(raw)) {
            Err(FrameError::UnsupportedVersion { correlation_id, api_version, .. }) => {
                assert_eq!((correlation_id, api_version), (7, 99));
            }
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }

    #[test]
    fn truncated_bodies_are_malformed_not_panics() {
        let body = RequestKind::Metadata(MetadataRequest::default());
        let frame = strip_length(encode_request(ApiKey::Metadata, 12, 1, "client", &body).expect("encodes"));
        for cut in 0..frame.len() {
            assert!(decode_request(frame.slice(..cut)).is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn frame_lengths_are_bounded() {
        assert!(check_frame_length(-1, 100).is_err());
        assert!(check_frame_length(101, 100).is_err());
        assert_eq!(check_frame_length(100, 100).expect("fits"), 100);
    }

    #[test]
    fn api_versions_fallback_is_v0_and_lists_apis() {
        let frame = encode_api_versions_fallback(5, 35);
        let (correlation_id, body) = decode_response(ApiKey::ApiVersions, 0, strip_length(frame)).expect("v0 decodes");
        assert_eq!(correlation_id, 5);
        let ResponseKind::ApiVersions(response) = body else { panic!("wrong kind") };
        assert_eq!(response.error_code, 35);
        assert!(response.api_keys.iter().any(|k| k.api_key == ApiKey::Produce as i16 && k.min_version == 0));
    }
}
