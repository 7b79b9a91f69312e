//! Per-partition log configuration, named after Kafka's topic configs.

use crate::error::StorageError;
use crate::limits::{INDEX_INTERVAL_BYTES_MAX, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_MS_MIN};

/// How a partition log rolls, indexes and retains segments. Field names are Kafka's topic
/// config names with dots turned into underscores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: the active segment rolls before an append would take it past this size.
    ///
    /// Default: 1073741824 (1 GiB). Range: [`SEGMENT_BYTES_MIN`]..=[`SEGMENT_BYTES_MAX`].
    pub segment_bytes: u64,
    /// `segment.ms`: the active segment rolls once its first append is older than this.
    ///
    /// Default: 604800000 (7 days). Range: [`SEGMENT_MS_MIN`]..=`i64::MAX`.
    pub segment_ms: i64,
    /// `index.interval.bytes`: at most this many bytes of batches between two entries of the
    /// sparse offset and time indexes (a fetch walks at most this far from an index entry).
    ///
    /// Default: 4096. Range: 0..=[`INDEX_INTERVAL_BYTES_MAX`].
    pub index_interval_bytes: u64,
    /// `retention.ms`: sealed segments whose newest record is older than this are deleted.
    ///
    /// Default: 604800000 (7 days). Range: -1 (unlimited) ..=`i64::MAX`.
    pub retention_ms: i64,
    /// `retention.bytes`: the oldest sealed segments are deleted while the log would still hold
    /// at least this many bytes without them.
    ///
    /// Default: -1 (unlimited). Range: -1..=`i64::MAX`.
    pub retention_bytes: i64,
    /// `producer.id.expiration.ms` (a broker setting in Kafka): an idempotent producer with no
    /// batch newer than this is forgotten, and may then start at any sequence.
    ///
    /// Default: 86400000 (1 day). Range: 1..=`i64::MAX`.
    pub producer_id_expiration_ms: i64,
    /// `cleanup.policy` holds `delete`: `retention.ms` and `retention.bytes` delete old
    /// segments. Without it (a `compact`-only topic) only compaction removes records.
    ///
    /// Default: true.
    pub delete: bool,
    /// `cleanup.policy` holds `compact`: [`crate::PartitionLog::clean`] keeps only the latest
    /// record of each key (see the `cleaner` module).
    ///
    /// Default: false.
    pub compact: bool,
    /// `delete.retention.ms`: a tombstone (null value) in the cleaned part of a compacted log
    /// stays at least this long after its batch's timestamp, so consumers reading from the
    /// start see the deletion.
    ///
    /// Default: 86400000 (1 day). Range: 0..=`i64::MAX`.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: compaction runs once the bytes not yet compacted are at
    /// least this share of the compactable bytes.
    ///
    /// Default: 0.5. Range: 0.0..=1.0.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a segment holding a record younger than this is not compacted.
    ///
    /// Default: 0. Range: 0..=`i64::MAX`.
    pub min_compaction_lag_ms: i64,
}

/// Kafka's default `segment.bytes`.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;
/// Kafka's default `segment.ms` and `retention.ms`: seven days.
pub const DEFAULT_SEVEN_DAYS_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's default `delete.retention.ms`: one day.
pub const DEFAULT_DELETE_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// Kafka's default `min.cleanable.dirty.ratio`.
pub const DEFAULT_MIN_CLEANABLE_DIRTY_RATIO: f64 = 0.5;
/// Kafka's default `index.interval.bytes`.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u64 = 4096;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: DEFAULT_SEVEN_DAYS_MS,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            retention_ms: DEFAULT_SEVEN_DAYS_MS,
            retention_bytes: -1,
            producer_id_expiration_ms: replication::producer_state::PRODUCER_ID_EXPIRATION_MS_DEFAULT,
            delete: true,
            compact: false,
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
            min_cleanable_dirty_ratio: DEFAULT_MIN_CLEANABLE_DIRTY_RATIO,
            min_compaction_lag_ms: 0,
        }
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl LogConfig {
    /// Checks every field against its documented range.
    ///
    /// # Errors
    /// [`StorageError::InvalidConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), StorageError> {
        let checks: [(&'static str, i64, i64, i64); 8] = [
            (
                "segment.bytes",
                saturating_i64(self.segment_bytes),
                saturating_i64(SEGMENT_BYTES_MIN),
                saturating_i64(SEGMENT_BYTES_MAX),
            ),
            ("segment.ms", self.segment_ms, SEGMENT_MS_MIN, i64::MAX),
            (
                "index.interval.bytes",
                saturating_i64(self.index_interval_bytes),
                0,
                saturating_i64(INDEX_INTERVAL_BYTES_MAX),
            ),
            ("retention.ms", self.retention_ms, -1, i64::MAX),
            ("retention.bytes", self.retention_bytes, -1, i64::MAX),
            ("producer.id.expiration.ms", self.producer_id_expiration_ms, 1, i64::MAX),
            ("delete.retention.ms", self.delete_retention_ms, 0, i64::MAX),
            ("min.compaction.lag.ms", self.min_compaction_lag_ms, 0, i64::MAX),
        ];
        for (name, value, min, max) in checks {
            if value < min || value > max {
                return Err(StorageError::InvalidConfig { name, value, min, max });
            }
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return Err(StorageError::InvalidRatio {
                name: "min.cleanable.dirty.ratio",
                value: self.min_cleanable_dirty_ratio,
            });
        }
        Ok(())
    }

    /// The nearest valid config: every field clamped into its range. Used by
    /// [`crate::PartitionLog::set_config`], which cannot fail; callers validate first.
    #[must_use]
    pub fn clamped(self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes.clamp(SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX),
            segment_ms: self.segment_ms.max(SEGMENT_MS_MIN),
            index_interval_bytes: self.index_interval_bytes.min(INDEX_INTERVAL_BYTES_MAX),
            retention_ms: self.retention_ms.max(-1),
            retention_bytes: self.retention_bytes.max(-1),
            producer_id_expiration_ms: self.producer_id_expiration_ms.max(1),
            delete: self.delete,
            compact: self.compact,
            delete_retention_ms: self.delete_retention_ms.max(0),
            min_cleanable_dirty_ratio: if self.min_cleanable_dirty_ratio.is_nan() {
                DEFAULT_MIN_CLEANABLE_DIRTY_RATIO
            } else {
                self.min_cleanable_dirty_ratio.clamp(0.0, 1.0)
            },
            min_compaction_lag_ms: self.min_compaction_lag_ms.max(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas_and_valid() {
        let config = LogConfig::default();
        assert_eq!(config.segment_bytes, 1_073_741_824);
        assert_eq!(config.segment_ms, 604_800_000);
        assert_eq!(config.index_interval_bytes, 4096);
        assert_eq!(config.retention_ms, 604_800_000);
        assert_eq!(config.retention_bytes, -1);
        config.validate().expect("defaults are valid");
    }

    #[test]
    fn out_of_range_fields_are_named_and_clamped() {
        let config = LogConfig { segment_bytes: 1, ..LogConfig::default() };
        assert!(matches!(config.validate(), Err(StorageError::InvalidConfig { name: "segment.bytes", value: 1, .. })));
        assert_eq!(config.clamped().segment_bytes, SEGMENT_BYTES_MIN);
        let config = LogConfig { retention_ms: -5, ..LogConfig::default() };
        assert!(matches!(config.validate(), Err(StorageError::InvalidConfig { name: "retention.ms", .. })));
        config.clamped().validate().expect("clamped is valid");
    }
}
