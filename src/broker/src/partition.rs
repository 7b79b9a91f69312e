//! One partition on this node: its log, its high watermark and its group-commit flusher.
//!
//! The high watermark counts only durable data by default: appends go to the log at once, a
//! flusher task fsyncs whatever has been appended since its last fsync (one fsync covers every
//! batch that arrived meanwhile: group commit), and then raises the high watermark to the
//! durable end. acks=all produces complete when the high watermark passes their last offset;
//! fetches read only below it. With `write.caching=true` the high watermark follows the log
//! end instead, and fsyncs happen on `flush.ms` / `flush.messages`.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use metadata::config::TopicSettings;
use metadata::record::TopicId;
use protocol::ids::{Offset, TopicPartition};
use rt::sync::{watch, Notify};
use rt::time::SharedClock;
use storage::{LogConfig, PartitionLog, StorageError};

/// A partition replica hosted here (single node: always the leader).
#[derive(Debug)]
pub(crate) struct Partition {
    /// Which partition.
    pub(crate) topic_partition: TopicPartition,
    /// The topic's id, to tell a re-created topic from the old one.
    pub(crate) topic_id: TopicId,
    /// The segment log.
    pub(crate) log: PartitionLog,
    /// The topic configs in force, refreshed on every config change.
    settings: RwLock<TopicSettings>,
    /// Offsets below this are durable and visible to consumers. Monotonic.
    high_watermark: watch::Sender<Offset>,
    /// Broker-wide counter bumped whenever any high watermark advances (wakes long polls).
    any_high_watermark_changed: watch::Sender<u64>,
    /// Wakes the flusher; a stored permit coalesces many appends into one fsync.
    flush_wanted: Notify,
    /// Records appended since the last fsync (for `flush.messages`).
    unflushed_records: AtomicU64,
    /// Wall time of the last fsync (for `flush.ms`).
    last_flush_ms: AtomicI64,
    /// Set when the partition is deleted; the flusher exits.
    closed: AtomicBool,
    /// The node's wall clock, for `flush.ms`.
    clock: SharedClock,
}

/// Maps topic settings onto the log's config.
pub(crate) fn log_config(settings: &TopicSettings) -> LogConfig {
    LogConfig {
        segment_bytes: settings.segment_bytes,
        segment_ms: settings.segment_ms,
        index_interval_bytes: settings.index_interval_bytes,
        retention_ms: settings.retention_ms,
        retention_bytes: settings.retention_bytes,
    }
}

impl Partition {
    /// Wraps an opened log and starts its flusher.
    pub(crate) fn start(
        topic_partition: TopicPartition,
        topic_id: TopicId,
        log: PartitionLog,
        settings: TopicSettings,
        any_high_watermark_changed: watch::Sender<u64>,
        clock: SharedClock,
    ) -> Arc<Partition> {
        let now_ms = clock.now_ms();
        // Everything recovered from disk is durable (recovery reads only what survived).
        let (high_watermark, _) = watch::channel(log.durable_end_offset());
        let partition = Arc::new(Partition {
            topic_partition,
            topic_id,
            log,
            settings: RwLock::new(settings),
            high_watermark,
            any_high_watermark_changed,
            flush_wanted: Notify::new(),
            unflushed_records: AtomicU64::new(0),
            last_flush_ms: AtomicI64::new(now_ms),
            closed: AtomicBool::new(false),
            clock,
        });
        let flusher = Arc::clone(&partition);
        drop(rt::task::spawn(async move { flusher.run_flusher().await }));
        partition
    }

    /// The settings in force.
    pub(crate) fn settings(&self) -> TopicSettings {
        self.settings.read().expect("settings lock is never poisoned: no code panics holding it").clone()
    }

    /// Replaces the settings after a config change.
    pub(crate) fn set_settings(&self, settings: TopicSettings) {
        self.log.set_config(log_config(&settings));
        *self.settings.write().expect("settings lock is never poisoned") = settings;
        // A switch from write caching to fsync-before-ack must not strand data below the end.
        self.flush_wanted.notify_one();
    }

    /// The high watermark.
    pub(crate) fn high_watermark(&self) -> Offset {
        *self.high_watermark.borrow()
    }

    /// Records that `records` were appended ending at `log_end_offset`, and arranges for them
    /// to become durable and visible. `settings` are the ones the append was validated with.
    pub(crate) fn appended(&self, records: u64, log_end_offset: Offset, settings: &TopicSettings) {
        let unflushed = self.unflushed_records.fetch_add(records, Ordering::Relaxed) + records;
        if settings.write_caching || crate::planted_bug("ack-before-fsync", true) {
            self.advance_high_watermark(log_end_offset);
            if unflushed >= settings.flush_messages.max(1) as u64 {
                self.flush_wanted.notify_one();
            }
        } else {
            self.flush_wanted.notify_one();
        }
    }

    /// Called periodically: triggers a `flush.ms` fsync for write-caching topics.
    pub(crate) fn tick(&self, now_ms: i64) {
        let settings = self.settings();
        if settings.write_caching
            && self.unflushed_records.load(Ordering::Relaxed) > 0
            && now_ms.saturating_sub(self.last_flush_ms.load(Ordering::Relaxed)) >= settings.flush_ms
        {
            self.flush_wanted.notify_one();
        }
    }

    fn advance_high_watermark(&self, offset: Offset) {
        let advanced = self.high_watermark.send_if_modified(|current| {
            if offset > *current {
                *current = offset;
                true
            } else {
                false
            }
        });
        if advanced {
            self.any_high_watermark_changed.send_modify(|counter| *counter = counter.wrapping_add(1));
        }
    }

    /// Waits until the high watermark reaches `offset`, or the timeout passes.
    /// Returns true if it was reached.
    pub(crate) async fn wait_for_high_watermark(&self, offset: Offset, timeout_ms: u64) -> bool {
        let mut receiver = self.high_watermark.subscribe();
        let reached = rt::time::timeout(
            rt::time::Duration::from_millis(timeout_ms),
            receiver.wait_for(|high_watermark| *high_watermark >= offset),
        )
        .await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Stops the flusher (the partition is being deleted).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.flush_wanted.notify_one();
    }

    async fn run_flusher(self: Arc<Self>) {
        loop {
            self.flush_wanted.notified().await;
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            if rt::buggify() {
                // Slow fsync: lets more appends pile into one group commit and stretches the
                // window in which a crash loses unsynced data.
                rt::time::sleep(rt::time::Duration::from_millis(20)).await;
            }
            let pending = self.unflushed_records.swap(0, Ordering::Relaxed);
            match self.log.flush().await {
                Ok(durable_end) => {
                    self.last_flush_ms.store(self.clock.now_ms(), Ordering::Relaxed);
                    if !self.settings().write_caching {
                        self.advance_high_watermark(durable_end);
                    }
                }
                Err(StorageError::FsyncFailed { .. }) => {
                    rt::fatal(rt::FatalReason::FsyncFailed, &format!("fsync failed for {}", self.topic_partition));
                }
                Err(error) => {
                    let _ = self.unflushed_records.fetch_add(pending, Ordering::Relaxed);
                    tracing::error!(partition = %self.topic_partition, %error, "flush failed; will retry");
                    rt::time::sleep(rt::time::Duration::from_millis(100)).await;
                    self.flush_wanted.notify_one();
                }
            }
        }
    }
}
