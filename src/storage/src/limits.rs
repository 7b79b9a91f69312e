//! Every bound of the storage crate, in one place, with the relations between them checked at
//! compile time.
//!
//! Index entries store file positions and relative offsets as `u32`, so every bound that can
//! grow a segment is chosen to keep both below `u32::MAX`.

use protocol::batch::BATCH_HEADER_BYTES;

/// Smallest accepted `segment.bytes`: one batch header. Tiny segments are legal (the simulation
/// config uses them to make rolls constant); a segment always holds at least one append.
pub const SEGMENT_BYTES_MIN: u64 = BATCH_HEADER_BYTES as u64;
/// Largest accepted `segment.bytes` (Kafka's is an `int`).
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Smallest accepted `segment.ms`.
pub const SEGMENT_MS_MIN: i64 = 1;
/// Largest accepted `index.interval.bytes`.
pub const INDEX_INTERVAL_BYTES_MAX: u64 = i32::MAX as u64;
/// Largest single `append` (all batches of one call). A segment holds at most
/// `max(segment.bytes, APPEND_BYTES_MAX)` bytes, because a roll happens before an append that
/// would overflow a non-empty segment.
pub const APPEND_BYTES_MAX: u64 = i32::MAX as u64;
/// Largest offset distance from a segment's base offset to its last offset; a segment rolls
/// before crossing it (the relative offsets in the indexes are `u32`).
pub const RELATIVE_OFFSET_MAX: i64 = i32::MAX as i64;
/// Smallest disk read when a fetch walks batch headers.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Disk read size when recovery scans a segment.
pub const SCAN_CHUNK_BYTES: usize = 1024 * 1024;
/// [`crate::SpaceGuard`] asks the filesystem for its free space at least once every this many
/// reserved bytes.
pub const SPACE_REFRESH_BYTES: u64 = 64 * 1024 * 1024;
/// [`crate::SpaceGuard`] also asks the filesystem whenever its estimate, after a reservation,
/// would fall within this many bytes of the reserve.
pub const SPACE_REFRESH_MARGIN_BYTES: u64 = 64 * 1024 * 1024;
/// Largest record in a [`crate::record_log::RecordLog`]; a longer length prefix is a torn tail.
pub const RECORD_LOG_RECORD_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// The log cleaner stops mapping keys after the segment that takes its key map past this
/// many bytes (key bytes plus [`KEY_MAP_ENTRY_OVERHEAD_BYTES`] per key); the rest of the dirty
/// log waits for the next pass. Kafka's `log.cleaner.dedupe.buffer.size` plays this part.
pub const KEY_MAP_BYTES_MAX: usize = 64 * 1024 * 1024;
/// What the cleaner's key map is charged per key on top of the key itself (hash table slot,
/// offset, `Bytes` handle).
pub const KEY_MAP_ENTRY_OVERHEAD_BYTES: usize = 64;
/// The cleaner writes its copy of a segment in writes of about this many bytes.
pub const CLEAN_WRITE_BYTES: usize = 1024 * 1024;
/// Bytes of one offset-index entry: relative offset `u32` + file position `u32`.
pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;
/// Bytes of one time-index entry: timestamp `i64` + relative offset `u32`.
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;

const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(APPEND_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(RELATIVE_OFFSET_MAX < u32::MAX as i64);
const _: () = assert!(INDEX_INTERVAL_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(READ_CHUNK_BYTES >= BATCH_HEADER_BYTES);
const _: () = assert!(SCAN_CHUNK_BYTES >= READ_CHUNK_BYTES);
const _: () = assert!(RECORD_LOG_RECORD_BYTES_MAX <= u32::MAX as u64);
