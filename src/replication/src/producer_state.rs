//! Idempotent producers' state on one partition (KIP-98): what the leader checks every
//! idempotent batch against before it appends.
//!
//! # Design
//!
//! The table is derived from the log: every batch that carries a producer id is folded in
//! with [`ProducerStateTable::apply`], whether the leader appended it, a follower copied it or
//! recovery read it back, so a new leader (or a restarted broker) that rebuilds the table from
//! its log has the same table the old leader had for every record they share. Only the leader
//! checks ([`ProducerStateTable::check`]); replicated batches are taken as they are, as in
//! Kafka (`AppendOrigin.REPLICATION`).
//!
//! Per producer id the table keeps the producer epoch and the sequence and offset ranges of
//! its last [`BATCHES_RETAINED_MAX`] batches (Kafka's `ProducerStateEntry.NUM_BATCHES_TO_RETAIN`,
//! matching the client's `max.in.flight.requests.per.connection` bound of 5 for idempotence).
//! A produce is checked in this order, as Kafka's `UnifiedLog` and `ProducerAppendInfo` do:
//!
//! 1. a batch whose epoch and sequence range equal a retained batch's is a duplicate: it is not
//!    appended again and its answer is the original batch's offsets;
//! 2. an epoch older than the stored one is `INVALID_PRODUCER_EPOCH`;
//! 3. a newer epoch must start at sequence 0, unless the producer is unknown;
//! 4. in the same epoch the first sequence must follow the last one (wrapping after
//!    `i32::MAX`), else `OUT_OF_ORDER_SEQUENCE_NUMBER`;
//! 5. a producer the table does not know (never seen, or expired after
//!    `producer.id.expiration.ms`) may start at any sequence.
//!
//! A producer stays in the table when DeleteRecords or retention remove its batches (as in
//! Kafka since KIP-360): a retry of a deleted batch is still answered as a duplicate. The log
//! keeps such producers in a snapshot ([`ProducerStateTable::producers_below`]) so a restart
//! remembers them too.
//!
//! Memory: one entry per producer id seen within `producer.id.expiration.ms` (Kafka's bound
//! too); [`ProducerStateTable::remove_expired`] drops the rest.

use std::collections::{BTreeMap, VecDeque};

use protocol::batch::BatchHeader;
use protocol::ids::{Offset, ProducerEpoch, ProducerId};

/// Batches remembered per producer for deduplication (Kafka's `NUM_BATCHES_TO_RETAIN`).
pub const BATCHES_RETAINED_MAX: usize = 5;
/// Kafka's default `producer.id.expiration.ms`: one day.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: i64 = 86_400_000;
/// Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER.
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// Kafka's INVALID_PRODUCER_EPOCH.
pub const INVALID_PRODUCER_EPOCH: i16 = 47;

/// The idempotence fields of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// The producer.
    pub producer_id: ProducerId,
    /// Its epoch.
    pub producer_epoch: ProducerEpoch,
    /// Sequence of the first record.
    pub base_sequence: i32,
    /// Sequence of the last record (wraps after `i32::MAX` to 0).
    pub last_sequence: i32,
    /// Offset of the first record (meaningful once the batch is in a log).
    pub base_offset: Offset,
    /// Offset of the last record.
    pub last_offset: Offset,
    /// The batch's largest timestamp: the producer's last activity, for expiry.
    pub max_timestamp_ms: i64,
}

impl ProducerBatch {
    /// The idempotence fields of `header`, or `None` for a batch without a producer id (or
    /// with a producer id but no sequence, which a client may not send; see
    /// [`ProducerBatch::is_malformed`]).
    pub fn from_header(header: &BatchHeader) -> Option<ProducerBatch> {
        if header.producer_id < 0 || header.producer_epoch < 0 || header.base_sequence < 0 {
            return None;
        }
        Some(ProducerBatch {
            producer_id: ProducerId(header.producer_id),
            producer_epoch: ProducerEpoch(header.producer_epoch),
            base_sequence: header.base_sequence,
            last_sequence: increment_sequence(header.base_sequence, header.last_offset_delta),
            base_offset: header.base_offset,
            last_offset: header.base_offset.plus(i64::from(header.last_offset_delta)),
            max_timestamp_ms: header.max_timestamp,
        })
    }

    /// True for a header that carries a producer id without a valid epoch or sequence: a
    /// client batch like that is refused as INVALID_RECORD.
    pub fn is_malformed(header: &BatchHeader) -> bool {
        header.producer_id >= 0 && (header.producer_epoch < 0 || header.base_sequence < 0)
    }
}

/// `sequence + increment`, wrapping past `i32::MAX` to 0 (Kafka's `incrementSequence`).
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    debug_assert!(sequence >= 0 && increment >= 0, "sequences and deltas are non-negative");
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// True if `next` directly follows `last`.
fn in_sequence(last: i32, next: i32) -> bool {
    next == increment_sequence(last, 1)
}

/// One retained batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMetadata {
    base_sequence: i32,
    last_sequence: i32,
    base_offset: Offset,
    last_offset: Offset,
}

/// One producer's state on the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    producer_epoch: ProducerEpoch,
    /// The last batches of `producer_epoch`, oldest first; never empty, at most
    /// [`BATCHES_RETAINED_MAX`].
    batches: VecDeque<BatchMetadata>,
    /// The newest batch timestamp seen.
    last_timestamp_ms: i64,
}

impl ProducerEntry {
    fn last(&self) -> &BatchMetadata {
        self.batches.back().expect("a producer entry retains at least one batch")
    }

    fn duplicate_of(&self, batch: &ProducerBatch) -> Option<&BatchMetadata> {
        if batch.producer_epoch != self.producer_epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|kept| kept.base_sequence == batch.base_sequence && kept.last_sequence == batch.last_sequence)
    }

    fn push(&mut self, batch: &ProducerBatch) {
        if batch.producer_epoch != self.producer_epoch {
            self.producer_epoch = batch.producer_epoch;
            self.batches.clear();
        }
        self.batches.push_back(BatchMetadata {
            base_sequence: batch.base_sequence,
            last_sequence: batch.last_sequence,
            base_offset: batch.base_offset,
            last_offset: batch.last_offset,
        });
        while self.batches.len() > BATCHES_RETAINED_MAX {
            let _ = self.batches.pop_front();
        }
        self.last_timestamp_ms = self.last_timestamp_ms.max(batch.max_timestamp_ms);
    }
}

/// What the leader does with a produce's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append them.
    Append,
    /// A batch was already appended: answer with its original offsets, append nothing.
    Duplicate {
        /// The original batch's first offset.
        base_offset: Offset,
        /// The original batch's last offset.
        last_offset: Offset,
    },
}

/// Why the leader refuses an idempotent batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The producer was fenced by a newer epoch of the same id.
    #[error("producer {producer_id} epoch {producer_epoch} is older than the current epoch {current_epoch}")]
    InvalidProducerEpoch {
        /// The producer.
        producer_id: ProducerId,
        /// The batch's epoch.
        producer_epoch: ProducerEpoch,
        /// The epoch the partition has seen.
        current_epoch: ProducerEpoch,
    },
    /// The batch does not continue the producer's sequence: a batch before it was lost (or
    /// this one is a retry of a batch older than the retained window).
    #[error("producer {producer_id} epoch {producer_epoch}: sequence {base_sequence} does not follow {last_sequence}")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: ProducerId,
        /// The batch's epoch.
        producer_epoch: ProducerEpoch,
        /// The batch's first sequence.
        base_sequence: i32,
        /// The last sequence the partition holds for this producer (-1 when a new epoch did
        /// not start at 0).
        last_sequence: i32,
    },
}

impl SequenceError {
    /// The Kafka error code this refusal answers with.
    pub fn error_code(&self) -> i16 {
        match self {
            SequenceError::InvalidProducerEpoch { .. } => INVALID_PRODUCER_EPOCH,
            SequenceError::OutOfOrderSequence { .. } => OUT_OF_ORDER_SEQUENCE_NUMBER,
        }
    }
}

/// Every idempotent producer's state on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: BTreeMap<ProducerId, ProducerEntry>,
    /// `producer.id.expiration.ms`.
    expiration_ms: i64,
    /// Planted bug: `check` passes everything, so retries are appended again.
    #[cfg(feature = "planted-bugs")]
    planted_skip_sequence_check: bool,
}

impl ProducerStateTable {
    /// An empty table whose producers expire `expiration_ms` after their last batch.
    pub fn new(expiration_ms: i64) -> ProducerStateTable {
        assert!(expiration_ms > 0, "producer.id.expiration.ms must be positive");
        ProducerStateTable {
            producers: BTreeMap::new(),
            expiration_ms,
            #[cfg(feature = "planted-bugs")]
            planted_skip_sequence_check: false,
        }
    }

    /// Plants the bug of skipping the sequence check (and with it deduplication), which the
    /// simulator's duplicate check must catch.
    #[cfg(feature = "planted-bugs")]
    #[must_use]
    pub fn with_planted_skip_sequence_check(mut self, planted: bool) -> ProducerStateTable {
        self.planted_skip_sequence_check = planted;
        self
    }

    /// `producer.id.expiration.ms`.
    pub fn expiration_ms(&self) -> i64 {
        self.expiration_ms
    }

    /// True if the batch of `producer_id` starting at `base_offset` is one the table retains
    /// (one of the producer's last batches): the log cleaner keeps such a batch, emptied of
    /// its records if need be, so a table rebuilt from the log still knows the producer.
    pub fn retains(&self, producer_id: ProducerId, base_offset: Offset) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|entry| entry.batches.iter().any(|kept| kept.base_offset == base_offset))
    }

    /// Producers known (expired ones included until [`ProducerStateTable::remove_expired`]).
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    fn is_expired(&self, entry: &ProducerEntry, now_ms: i64) -> bool {
        now_ms.saturating_sub(entry.last_timestamp_ms) >= self.expiration_ms
    }

    /// The epoch and last sequence the table holds for `producer_id` (for tests and tools).
    pub fn last_sequence(&self, producer_id: ProducerId) -> Option<(ProducerEpoch, i32)> {
        self.producers.get(&producer_id).map(|entry| (entry.producer_epoch, entry.last().last_sequence))
    }

    /// Checks a produce's batches, in order, as the leader must before appending them
    /// (see the module docs for the rules). Batches without a producer id pass. Later
    /// batches are checked as if the earlier ones were appended; the first duplicate decides
    /// the answer, as in Kafka.
    ///
    /// # Errors
    /// The first batch that breaks a rule.
    pub fn check(&self, batches: &[ProducerBatch], now_ms: i64) -> Result<SequenceCheck, SequenceError> {
        #[cfg(feature = "planted-bugs")]
        if self.planted_skip_sequence_check {
            return Ok(SequenceCheck::Append);
        }
        // Entries as the earlier batches of this produce would leave them.
        let mut pending: BTreeMap<ProducerId, ProducerEntry> = BTreeMap::new();
        for batch in batches {
            let entry = pending
                .get(&batch.producer_id)
                .or_else(|| self.producers.get(&batch.producer_id).filter(|entry| !self.is_expired(entry, now_ms)));
            if let Some(entry) = entry {
                if let Some(original) = entry.duplicate_of(batch) {
                    return Ok(SequenceCheck::Duplicate {
                        base_offset: original.base_offset,
                        last_offset: original.last_offset,
                    });
                }
                check_sequence(entry, batch)?;
            }
            let mut updated = entry.cloned().unwrap_or_else(|| ProducerEntry {
                producer_epoch: batch.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp_ms: batch.max_timestamp_ms,
            });
            updated.push(batch);
            let _ = pending.insert(batch.producer_id, updated);
        }
        Ok(SequenceCheck::Append)
    }

    /// Folds in a batch as stored in the log (offsets assigned). No checks: the leader
    /// checked it, or it is the leader's and this replica copies it.
    pub fn apply(&mut self, batch: &ProducerBatch) {
        match self.producers.get_mut(&batch.producer_id) {
            Some(entry) => entry.push(batch),
            None => {
                let mut entry = ProducerEntry {
                    producer_epoch: batch.producer_epoch,
                    batches: VecDeque::new(),
                    last_timestamp_ms: batch.max_timestamp_ms,
                };
                entry.push(batch);
                let _ = self.producers.insert(batch.producer_id, entry);
            }
        }
    }

    /// The retained batches of every producer whose batches all lie below `offset`, oldest
    /// first, each stamped with its producer's last activity: what a log must keep aside when
    /// it deletes those batches, so a restart (which rebuilds the table from the batches the
    /// log holds) does not forget the producers. Applying them to an empty table restores
    /// those entries exactly.
    pub fn producers_below(&self, offset: Offset) -> Vec<ProducerBatch> {
        self.producers
            .iter()
            .filter(|(_, entry)| entry.last().last_offset < offset)
            .flat_map(|(producer_id, entry)| {
                entry.batches.iter().map(move |kept| ProducerBatch {
                    producer_id: *producer_id,
                    producer_epoch: entry.producer_epoch,
                    base_sequence: kept.base_sequence,
                    last_sequence: kept.last_sequence,
                    base_offset: kept.base_offset,
                    last_offset: kept.last_offset,
                    max_timestamp_ms: entry.last_timestamp_ms,
                })
            })
            .collect()
    }

    /// Forgets producers idle for `producer.id.expiration.ms` or longer; returns how many.
    pub fn remove_expired(&mut self, now_ms: i64) -> usize {
        let before = self.producers.len();
        let expiration_ms = self.expiration_ms;
        self.producers.retain(|_, entry| now_ms.saturating_sub(entry.last_timestamp_ms) < expiration_ms);
        before - self.producers.len()
    }
}

/// Rules 2-4 of the module docs, for a producer the table knows.
fn check_sequence(entry: &ProducerEntry, batch: &ProducerBatch) -> Result<(), SequenceError> {
    if batch.producer_epoch < entry.producer_epoch {
        return Err(SequenceError::InvalidProducerEpoch {
            producer_id: batch.producer_id,
            producer_epoch: batch.producer_epoch,
            current_epoch: entry.producer_epoch,
        });
    }
    if batch.producer_epoch > entry.producer_epoch {
        if batch.base_sequence != 0 {
            return Err(SequenceError::OutOfOrderSequence {
                producer_id: batch.producer_id,
                producer_epoch: batch.producer_epoch,
                base_sequence: batch.base_sequence,
                last_sequence: -1,
            });
        }
        return Ok(());
    }
    let last_sequence = entry.last().last_sequence;
    if !in_sequence(last_sequence, batch.base_sequence) {
        return Err(SequenceError::OutOfOrderSequence {
            producer_id: batch.producer_id,
            producer_epoch: batch.producer_epoch,
            base_sequence: batch.base_sequence,
            last_sequence,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
