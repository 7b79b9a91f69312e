//! The records inside a v2 batch, read as raw bytes: what the log cleaner and the produce
//! validation need (each record's offset delta, key, and whether it is a tombstone), without
//! decoding a record into owned fields.
//!
//! A record is copied verbatim when a batch is rebuilt, so nothing the producer wrote (its
//! headers, duplicate header keys included, its timestamp delta) is re-encoded. Because a
//! rebuilt batch keeps its base offset and base timestamp, every kept record's deltas stay
//! right.
//!
//! Record layout (Kafka's `DefaultRecord`; varints are zigzag-encoded):
//!
//! | field            | encoding |
//! |------------------|----------|
//! | length           | varint: bytes after this field |
//! | attributes       | int8 (unused, 0) |
//! | timestampDelta   | varlong |
//! | offsetDelta      | varint  |
//! | keyLength, key   | varint (-1 for null), bytes |
//! | valueLength, value | varint (-1 for null: a tombstone), bytes |
//! | headers          | varint count, then key/value pairs |

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::batch::{compute_crc, BatchHeader, Compression, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES, MAGIC_V2};
use crate::ids::{LeaderEpoch, Offset};

/// Why the records of a batch could not be read or rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The batch is shorter than its header says.
    #[error("record batch of {available} bytes is shorter than its length {needed}")]
    Truncated {
        /// Bytes the header announces.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The compression attribute names no codec weir knows.
    #[error("record batch uses unknown compression codec {codec}")]
    UnknownCompression {
        /// The attribute's codec bits.
        codec: i16,
    },
    /// Decompression or compression failed.
    #[error("record batch {operation} failed: {message}")]
    Codec {
        /// "decompression" or "compression".
        operation: &'static str,
        /// The codec's error.
        message: String,
    },
    /// A record's framing is impossible (bad varint, negative or overlong length), or the
    /// batch holds a different number of records than its header says.
    #[error("record {index} of the batch is malformed: {reason}")]
    Malformed {
        /// Which record (0-based).
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// One record of a batch, borrowed from its (decompressed) records section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Offset relative to the batch's base offset.
    pub offset_delta: i32,
    /// The key, or `None` for a null key.
    pub key: Option<Bytes>,
    /// True if the value is null (a tombstone in a compacted topic).
    pub is_tombstone: bool,
    /// The whole record, length prefix included, exactly as stored.
    pub bytes: Bytes,
}

/// Reads a zigzag varint of at most `bytes_max` bytes at `*position`.
fn read_varint(bytes: &[u8], position: &mut usize, bytes_max: usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for shift in 0..bytes_max {
        let byte = *bytes.get(*position)?;
        *position += 1;
        raw |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

/// Bytes of a zigzag varint of an `i32`.
const VARINT_BYTES_MAX: usize = 5;
/// Bytes of a zigzag varint of an `i64`.
const VARLONG_BYTES_MAX: usize = 10;

/// The records section of `batch` (everything after the 61-byte header), decompressed.
///
/// # Errors
/// `Truncated`, `UnknownCompression`, `Codec`.
pub fn records_section(header: &BatchHeader, batch: &Bytes) -> Result<Bytes, RecordError> {
    let total = header.total_bytes();
    if batch.len() < total || total < BATCH_HEADER_BYTES {
        return Err(RecordError::Truncated { needed: total, available: batch.len() });
    }
    let mut section = batch.slice(BATCH_HEADER_BYTES..total);
    let copy = |buf: &mut Bytes| Ok(std::mem::take(buf));
    let decompressed = match header.compression() {
        Compression::None => return Ok(section),
        Compression::Gzip => Gzip::decompress(&mut section, copy),
        Compression::Snappy => Snappy::decompress(&mut section, copy),
        Compression::Lz4 => Lz4::decompress(&mut section, copy),
        Compression::Zstd => Zstd::decompress(&mut section, copy),
        Compression::Unknown(codec) => return Err(RecordError::UnknownCompression { codec }),
    };
    decompressed.map_err(|error| RecordError::Codec { operation: "decompression", message: format!("{error:#}") })
}

/// Splits a records section into its `record_count` records.
///
/// # Errors
/// `Malformed` for any framing error, for fewer or more records than `record_count`.
pub fn raw_records(section: &Bytes, record_count: i32) -> Result<Vec<RawRecord>, RecordError> {
    let count =
        usize::try_from(record_count).map_err(|_| RecordError::Malformed { index: 0, reason: "negative count" })?;
    let mut records = Vec::with_capacity(count.min(section.len()));
    let mut position = 0;
    while position < section.len() {
        let index = records.len();
        let malformed = |reason| RecordError::Malformed { index, reason };
        if index >= count {
            return Err(malformed("more records than the batch header counts"));
        }
        let start = position;
        let length = read_varint(section, &mut position, VARINT_BYTES_MAX).ok_or(malformed("bad length"))?;
        let length = usize::try_from(length).map_err(|_| malformed("negative length"))?;
        let end = position.checked_add(length).filter(|end| *end <= section.len()).ok_or(malformed("truncated"))?;
        let body = &section[..end];
        position += 1; // attributes
        let _ = read_varint(body, &mut position, VARLONG_BYTES_MAX).ok_or(malformed("bad timestamp delta"))?;
        let offset_delta = read_varint(body, &mut position, VARINT_BYTES_MAX).ok_or(malformed("bad offset delta"))?;
        let offset_delta = i32::try_from(offset_delta).map_err(|_| malformed("offset delta out of range"))?;
        let key_length = read_varint(body, &mut position, VARINT_BYTES_MAX).ok_or(malformed("bad key length"))?;
        let key = match key_length {
            -1 => None,
            length => {
                let length = usize::try_from(length).map_err(|_| malformed("negative key length"))?;
                let key_end = position.checked_add(length).filter(|key_end| *key_end <= end).ok_or(malformed("key"))?;
                let key = section.slice(position..key_end);
                position = key_end;
                Some(key)
            }
        };
        let value_length = read_varint(body, &mut position, VARINT_BYTES_MAX).ok_or(malformed("bad value length"))?;
        if value_length < -1 || position > end {
            return Err(malformed("bad value length"));
        }
        records.push(RawRecord {
            offset_delta,
            key,
            is_tombstone: value_length == -1,
            bytes: section.slice(start..end),
        });
        position = end;
    }
    if records.len() != count {
        return Err(RecordError::Malformed {
            index: records.len(),
            reason: "fewer records than the batch header counts",
        });
    }
    Ok(records)
}

/// Reads the records of a whole (validated) batch: [`records_section`] then [`raw_records`].
///
/// # Errors
/// As those two.
pub fn batch_records(header: &BatchHeader, batch: &Bytes) -> Result<Vec<RawRecord>, RecordError> {
    raw_records(&records_section(header, batch)?, header.record_count)
}

/// Rebuilds `batch` holding only `kept` (some of its records, in order): same base offset,
/// last offset delta, timestamps, producer fields and attributes, the records recompressed
/// with the batch's codec, a new length, record count and CRC. With no record kept the batch
/// stays as an empty batch (Kafka keeps such batches for their producer state).
///
/// # Errors
/// `UnknownCompression`, `Codec`.
pub fn rebuild_batch(header: &BatchHeader, batch: &[u8], kept: &[RawRecord]) -> Result<BytesMut, RecordError> {
    let mut plain = BytesMut::with_capacity(kept.iter().map(|record| record.bytes.len()).sum());
    for record in kept {
        plain.put_slice(&record.bytes);
    }
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + plain.len());
    out.put_slice(&batch[..BATCH_HEADER_BYTES]);
    let copy = |buf: &mut BytesMut| {
        buf.put_slice(&plain);
        Ok(())
    };
    let compressed = match header.compression() {
        Compression::None => {
            out.put_slice(&plain);
            Ok(())
        }
        _ if kept.is_empty() => Ok(()),
        Compression::Gzip => Gzip::compress(&mut out, copy),
        Compression::Snappy => Snappy::compress(&mut out, copy),
        Compression::Lz4 => Lz4::compress(&mut out, copy),
        Compression::Zstd => Zstd::compress(&mut out, copy),
        Compression::Unknown(codec) => return Err(RecordError::UnknownCompression { codec }),
    };
    compressed.map_err(|error| RecordError::Codec { operation: "compression", message: format!("{error:#}") })?;
    let batch_length = i32::try_from(out.len() - BATCH_LENGTH_PREFIX_BYTES).unwrap_or(i32::MAX);
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let record_count = i32::try_from(kept.len()).unwrap_or(i32::MAX);
    out[57..61].copy_from_slice(&record_count.to_be_bytes());
    let crc = compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// An empty batch standing for the offsets `base_offset..=base_offset + last_offset_delta`
/// whose records are gone (the log cleaner's filler between kept batches): no records, no
/// producer, the given leader epoch and timestamps. Consumers skip it and continue after its
/// last offset, as they skip Kafka's emptied batches.
pub fn empty_batch(
    base_offset: Offset,
    last_offset_delta: i32,
    leader_epoch: LeaderEpoch,
    base_timestamp: i64,
    max_timestamp: i64,
) -> BytesMut {
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES);
    out.put_i64(base_offset.0);
    out.put_i32((BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32);
    out.put_i32(leader_epoch.0);
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // CRC, below
    out.put_i16(0); // attributes: no compression, CreateTime
    out.put_i32(last_offset_delta);
    out.put_i64(base_timestamp);
    out.put_i64(max_timestamp);
    out.put_i64(-1); // producer id
    out.put_i16(-1); // producer epoch
    out.put_i32(-1); // base sequence
    out.put_i32(0); // record count
    let crc = compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    fn record(offset: i64, key: Option<&str>, value: Option<&str>) -> Record {
        let mut headers = IndexMap::new();
        let _ = headers.insert(StrBytes::from_static_str("h"), Some(Bytes::from_static(b"v")));
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 3,
            producer_id: 7,
            producer_epoch: 1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: offset as i32,
            timestamp: 1_000 + offset,
            key: key.map(|key| Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|value| Bytes::copy_from_slice(value.as_bytes())),
            headers,
        }
    }

    fn encode(records: &[Record], compression: kafka_protocol::records::Compression) -> Bytes {
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(&mut out, records, &RecordEncodeOptions { version: 2, compression })
            .expect("encode");
        out.freeze()
    }

    #[test]
    fn records_are_found_and_a_rebuilt_batch_keeps_offsets_in_every_codec() {
        use kafka_protocol::records::Compression as Codec;
        for codec in [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let records = [
                record(0, Some("a"), Some("1")),
                record(1, None, Some("2")),
                record(2, Some("c"), None),
                record(3, Some("a"), Some("4")),
            ];
            let batch = encode(&records, codec);
            let header = validate(&batch).expect("valid");
            let raw = batch_records(&header, &batch).expect("records");
            assert_eq!(raw.iter().map(|record| record.offset_delta).collect::<Vec<_>>(), [0, 1, 2, 3], "{codec:?}");
            assert_eq!(raw[0].key.as_deref(), Some(&b"a"[..]));
            assert_eq!(raw[1].key, None);
            assert!(raw[2].is_tombstone && !raw[0].is_tombstone);

            let kept = [raw[1].clone(), raw[3].clone()];
            let rebuilt = rebuild_batch(&header, &batch, &kept).expect("rebuild").freeze();
            let rebuilt_header = validate(&rebuilt).expect("rebuilt batch is valid");
            assert_eq!(rebuilt_header.base_offset, header.base_offset);
            assert_eq!(rebuilt_header.last_offset_delta, 3);
            assert_eq!(rebuilt_header.record_count, 2);
            assert_eq!(rebuilt_header.base_sequence, header.base_sequence);
            assert_eq!(rebuilt_header.compression(), header.compression());
            let decoded = RecordBatchDecoder::decode(&mut rebuilt.clone()).expect("clients decode it");
            let offsets: Vec<i64> = decoded.records.iter().map(|record| record.offset).collect();
            assert_eq!(offsets, [1, 3], "{codec:?}");
            assert_eq!(decoded.records[1].timestamp, 1_003);
            assert_eq!(decoded.records[1].value.as_deref(), Some(&b"4"[..]));
        }
    }

    #[test]
    fn an_empty_batch_is_valid_and_spans_its_offsets() {
        let batch = empty_batch(Offset(10), 4, LeaderEpoch(2), 5, 9).freeze();
        let header = validate(&batch).expect("valid");
        assert_eq!((header.base_offset, header.next_offset(), header.record_count), (Offset(10), Offset(15), 0));
        assert_eq!(header.producer_id, -1);
        assert!(batch_records(&header, &batch).expect("no records").is_empty());
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let batch = encode(&[record(0, Some("k"), Some("v"))], kafka_protocol::records::Compression::None);
        let header = validate(&batch).expect("valid");
        let section = records_section(&header, &batch).expect("section");
        for cut in 0..section.len() {
            assert!(raw_records(&section.slice(..cut), 1).is_err(), "cut at {cut}");
        }
        assert!(raw_records(&section, 2).is_err(), "count mismatch");
        let junk = Bytes::from_static(&[0xff; 12]);
        assert!(raw_records(&junk, 1).is_err());
    }
}
