//! Bad input over raw TCP: oversized, truncated and garbage frames, unknown APIs and versions,
//! corrupt and oversized record batches, illegal topic names. Each gets the answer Kafka
//! gives (a closed connection or a specific error code) and the node keeps serving.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use client::admin::{Admin, NewTopic};
use client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use client::ClientError;
use protocol::frame::{decode_response, encode_request};
use protocol::kafka_protocol::indexmap::IndexMap;
use protocol::kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use protocol::kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, ProduceRequest, RequestKind, ResponseKind, TopicName,
};
use protocol::kafka_protocol::protocol::StrBytes;
use protocol::kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType, NO_PARTITION_LEADER_EPOCH,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use protocol::ResponseError;

use crate::harness::WeirProcess;
use crate::tester::{connect, create_topic, log_end_offset, read_to_end};

/// `socket.request.max.bytes` of the node under test.
const REQUEST_MAX_BYTES: usize = 1_048_576;
/// The Produce version the raw requests use (flexible, record batches v2).
const PRODUCE_VERSION: i16 = 9;
/// How long a raw read waits before the test decides the server is silent.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

fn open(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap_or_else(|error| panic!("cannot connect to {address}: {error}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).expect("setting a read timeout works");
    stream.set_nodelay(true).expect("setting nodelay works");
    stream
}

/// Asserts that the server closes the connection (EOF or reset) without answering.
fn assert_closed(mut stream: TcpStream, what: &str) {
    let mut buffer = [0u8; 64];
    match stream.read(&mut buffer) {
        Ok(0) => {}
        Ok(count) => panic!(
            "{what}: the server answered {count} bytes instead of closing the connection: {:?}",
            &buffer[..count]
        ),
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            ) => {}
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("{what}: the server kept the connection open for {READ_TIMEOUT:?}")
        }
        Err(error) => panic!("{what}: unexpected read error {error}"),
    }
}

/// Sends raw bytes; a write error means the server already closed, which the read reports.
fn send(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}

/// Reads one response frame (without its length prefix).
fn read_frame(stream: &mut TcpStream, what: &str) -> Bytes {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).unwrap_or_else(|error| panic!("{what}: no response ({error})"));
    let length = i32::from_be_bytes(length);
    assert!((0..=64 * 1024 * 1024).contains(&length), "{what}: response length {length}");
    let mut body = vec![0u8; length as usize];
    stream.read_exact(&mut body).unwrap_or_else(|error| panic!("{what}: truncated response ({error})"));
    Bytes::from(body)
}

fn request(api_key: ApiKey, version: i16, correlation_id: i32, body: RequestKind) -> BytesMut {
    encode_request(api_key, version, correlation_id, "blackbox-raw", &body)
        .unwrap_or_else(|error| panic!("encoding {api_key:?} v{version}: {error}"))
}

/// A v2 record batch of `values`, uncompressed, timestamped now.
fn record_batch(values: &[Vec<u8>]) -> BytesMut {
    let now_ms =
        i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis()).expect("fits");
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(index, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            // Keeps offset - sequence constant so the encoder writes a single batch.
            sequence: index as i32 - 1,
            timestamp: now_ms,
            key: Some(Bytes::from(format!("key-{index}"))),
            value: Some(Bytes::from(value.clone())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buffer,
        &records,
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .expect("a batch encodes");
    buffer
}

/// Sends one Produce (acks=all) of `records` to partition 0 of `topic` and returns that
/// partition's error code.
fn produce_raw(address: &str, topic: &str, records: Bytes, correlation_id: i32) -> i16 {
    let body = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(records))]),
    ]);
    let mut stream = open(address);
    send(&mut stream, &request(ApiKey::Produce, PRODUCE_VERSION, correlation_id, RequestKind::Produce(body)));
    let what = format!("Produce to {topic}");
    let frame = read_frame(&mut stream, &what);
    let (correlation, response) =
        decode_response(ApiKey::Produce, PRODUCE_VERSION, frame).unwrap_or_else(|error| panic!("{what}: {error}"));
    assert_eq!(correlation, correlation_id, "{what}: correlation id");
    let ResponseKind::Produce(response) = response else { panic!("{what}: not a Produce response") };
    let partition = response
        .responses
        .iter()
        .flat_map(|topic| topic.partition_responses.iter())
        .find(|partition| partition.index == 0)
        .unwrap_or_else(|| panic!("{what}: no partition 0 in {response:?}"));
    partition.error_code
}

fn code_name(code: i16) -> String {
    ResponseError::try_from_code(code).map_or_else(|| "NONE".to_owned(), |error| format!("{error:?}"))
}

/// Goal: malformed and hostile input gets Kafka's answers and never takes the node down.
/// Method: raw frames over TCP. Oversized, truncated, garbage, unknown-key and
/// unsupported-version frames close the connection; ApiVersions at an unknown version gets a
/// v0 response with UNSUPPORTED_VERSION (KIP-511); a batch with a wrong CRC gets
/// CORRUPT_MESSAGE, a batch over max.message.bytes MESSAGE_TOO_LARGE, a topic named `bad/name`
/// INVALID_TOPIC_EXCEPTION, none of them stores anything; afterwards produce and consume work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_and_the_server_keeps_serving() {
    let mut node = WeirProcess::start(&["--socket-request-max-bytes", &REQUEST_MAX_BYTES.to_string()]);
    let address = node.address();

    // A length prefix above socket.request.max.bytes: closed before any body is read.
    let mut stream = open(&address);
    let mut frame = BytesMut::new();
    frame.put_i32(REQUEST_MAX_BYTES as i32 + 1);
    frame.put_slice(&[0, 3, 0, 12, 0, 0, 0, 1]);
    send(&mut stream, &frame);
    assert_closed(stream, "a frame of socket.request.max.bytes + 1");

    let mut stream = open(&address);
    send(&mut stream, &(-5i32).to_be_bytes());
    assert_closed(stream, "a negative frame length");

    // Shorter than a request header.
    let mut stream = open(&address);
    send(&mut stream, &[0, 0, 0, 3, 0, 3, 0]);
    assert_closed(stream, "a 3-byte frame");

    // A Metadata v12 request cut short, with a length prefix that matches the cut.
    let metadata =
        request(ApiKey::Metadata, 12, 1, RequestKind::Metadata(MetadataRequest::default().with_topics(None)));
    for cut in [12, metadata.len() - 1] {
        let mut truncated = BytesMut::new();
        truncated.put_i32(cut as i32 - 4);
        truncated.put_slice(&metadata[4..cut]);
        let mut stream = open(&address);
        send(&mut stream, &truncated);
        assert_closed(stream, &format!("a Metadata request truncated to {cut} bytes"));
    }

    // A valid header followed by garbage.
    let mut garbage = BytesMut::new();
    garbage.put_i32(8 + 40);
    garbage.put_slice(&[0, 3, 0, 12, 0, 0, 0, 9]);
    garbage.put_slice(&[0xff; 40]);
    let mut stream = open(&address);
    send(&mut stream, &garbage);
    assert_closed(stream, "a Metadata header followed by 0xff bytes");

    // Unknown API keys: one Kafka never defined and one Kafka defines but weir does not serve.
    for (key, what) in [(9_999i16, "API key 9999"), (ApiKey::JoinGroup as i16, "JoinGroup, which weir does not serve")]
    {
        let mut frame = BytesMut::new();
        frame.put_i32(10);
        frame.put_i16(key);
        frame.put_i16(0);
        frame.put_i32(5);
        frame.put_i16(-1);
        let mut stream = open(&address);
        send(&mut stream, &frame);
        assert_closed(stream, what);
    }

    // An unsupported version of a served API other than ApiVersions.
    let mut unsupported = metadata.clone();
    unsupported[6..8].copy_from_slice(&99i16.to_be_bytes());
    let mut stream = open(&address);
    send(&mut stream, &unsupported);
    assert_closed(stream, "Metadata v99");

    // ApiVersions v99: a v0 response with UNSUPPORTED_VERSION listing what is served, and the
    // connection stays usable (the client retries at a version it finds there).
    let mut api_versions = request(ApiKey::ApiVersions, 3, 77, RequestKind::ApiVersions(ApiVersionsRequest::default()));
    api_versions[6..8].copy_from_slice(&99i16.to_be_bytes());
    let mut stream = open(&address);
    send(&mut stream, &api_versions);
    let frame = read_frame(&mut stream, "ApiVersions v99");
    let (correlation_id, response) =
        decode_response(ApiKey::ApiVersions, 0, frame).expect("the fallback decodes as ApiVersions v0");
    assert_eq!(correlation_id, 77, "ApiVersions v99: correlation id");
    let ResponseKind::ApiVersions(response) = response else { panic!("not an ApiVersions response") };
    assert_eq!(response.error_code, ResponseError::UnsupportedVersion.code(), "ApiVersions v99: error code");
    let produce =
        response.api_keys.iter().find(|api| api.api_key == ApiKey::Produce as i16).expect("Produce is listed");
    assert!(produce.max_version >= 3, "Produce max version {}", produce.max_version);
    let api_versions_range =
        response.api_keys.iter().find(|api| api.api_key == ApiKey::ApiVersions as i16).expect("ApiVersions is listed");
    send(
        &mut stream,
        &request(
            ApiKey::ApiVersions,
            api_versions_range.max_version.min(3),
            78,
            RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ),
    );
    let frame = read_frame(&mut stream, "ApiVersions retry");
    let (correlation_id, response) = decode_response(ApiKey::ApiVersions, api_versions_range.max_version.min(3), frame)
        .expect("the retry's response decodes");
    let ResponseKind::ApiVersions(response) = response else { panic!("not an ApiVersions response") };
    assert_eq!((correlation_id, response.error_code), (78, 0), "ApiVersions retry on the same connection");

    let client = connect(&address).await;
    create_topic(&client, "target", 1, &[]).await;
    create_topic(&client, "limited", 1, &[("max.message.bytes", "1024")]).await;

    // A batch whose payload was changed after its CRC was computed.
    let mut corrupt = record_batch(&[b"first value".to_vec(), b"second value".to_vec()]);
    let last = corrupt.len() - 3;
    corrupt[last] ^= 0x5a;
    let code = produce_raw(&address, "target", corrupt.freeze(), 11);
    assert_eq!(code, ResponseError::CorruptMessage.code(), "a batch with a wrong CRC got {}", code_name(code));

    // A batch whose length field runs past the end of the records.
    let whole = record_batch(&[b"cut short".to_vec()]);
    let code = produce_raw(&address, "target", whole.freeze().slice(..40), 12);
    assert_eq!(code, ResponseError::CorruptMessage.code(), "a truncated batch got {}", code_name(code));

    let code = produce_raw(&address, "limited", record_batch(&[vec![b'x'; 2_000]]).freeze(), 13);
    assert_eq!(
        code,
        ResponseError::MessageTooLarge.code(),
        "a 2 kB batch to a topic with max.message.bytes=1024 got {}",
        code_name(code)
    );

    let code = produce_raw(&address, "bad/name", record_batch(&[b"v".to_vec()]).freeze(), 14);
    assert_eq!(code, ResponseError::InvalidTopicException.code(), "a produce to `bad/name` got {}", code_name(code));
    let results =
        Admin::new(&client).create_topics(&[NewTopic::new("bad/name")], false).await.expect("CreateTopics answers");
    match &results[0].1 {
        Err(ClientError::Broker { error, .. }) => {
            assert_eq!(*error, ResponseError::InvalidTopicException, "CreateTopics bad/name")
        }
        other => panic!("CreateTopics bad/name: expected INVALID_TOPIC_EXCEPTION, got {other:?}"),
    }

    // None of the refused batches was stored.
    assert_eq!(log_end_offset(&client, "target", 0).await, 0, "refused batches must not be stored in `target`");
    assert_eq!(log_end_offset(&client, "limited", 0).await, 0, "refused batches must not be stored in `limited`");

    // A well-formed raw batch is accepted at offset 0, and the node still serves clients.
    let code = produce_raw(&address, "target", record_batch(&[b"good raw".to_vec()]).freeze(), 15);
    assert_eq!(code, 0, "a good raw batch got {}", code_name(code));
    node.assert_running();
    let producer = Producer::new(client.clone(), ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .expect("valid config");
    let metadata = producer
        .send_and_wait(ProducerRecord::new("target", "after the abuse").with_key("k"))
        .await
        .expect("a normal produce works");
    assert_eq!(metadata.offset.0, 1, "the normal record follows the good raw batch");
    let read = read_to_end(&client, "target", 1).await;
    let values: Vec<Option<Bytes>> = read[&0].iter().map(|record| record.value.clone()).collect();
    assert_eq!(
        values,
        vec![Some(Bytes::from_static(b"good raw")), Some(Bytes::from_static(b"after the abuse"))],
        "contents of `target`"
    );
    node.assert_running();
}
