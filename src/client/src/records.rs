//! Record batches: encoding the producer's batches and decoding fetched ones.
//!
//! Both directions use the `kafka-protocol` crate's v2 batch codec. Two of its behaviours
//! shape this file: its encoder starts a new batch whenever `offset - sequence` changes, so
//! non-idempotent records carry `sequence = offset - 1` (giving base sequence -1, "none"); and
//! record headers are an `IndexMap`, so of two headers with the same key only the last
//! survives. This client accepts that loss and documents it on the record types.

use bytes::{Bytes, BytesMut};
use protocol::batch::{BatchError, BatchHeader};
use protocol::ids::{Offset, TopicPartition};
use protocol::kafka_protocol::indexmap::IndexMap;
use protocol::kafka_protocol::protocol::StrBytes;
use protocol::kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

use crate::error::ClientError;
use crate::limits::{RECORD_HEADER_OVERHEAD_BYTES_MAX, RECORD_OVERHEAD_BYTES_MAX};

/// The record batch format this client writes and reads.
const RECORD_BATCH_MAGIC: i8 = 2;

/// One record's payload as the producer batches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchRecord {
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    /// Duplicate keys: the last one wins (see the module docs).
    pub(crate) headers: Vec<(String, Option<Bytes>)>,
    pub(crate) timestamp_ms: i64,
}

impl BatchRecord {
    /// An upper bound on the bytes this record adds to an uncompressed batch.
    pub(crate) fn size_bytes_max(&self) -> usize {
        let payload = |bytes: &Option<Bytes>| bytes.as_ref().map_or(0, Bytes::len);
        let headers: usize =
            self.headers.iter().map(|(key, value)| key.len() + payload(value) + RECORD_HEADER_OVERHEAD_BYTES_MAX).sum();
        RECORD_OVERHEAD_BYTES_MAX + payload(&self.key) + payload(&self.value) + headers
    }
}

/// An idempotent producer's identity and the batch's first sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerStamp {
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    /// Sequence of the first record; the batch's records take the following ones, so
    /// `base_sequence + records - 1` must not pass `i32::MAX` (the sender starts a new epoch
    /// before that).
    pub(crate) base_sequence: i32,
}

/// Encodes records into one v2 batch with base offset 0 and no producer id.
///
/// # Errors
/// `RecordEncode` with the codec's report.
#[cfg(test)]
pub(crate) fn encode_batch<'a>(
    topic_partition: &TopicPartition,
    records: impl Iterator<Item = &'a BatchRecord>,
    compression: Compression,
) -> Result<Bytes, ClientError> {
    encode_stamped_batch(topic_partition, records, compression, None)
}

/// Encodes records into one v2 batch with base offset 0, stamped with an idempotent
/// producer's id, epoch and sequences when `stamp` is set.
///
/// # Errors
/// `RecordEncode` with the codec's report.
pub(crate) fn encode_stamped_batch<'a>(
    topic_partition: &TopicPartition,
    records: impl Iterator<Item = &'a BatchRecord>,
    compression: Compression,
    stamp: Option<ProducerStamp>,
) -> Result<Bytes, ClientError> {
    let records: Vec<Record> = records
        .enumerate()
        .map(|(index, record)| {
            let offset = index as i64;
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: stamp.map_or(NO_PRODUCER_ID, |stamp| stamp.producer_id),
                producer_epoch: stamp.map_or(NO_PRODUCER_EPOCH, |stamp| stamp.producer_epoch),
                timestamp_type: TimestampType::Creation,
                offset,
                // Keeps offset - sequence constant so the encoder writes one batch (with no
                // stamp, base sequence -1: none).
                sequence: stamp.map_or(-1, |stamp| stamp.base_sequence).saturating_add(index as i32),
                timestamp: record.timestamp_ms,
                key: record.key.clone(),
                value: record.value.clone(),
                headers: record
                    .headers
                    .iter()
                    .map(|(key, value)| (StrBytes::from_string(key.clone()), value.clone()))
                    .collect::<IndexMap<_, _>>(),
            }
        })
        .collect();
    let options = RecordEncodeOptions { version: RECORD_BATCH_MAGIC, compression };
    let mut buffer = BytesMut::new();
    RecordBatchEncoder::encode(&mut buffer, &records, &options).map_err(|error| ClientError::RecordEncode {
        topic_partition: topic_partition.clone(),
        reason: error.to_string(),
    })?;
    Ok(buffer.freeze())
}

/// A record decoded from a fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// The record's offset.
    pub offset: Offset,
    /// The producer's timestamp, or the broker's append time if `timestamp_type` says so.
    pub timestamp_ms: i64,
    /// What `timestamp_ms` means.
    pub timestamp_type: TimestampType,
    /// The key, `None` for a null key.
    pub key: Option<Bytes>,
    /// The value, `None` for a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order. Of duplicate keys only the last survives decoding.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// The records a fetch returned for one partition, at or after `position`, and the position
/// after them.
#[derive(Debug, Default)]
pub(crate) struct FetchedRecords {
    pub(crate) records: Vec<ConsumerRecord>,
    /// Where the next fetch starts: after the last complete batch seen (data or control), or
    /// the old position if no complete batch reached it.
    pub(crate) next_position: Offset,
}

/// Decodes the record bytes of one fetched partition.
///
/// A fetch returns whole batches, so records below `position` are skipped; control batches
/// (transaction markers) are skipped but advance the position; a partial batch at the end
/// (the broker cut the response at `max_bytes`) is ignored and fetched again next time.
///
/// # Errors
/// `CorruptRecords` if a complete batch does not parse or decode.
pub(crate) fn decode_fetched(
    topic_partition: &TopicPartition,
    mut bytes: Bytes,
    position: Offset,
) -> Result<FetchedRecords, ClientError> {
    let mut fetched = FetchedRecords { records: Vec::new(), next_position: position };
    while !bytes.is_empty() {
        let corrupt = |offset: Offset, reason: String| ClientError::CorruptRecords {
            topic_partition: topic_partition.clone(),
            offset,
            reason,
        };
        let header = match BatchHeader::parse(&bytes) {
            Ok(header) => header,
            Err(BatchError::Truncated { .. }) => break,
            Err(error) => return Err(corrupt(fetched.next_position, error.to_string())),
        };
        if bytes.len() < header.total_bytes() {
            break;
        }
        let mut batch = bytes.split_to(header.total_bytes());
        if header.last_offset() < position {
            continue;
        }
        if !header.is_control() {
            let decoded = RecordBatchDecoder::decode(&mut batch)
                .map_err(|error| corrupt(header.base_offset, error.to_string()))?;
            let timestamp_type =
                if header.is_log_append_time() { TimestampType::LogAppend } else { TimestampType::Creation };
            for record in decoded.records.into_iter().filter(|record| record.offset >= position.0) {
                fetched.records.push(ConsumerRecord {
                    topic: topic_partition.topic.clone(),
                    partition: topic_partition.partition.0,
                    offset: Offset(record.offset),
                    // With log-append time every record carries the batch's max timestamp.
                    timestamp_ms: if header.is_log_append_time() { header.max_timestamp } else { record.timestamp },
                    timestamp_type,
                    key: record.key,
                    value: record.value,
                    headers: record.headers.into_iter().map(|(key, value)| (key.to_string(), value)).collect(),
                });
            }
        }
        fetched.next_position = fetched.next_position.max(header.next_offset());
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        key: Option<&'static str>,
        value: Option<&'static str>,
        headers: &[(&str, Option<&'static str>)],
    ) -> BatchRecord {
        BatchRecord {
            key: key.map(|text| Bytes::from_static(text.as_bytes())),
            value: value.map(|text| Bytes::from_static(text.as_bytes())),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.map(|text| Bytes::from_static(text.as_bytes()))))
                .collect(),
            timestamp_ms: 1_700_000_000_000,
        }
    }

    fn sample() -> Vec<BatchRecord> {
        vec![
            record(Some("k1"), Some("v1"), &[("h1", Some("x")), ("h2", None)]),
            record(None, Some("value without key"), &[]),
            record(Some("tombstone"), None, &[]),
            record(None, None, &[("only-header", Some(""))]),
        ]
    }

    /// Rebases an encoded batch to `base_offset`, as a broker does on append.
    fn at_offset(batch: &Bytes, base_offset: i64) -> Bytes {
        let mut bytes = batch.to_vec();
        protocol::batch::set_base_offset(&mut bytes, Offset(base_offset));
        Bytes::from(bytes)
    }

    #[test]
    fn batches_round_trip_with_every_codec() {
        let tp = TopicPartition::new("t", 3);
        let records = sample();
        for compression in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let encoded = encode_batch(&tp, records.iter(), compression).expect("encodes");
            let header = protocol::batch::validate(&encoded).expect("one valid batch");
            assert_eq!(header.total_bytes(), encoded.len(), "{compression:?}: exactly one batch");
            assert_eq!(header.record_count, 4);
            assert_eq!(header.base_sequence, -1);
            assert_eq!(header.producer_id, -1);

            let fetched = decode_fetched(&tp, at_offset(&encoded, 100), Offset(0)).expect("decodes");
            assert_eq!(fetched.next_position, Offset(104), "{compression:?}");
            let decoded: Vec<BatchRecord> = fetched
                .records
                .iter()
                .map(|r| BatchRecord {
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                    timestamp_ms: r.timestamp_ms,
                })
                .collect();
            assert_eq!(decoded, records, "{compression:?}");
            assert_eq!(fetched.records.iter().map(|r| r.offset.0).collect::<Vec<_>>(), vec![100, 101, 102, 103]);
            assert!(fetched.records.iter().all(|r| r.topic == "t" && r.partition == 3));
        }
    }

    #[test]
    fn records_below_the_position_are_skipped() {
        let tp = TopicPartition::new("t", 0);
        let first = encode_batch(&tp, sample().iter(), Compression::None).expect("encodes");
        let second = encode_batch(&tp, sample().iter(), Compression::Lz4).expect("encodes");
        let mut bytes = at_offset(&first, 10).to_vec();
        bytes.extend_from_slice(&at_offset(&second, 14));
        // Position 12: the first batch is half consumed, the second is new.
        let fetched = decode_fetched(&tp, Bytes::from(bytes.clone()), Offset(12)).expect("decodes");
        assert_eq!(fetched.records.iter().map(|r| r.offset.0).collect::<Vec<_>>(), vec![12, 13, 14, 15, 16, 17]);
        assert_eq!(fetched.next_position, Offset(18));
        // Position 16: the whole first batch is skipped without decoding.
        let fetched = decode_fetched(&tp, Bytes::from(bytes), Offset(16)).expect("decodes");
        assert_eq!(fetched.records.iter().map(|r| r.offset.0).collect::<Vec<_>>(), vec![16, 17]);
    }

    #[test]
    fn control_batches_are_skipped_but_advance_the_position() {
        let tp = TopicPartition::new("t", 0);
        let control = Record {
            transactional: true,
            control: true,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 7,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: 5,
            sequence: -1,
            timestamp: 0,
            // A commit marker: version 0, type 1.
            key: Some(Bytes::from_static(&[0, 0, 0, 1])),
            value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
            headers: IndexMap::new(),
        };
        let mut marker = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut marker,
            [&control],
            &RecordEncodeOptions { version: 2, compression: Compression::None },
        )
        .expect("encodes");
        let data = encode_batch(&tp, sample()[..1].iter(), Compression::None).expect("encodes");
        let mut bytes = marker.to_vec();
        bytes.extend_from_slice(&at_offset(&data, 6));
        let fetched = decode_fetched(&tp, Bytes::from(bytes), Offset(5)).expect("decodes");
        assert_eq!(fetched.records.len(), 1);
        assert_eq!(fetched.records[0].offset, Offset(6));
        assert_eq!(fetched.next_position, Offset(7));

        let only_marker = decode_fetched(&tp, marker.freeze(), Offset(5)).expect("decodes");
        assert!(only_marker.records.is_empty());
        assert_eq!(only_marker.next_position, Offset(6), "the consumer moves past the marker");
    }

    #[test]
    fn a_partial_trailing_batch_is_left_for_the_next_fetch() {
        let tp = TopicPartition::new("t", 0);
        let batch = encode_batch(&tp, sample().iter(), Compression::None).expect("encodes");
        let mut bytes = batch.to_vec();
        bytes.extend_from_slice(&at_offset(&batch, 4)[..batch.len() - 3]);
        let fetched = decode_fetched(&tp, Bytes::from(bytes), Offset(0)).expect("decodes");
        assert_eq!(fetched.records.len(), 4);
        assert_eq!(fetched.next_position, Offset(4));
        let fetched = decode_fetched(&tp, batch.slice(..20), Offset(0)).expect("a cut header is not an error");
        assert!(fetched.records.is_empty());
        assert_eq!(fetched.next_position, Offset(0));
    }

    #[test]
    fn a_corrupt_batch_is_an_error() {
        let tp = TopicPartition::new("t", 0);
        let batch = encode_batch(&tp, sample().iter(), Compression::None).expect("encodes");
        let mut bytes = batch.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert!(matches!(decode_fetched(&tp, Bytes::from(bytes), Offset(0)), Err(ClientError::CorruptRecords { .. })));
    }

    #[test]
    fn size_estimates_bound_the_encoded_size() {
        let tp = TopicPartition::new("t", 0);
        let records = sample();
        let encoded = encode_batch(&tp, records.iter(), Compression::None).expect("encodes");
        let estimate: usize =
            records.iter().map(BatchRecord::size_bytes_max).sum::<usize>() + crate::limits::RECORD_BATCH_OVERHEAD_BYTES;
        assert!(encoded.len() <= estimate, "{} > {estimate}", encoded.len());
    }

    #[test]
    fn a_stamped_batch_carries_the_producer_and_its_sequences() {
        let tp = TopicPartition::new("t", 0);
        let stamp = ProducerStamp { producer_id: 4_000, producer_epoch: 3, base_sequence: 17 };
        for compression in [Compression::None, Compression::Lz4] {
            let encoded = encode_stamped_batch(&tp, sample().iter(), compression, Some(stamp)).expect("encodes");
            let header = BatchHeader::parse(&encoded).expect("one batch");
            assert_eq!(header.total_bytes(), encoded.len(), "the records make one batch");
            assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (4_000, 3, 17));
            assert_eq!(header.record_count, sample().len() as i32);
        }
        let plain = encode_batch(&tp, sample().iter(), Compression::None).expect("encodes");
        let header = BatchHeader::parse(&plain).expect("one batch");
        assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (-1, -1, -1));
    }
}
