//! Kafka record batch (magic v2) header parsing, validation and in-place patching.
//!
//! Batches stay opaque bytes everywhere in weir: the broker stores and serves them exactly as the
//! producer sent them, after rewriting the two header fields that lie outside the CRC (base
//! offset and partition leader epoch). Only the 61-byte header is parsed here.
//!
//! Layout (all integers big-endian):
//!
//! | bytes  | field                  |
//! |--------|------------------------|
//! | 0..8   | baseOffset (i64)       |
//! | 8..12  | batchLength (i32): bytes after this field |
//! | 12..16 | partitionLeaderEpoch   |
//! | 16     | magic (2)              |
//! | 17..21 | crc (CRC-32C of bytes 21..end) |
//! | 21..23 | attributes             |
//! | 23..27 | lastOffsetDelta        |
//! | 27..35 | baseTimestamp          |
//! | 35..43 | maxTimestamp           |
//! | 43..51 | producerId             |
//! | 51..53 | producerEpoch          |
//! | 53..57 | baseSequence           |
//! | 57..61 | recordCount            |

use crate::ids::{LeaderEpoch, Offset};

/// Size of the v2 batch header.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batchLength`'s counted region (baseOffset + batchLength).
pub const BATCH_LENGTH_PREFIX_BYTES: usize = 12;
/// The only record-batch format weir accepts.
pub const MAGIC_V2: i8 = 2;

const CRC_START: usize = 21;
const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
const ATTRIBUTE_TIMESTAMP_TYPE: i16 = 0x08;
const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
const ATTRIBUTE_CONTROL: i16 = 0x20;

/// Why a batch was rejected. Each maps to one Kafka error code in the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than a header, or than the header's `batchLength` announces.
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the batch claims to need.
        needed: usize,
        /// Bytes actually present.
        available: usize,
    },
    /// `batchLength` is smaller than the header itself or negative.
    #[error("record batch length {length} is invalid")]
    InvalidLength {
        /// The announced length.
        length: i32,
    },
    /// A message format other than v2 (magic 0 and 1 are not supported).
    #[error("record batch magic {magic} is not supported (only v2)")]
    UnsupportedMagic {
        /// The magic byte found.
        magic: i8,
    },
    /// The CRC-32C over the batch does not match the header.
    #[error("record batch CRC mismatch: header {expected:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC stored in the header.
        expected: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// Record count or offset delta make no sense (negative, or count > delta + 1).
    #[error("record batch header is inconsistent: record count {record_count}, last offset delta {last_offset_delta}")]
    InconsistentCounts {
        /// The record count field.
        record_count: i32,
        /// The last offset delta field.
        last_offset_delta: i32,
    },
}

/// Compression codec from a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy (xerial framing).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
    /// A codec id Kafka does not define.
    Unknown(i16),
}

/// The parsed fixed-size header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: Offset,
    /// Bytes after the `batchLength` field; the whole batch is `batch_length + 12` bytes.
    pub batch_length: i32,
    /// Leader epoch stamped by the leader that appended the batch.
    pub partition_leader_epoch: LeaderEpoch,
    /// Always 2.
    pub magic: i8,
    /// CRC-32C of bytes 21..end.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch (or the log append time).
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

fn i16_at(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}
fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}
fn i64_at(bytes: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(raw)
}

impl BatchHeader {
    /// Parses the header at the start of `bytes` without checking the CRC or that the whole
    /// batch is present.
    ///
    /// # Errors
    /// `Truncated` if fewer than 61 bytes; `InvalidLength`, `UnsupportedMagic` or
    /// `InconsistentCounts` for impossible header values.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated { needed: BATCH_HEADER_BYTES, available: bytes.len() });
        }
        let batch_length = i32_at(bytes, 8);
        if batch_length < (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32 {
            return Err(BatchError::InvalidLength { length: batch_length });
        }
        let magic = bytes[16] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic { magic });
        }
        let header = BatchHeader {
            base_offset: Offset(i64_at(bytes, 0)),
            batch_length,
            partition_leader_epoch: LeaderEpoch(i32_at(bytes, 12)),
            magic,
            crc: u32::from_be_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]),
            attributes: i16_at(bytes, 21),
            last_offset_delta: i32_at(bytes, 23),
            base_timestamp: i64_at(bytes, 27),
            max_timestamp: i64_at(bytes, 35),
            producer_id: i64_at(bytes, 43),
            producer_epoch: i16_at(bytes, 51),
            base_sequence: i32_at(bytes, 53),
            record_count: i32_at(bytes, 57),
        };
        if header.record_count < 0
            || header.last_offset_delta < 0
            || header.record_count > header.last_offset_delta.saturating_add(1)
        {
            return Err(BatchError::InconsistentCounts {
                record_count: header.record_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        Ok(header)
    }

    /// Total size of the batch in bytes, header included.
    pub fn total_bytes(&self) -> usize {
        self.batch_length as usize + BATCH_LENGTH_PREFIX_BYTES
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(i64::from(self.last_offset_delta))
    }

    /// The offset after the last record: where the next batch starts.
    pub fn next_offset(&self) -> Offset {
        self.base_offset.plus(i64::from(self.last_offset_delta) + 1)
    }

    /// Compression codec.
    pub fn compression(&self) -> Compression {
        match self.attributes & ATTRIBUTE_COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }

    /// True if the timestamps are the broker's append time rather than the producer's.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTRIBUTE_TIMESTAMP_TYPE != 0
    }

    /// True if the batch is part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    /// True for control batches (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }
}

/// Computes the CRC-32C a batch's header should carry.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Parses and fully validates one batch at the start of `bytes`: header, length and CRC.
///
/// # Errors
/// Any [`BatchError`].
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    let total = header.total_bytes();
    if bytes.len() < total {
        return Err(BatchError::Truncated { needed: total, available: bytes.len() });
    }
    let computed = compute_crc(&bytes[..total]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch { expected: header.crc, computed });
    }
    Ok(header)
}

/// Iterates over the batches in a buffer, validating each. Stops at the first invalid or
/// incomplete batch, returning its error; a clean end of buffer ends the iteration.
#[derive(Debug)]
pub struct Batches<'a> {
    bytes: &'a [u8],
    position: usize,
    failed: bool,
}

impl<'a> Batches<'a> {
    /// Starts iterating over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Batches { bytes, position: 0, failed: false }
    }

    /// Byte position of the next batch: after iteration ends cleanly, the length of the valid
    /// prefix.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<'a> Iterator for Batches<'a> {
    /// The header, the batch's byte range within the buffer, or the error that stopped it.
    type Item = Result<(BatchHeader, std::ops::Range<usize>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.bytes.len() {
            return None;
        }
        match validate(&self.bytes[self.position..]) {
            Ok(header) => {
                let range = self.position..self.position + header.total_bytes();
                self.position = range.end;
                Some(Ok((header, range)))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// Rewrites the base offset of a batch in place (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: Offset) {
    batch[0..8].copy_from_slice(&base_offset.0.to_be_bytes());
}

/// Rewrites the partition leader epoch of a batch in place (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: LeaderEpoch) {
    batch[12..16].copy_from_slice(&epoch.0.to_be_bytes());
}

/// Stamps `LogAppendTime` into a batch: sets the timestamp-type attribute and the max timestamp,
/// then recomputes the CRC (both fields are inside it).
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) {
    let attributes = i16_at(batch, 21) | ATTRIBUTE_TIMESTAMP_TYPE;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a syntactically valid v2 batch with `records` bytes of opaque record payload.
    pub(crate) fn make_batch(base_offset: i64, last_offset_delta: i32, record_count: i32, payload: &[u8]) -> Vec<u8> {
        let mut batch = vec![0u8; BATCH_HEADER_BYTES];
        batch.extend_from_slice(payload);
        let length = (batch.len() - BATCH_LENGTH_PREFIX_BYTES) as i32;
        batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        batch[16] = 2;
        batch[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
        batch[27..35].copy_from_slice(&1_000i64.to_be_bytes());
        batch[35..43].copy_from_slice(&2_000i64.to_be_bytes());
        batch[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        batch[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        batch[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        batch[57..61].copy_from_slice(&record_count.to_be_bytes());
        let crc = compute_crc(&batch);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    #[test]
    fn parses_and_validates_a_well_formed_batch() {
        let batch = make_batch(0, 4, 5, b"records");
        let header = validate(&batch).expect("valid batch");
        assert_eq!(header.record_count, 5);
        assert_eq!(header.next_offset(), Offset(5));
        assert_eq!(header.total_bytes(), batch.len());
        assert_eq!(header.max_timestamp, 2_000);
        assert_eq!(header.compression(), Compression::None);
    }

    #[test]
    fn rejects_a_flipped_payload_bit_by_crc() {
        let mut batch = make_batch(0, 0, 1, b"x");
        let last = batch.len() - 1;
        batch[last] ^= 1;
        assert!(matches!(validate(&batch), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn rejects_old_magic_and_short_buffers() {
        let mut batch = make_batch(0, 0, 1, b"x");
        batch[16] = 1;
        assert_eq!(validate(&batch), Err(BatchError::UnsupportedMagic { magic: 1 }));
        assert!(matches!(validate(&batch[..30]), Err(BatchError::Truncated { .. })));
        let whole = make_batch(0, 0, 1, b"abc");
        assert!(matches!(validate(&whole[..whole.len() - 1]), Err(BatchError::Truncated { .. })));
    }

    #[test]
    fn rejects_more_records_than_offsets() {
        let batch = make_batch(0, 1, 3, b"x");
        assert!(matches!(validate(&batch), Err(BatchError::InconsistentCounts { .. })));
    }

    #[test]
    fn patching_offset_and_epoch_keeps_the_crc_valid() {
        let mut batch = make_batch(0, 2, 3, b"abc");
        set_base_offset(&mut batch, Offset(1234));
        set_partition_leader_epoch(&mut batch, LeaderEpoch(7));
        let header = validate(&batch).expect("still valid");
        assert_eq!(header.base_offset, Offset(1234));
        assert_eq!(header.partition_leader_epoch, LeaderEpoch(7));
        assert_eq!(header.last_offset(), Offset(1236));
    }

    #[test]
    fn log_append_time_is_stamped_with_a_new_crc() {
        let mut batch = make_batch(0, 0, 1, b"abc");
        set_log_append_time(&mut batch, 99);
        let header = validate(&batch).expect("valid after stamping");
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp, 99);
    }

    #[test]
    fn batches_iterator_stops_at_a_torn_tail() {
        let mut log = make_batch(0, 0, 1, b"a");
        let first_len = log.len();
        log.extend(make_batch(1, 1, 2, b"bb"));
        let second_end = log.len();
        log.extend(&make_batch(3, 0, 1, b"c")[..20]);
        let mut batches = Batches::new(&log);
        assert_eq!(batches.next().unwrap().unwrap().1, 0..first_len);
        assert_eq!(batches.next().unwrap().unwrap().1, first_len..second_end);
        assert!(batches.next().unwrap().is_err());
        assert!(batches.next().is_none());
        assert_eq!(batches.position(), second_end);
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = validate(&bytes);
            for item in Batches::new(&bytes) { let _ = item; }
        }

        #[test]
        fn any_single_bit_flip_in_the_crc_range_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 1..64),
            bit in 0usize..512,
        ) {
            let mut batch = make_batch(10, 0, 1, &payload);
            let span = batch.len() - CRC_START;
            let position = CRC_START + (bit / 8) % span;
            batch[position] ^= 1 << (bit % 8);
            prop_assert!(validate(&batch).is_err());
        }
    }
}
