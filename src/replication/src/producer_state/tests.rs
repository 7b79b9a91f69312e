use proptest::prelude::*;

use super::*;

const DAY_MS: i64 = PRODUCER_ID_EXPIRATION_MS_DEFAULT;

fn batch(producer_id: i64, epoch: i16, base_sequence: i32, records: i32, base_offset: i64) -> ProducerBatch {
    ProducerBatch {
        producer_id: ProducerId(producer_id),
        producer_epoch: ProducerEpoch(epoch),
        base_sequence,
        last_sequence: increment_sequence(base_sequence, records - 1),
        base_offset: Offset(base_offset),
        last_offset: Offset(base_offset + i64::from(records) - 1),
        max_timestamp_ms: 1_000,
    }
}

/// Checks and, when told to append, applies at `log_end`; returns the answer's offsets.
fn produce(table: &mut ProducerStateTable, log_end: &mut i64, b: ProducerBatch) -> Result<(i64, i64), SequenceError> {
    match table.check(&[b], 1_000)? {
        SequenceCheck::Duplicate { base_offset, last_offset } => Ok((base_offset.0, last_offset.0)),
        SequenceCheck::Append => {
            let records = b.last_offset.0 - b.base_offset.0 + 1;
            let stored =
                ProducerBatch { base_offset: Offset(*log_end), last_offset: Offset(*log_end + records - 1), ..b };
            table.apply(&stored);
            *log_end += records;
            Ok((stored.base_offset.0, stored.last_offset.0))
        }
    }
}

#[test]
fn a_new_producer_may_start_anywhere_then_must_follow_on() {
    let mut table = ProducerStateTable::new(DAY_MS);
    let mut end = 0;
    assert_eq!(produce(&mut table, &mut end, batch(7, 0, 42, 3, 0)), Ok((0, 2)));
    assert_eq!(table.last_sequence(ProducerId(7)), Some((ProducerEpoch(0), 44)));
    assert_eq!(produce(&mut table, &mut end, batch(7, 0, 45, 1, 0)), Ok((3, 3)));
    let gap = produce(&mut table, &mut end, batch(7, 0, 47, 1, 0)).unwrap_err();
    assert_eq!(gap.error_code(), OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_eq!(end, 4, "a refused batch appends nothing");
}

#[test]
fn a_retry_gets_the_original_offsets() {
    let mut table = ProducerStateTable::new(DAY_MS);
    let mut end = 10;
    assert_eq!(produce(&mut table, &mut end, batch(1, 0, 0, 5, 0)), Ok((10, 14)));
    assert_eq!(produce(&mut table, &mut end, batch(1, 0, 5, 5, 0)), Ok((15, 19)));
    assert_eq!(produce(&mut table, &mut end, batch(1, 0, 0, 5, 0)), Ok((10, 14)));
    assert_eq!(produce(&mut table, &mut end, batch(1, 0, 5, 5, 0)), Ok((15, 19)));
    assert_eq!(end, 20);
}

#[test]
fn only_the_last_five_batches_are_deduplicated() {
    let mut table = ProducerStateTable::new(DAY_MS);
    let mut end = 0;
    for sequence in 0..6 {
        assert!(produce(&mut table, &mut end, batch(1, 0, sequence, 1, 0)).is_ok());
    }
    // Sequence 0 fell out of the window: a retry of it is out of order, not a duplicate.
    let old = produce(&mut table, &mut end, batch(1, 0, 0, 1, 0)).unwrap_err();
    assert!(matches!(old, SequenceError::OutOfOrderSequence { last_sequence: 5, .. }));
    assert_eq!(produce(&mut table, &mut end, batch(1, 0, 1, 1, 0)), Ok((1, 1)));
}

#[test]
fn epochs_fence_older_producers_and_restart_sequences() {
    let mut table = ProducerStateTable::new(DAY_MS);
    let mut end = 0;
    assert!(produce(&mut table, &mut end, batch(3, 1, 0, 2, 0)).is_ok());
    let fenced = produce(&mut table, &mut end, batch(3, 0, 2, 1, 0)).unwrap_err();
    assert_eq!(fenced.error_code(), INVALID_PRODUCER_EPOCH);
    let not_zero = produce(&mut table, &mut end, batch(3, 2, 5, 1, 0)).unwrap_err();
    assert!(matches!(not_zero, SequenceError::OutOfOrderSequence { last_sequence: -1, .. }));
    assert_eq!(produce(&mut table, &mut end, batch(3, 2, 0, 1, 0)), Ok((2, 2)));
    // The old epoch's batches are no longer duplicates.
    assert!(produce(&mut table, &mut end, batch(3, 1, 0, 2, 0)).is_err());
}

#[test]
fn sequences_wrap_after_i32_max() {
    assert_eq!(increment_sequence(i32::MAX, 1), 0);
    assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    let mut table = ProducerStateTable::new(DAY_MS);
    let mut end = 0;
    assert!(produce(&mut table, &mut end, batch(1, 0, i32::MAX - 1, 2, 0)).is_ok());
    assert_eq!(produce(&mut table, &mut end, batch(1, 0, 0, 1, 0)), Ok((2, 2)));
}

#[test]
fn expired_producers_are_forgotten() {
    let mut table = ProducerStateTable::new(1_000);
    let mut end = 0;
    assert!(produce(&mut table, &mut end, batch(1, 0, 0, 1, 0)).is_ok());
    assert!(produce(&mut table, &mut end, batch(2, 0, 0, 1, 0)).is_ok());
    // Past expiry the table accepts any sequence from producer 1 (its entry is stale).
    assert_eq!(table.check(&[batch(1, 0, 9, 1, 0)], 2_000), Ok(SequenceCheck::Append));
    assert_eq!(table.remove_expired(1_999), 0);
    assert_eq!(table.remove_expired(2_000), 2);
}

#[test]
fn producers_below_an_offset_restore_exactly() {
    let mut table = ProducerStateTable::new(DAY_MS);
    let mut end = 0;
    for sequence in 0..7 {
        assert!(produce(&mut table, &mut end, batch(1, 2, sequence, 1, 0)).is_ok());
    }
    assert!(produce(&mut table, &mut end, batch(2, 0, 0, 3, 0)).is_ok());
    // Producer 2's batch ends at offset 9: only producer 1 lies wholly below 8.
    let kept = table.producers_below(Offset(8));
    assert_eq!(kept.len(), BATCHES_RETAINED_MAX);
    let mut restored = ProducerStateTable::new(DAY_MS);
    for batch in &kept {
        restored.apply(batch);
    }
    assert_eq!(restored.last_sequence(ProducerId(1)), table.last_sequence(ProducerId(1)));
    assert_eq!(
        restored.check(&[batch(1, 2, 3, 1, 0)], 1_000),
        Ok(SequenceCheck::Duplicate { base_offset: Offset(3), last_offset: Offset(3) })
    );
    assert_eq!(restored.last_sequence(ProducerId(2)), None);
}

#[test]
fn batches_of_one_produce_are_checked_as_a_run() {
    let table = ProducerStateTable::new(DAY_MS);
    let run = [batch(1, 0, 0, 2, 0), batch(1, 0, 2, 2, 0)];
    assert_eq!(table.check(&run, 1_000), Ok(SequenceCheck::Append));
    let gap = [batch(1, 0, 0, 2, 0), batch(1, 0, 3, 1, 0)];
    assert!(table.check(&gap, 1_000).is_err());
}

#[test]
fn headers_without_a_producer_are_not_idempotent() {
    let mut header = protocol::batch::BatchHeader {
        base_offset: Offset(4),
        batch_length: 0,
        partition_leader_epoch: protocol::ids::LeaderEpoch(0),
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: 2,
        base_timestamp: 0,
        max_timestamp: 5,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count: 3,
    };
    assert_eq!(ProducerBatch::from_header(&header), None);
    assert!(!ProducerBatch::is_malformed(&header));
    header.producer_id = 9;
    assert!(ProducerBatch::is_malformed(&header));
    header.producer_epoch = 0;
    header.base_sequence = 10;
    let parsed = ProducerBatch::from_header(&header).unwrap();
    assert_eq!((parsed.last_sequence, parsed.last_offset), (12, Offset(6)));
}

proptest! {
    /// A producer with up to five batches in flight, whose sends are delivered late, lost or
    /// repeated in any order: every sequence lands in the log exactly once, in order, and a
    /// repeated send gets the offsets of its first landing.
    #[test]
    fn retries_land_exactly_once_in_order(actions in proptest::collection::vec((0usize..5, any::<bool>()), 1..200)) {
        let mut table = ProducerStateTable::new(DAY_MS);
        let mut end = 0i64;
        let mut log: Vec<i32> = Vec::new();
        // Batches sent (sequence -> offsets once acknowledged), the producer's next sequence.
        let mut next_sequence = 0i32;
        let mut acked: Vec<Option<(i64, i64)>> = Vec::new();
        let mut landed_at: Vec<Option<(i64, i64)>> = Vec::new();
        for (pick, send_new) in actions {
            let unacked: Vec<usize> = (0..acked.len()).filter(|i| acked[*i].is_none()).collect();
            let sequence = if (send_new && unacked.len() < BATCHES_RETAINED_MAX) || unacked.is_empty() {
                next_sequence += 1;
                acked.push(None);
                landed_at.push(None);
                next_sequence - 1
            } else {
                // Retry an unacknowledged batch (a later one may overtake an earlier one).
                let index = unacked[pick % unacked.len()];
                i32::try_from(index).unwrap()
            };
            let index = usize::try_from(sequence).unwrap();
            match produce(&mut table, &mut end, batch(1, 0, sequence, 1, 0)) {
                Ok(offsets) => {
                    if landed_at[index].is_none() {
                        landed_at[index] = Some(offsets);
                        log.push(sequence);
                    }
                    prop_assert_eq!(Some(offsets), landed_at[index]);
                    acked[index] = Some(offsets);
                }
                Err(error) => prop_assert_eq!(error.error_code(), OUT_OF_ORDER_SEQUENCE_NUMBER),
            }
        }
        prop_assert_eq!(end, i64::try_from(log.len()).unwrap());
        for (position, sequence) in log.iter().enumerate() {
            prop_assert_eq!(usize::try_from(*sequence).unwrap(), position, "in order, no gaps, no repeats");
        }
    }
}
