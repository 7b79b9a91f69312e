//! Log reconciliation by leader epoch (KIP-101, with the KIP-279 iteration): where a follower
//! cuts its log so that it is a prefix of the leader's, and the leader's side of the check
//! (the diverging-epoch answer of Fetch v12+).
//!
//! A follower never truncates to its high watermark: it asks the leader where its latest
//! epoch ends in the leader's log and cuts there. Entries of an epoch the leader does not know
//! cannot be in the leader's log, so they go too, and the question is asked again for the
//! follower's largest epoch below the leader's answer.

use protocol::ids::{LeaderEpoch, Offset};

use crate::epoch_cache::{EpochEnd, LeaderEpochCache, UNDEFINED_EPOCH};

/// What a follower does with the leader's [`EpochEnd`] for the epoch it asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// Truncate to this offset (the log end offset when nothing diverges), then fetch from it.
    To(Offset),
    /// Truncate to `offset` (everything after belongs to epochs the leader does not have),
    /// then ask the leader again about `epoch`.
    ToThenAsk {
        /// Where to cut now.
        offset: Offset,
        /// The epoch to ask about next.
        epoch: LeaderEpoch,
    },
    /// The leader has nothing at or below any epoch this log holds: empty the log and fetch
    /// from its log start offset.
    Fully,
}

/// The follower's decision, given its epoch cache, its log end offset and the leader's
/// answer about the epoch it asked.
pub fn resolve(cache: &LeaderEpochCache, log_end_offset: Offset, leader: EpochEnd) -> Truncation {
    if leader.epoch == UNDEFINED_EPOCH {
        return Truncation::Fully;
    }
    let own = cache.end_offset_for(leader.epoch, log_end_offset);
    if own.epoch == UNDEFINED_EPOCH {
        // Every epoch here is above the leader's answer, so unknown to the leader.
        return Truncation::Fully;
    }
    if own.epoch == leader.epoch {
        return Truncation::To(leader.end_offset.min(own.end_offset).min(log_end_offset));
    }
    // This log never saw the leader's epoch: what follows our largest epoch below it was
    // written by epochs the leader does not have.
    let offset = own.end_offset.min(log_end_offset);
    Truncation::ToThenAsk { offset, epoch: own.epoch }
}

/// The leader's check of a fetch carrying `last_fetched_epoch` (Fetch v12+): `Some` with the
/// leader's end of that epoch when the follower's log diverges (the epoch is unknown here, or
/// ends before the fetch offset), `None` when the fetch may proceed. No epoch, no check.
pub fn diverging_epoch(
    cache: &LeaderEpochCache,
    log_end_offset: Offset,
    fetch_offset: Offset,
    last_fetched_epoch: LeaderEpoch,
) -> Option<EpochEnd> {
    if last_fetched_epoch.0 < 0 {
        return None;
    }
    let answer = cache.end_offset_for(last_fetched_epoch, log_end_offset);
    (answer.epoch != last_fetched_epoch || answer.end_offset < fetch_offset).then_some(answer)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A log as the epoch of each offset, from offset 0.
    type Log = Vec<i32>;

    fn cache_of(log: &Log) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::new();
        for (offset, epoch) in log.iter().enumerate() {
            let _ = cache.assign(LeaderEpoch(*epoch), Offset(offset as i64));
        }
        cache
    }

    /// Runs the follower's loop against the leader to its end: the offset it keeps.
    fn reconcile(follower: &Log, leader: &Log) -> usize {
        let leader_cache = cache_of(leader);
        let mut kept = follower.clone();
        let mut ask = kept.last().map(|epoch| LeaderEpoch(*epoch));
        for _ in 0..=follower.len() + 1 {
            let Some(epoch) = ask else { return 0 };
            let answer = leader_cache.end_offset_for(epoch, Offset(leader.len() as i64));
            match resolve(&cache_of(&kept), Offset(kept.len() as i64), answer) {
                Truncation::To(offset) => return offset.0 as usize,
                Truncation::ToThenAsk { offset, epoch } => {
                    kept.truncate(offset.0 as usize);
                    ask = Some(epoch);
                }
                Truncation::Fully => return 0,
            }
        }
        panic!("the iteration did not end: follower {follower:?} leader {leader:?}");
    }

    #[test]
    fn a_follower_cuts_where_its_epoch_ends_on_the_leader() {
        // Same epochs, the follower has an extra uncommitted tail of epoch 2.
        assert_eq!(reconcile(&vec![1, 1, 2, 2, 2], &vec![1, 1, 2, 2, 3]), 4);
        // The follower's epoch 3 never reached the leader, which went 2 -> 4.
        assert_eq!(reconcile(&vec![1, 2, 2, 3, 3], &vec![1, 2, 4, 4]), 2);
        // KIP-279: the leader's answer (epoch 2) is unknown to the follower, which cuts its
        // epoch 3 and asks again about epoch 1.
        assert_eq!(reconcile(&vec![1, 1, 3, 3], &vec![1, 2, 2, 4]), 1);
        // Nothing in common.
        assert_eq!(reconcile(&vec![5, 5], &vec![1, 6]), 0);
        assert_eq!(reconcile(&vec![], &vec![1, 1]), 0);
        // Identical logs keep everything.
        assert_eq!(reconcile(&vec![1, 2, 3], &vec![1, 2, 3]), 3);
    }

    #[test]
    fn the_leader_flags_a_fetch_whose_epoch_diverges() {
        let leader = cache_of(&vec![1, 1, 3, 3]);
        let end = Offset(4);
        assert_eq!(diverging_epoch(&leader, end, Offset(2), LeaderEpoch(1)), None);
        assert_eq!(diverging_epoch(&leader, end, Offset(4), LeaderEpoch(3)), None);
        assert_eq!(diverging_epoch(&leader, end, Offset(3), UNDEFINED_EPOCH), None);
        // Epoch 2 never wrote here: answer with epoch 1's end.
        assert_eq!(
            diverging_epoch(&leader, end, Offset(3), LeaderEpoch(2)),
            Some(EpochEnd { epoch: LeaderEpoch(1), end_offset: Offset(2) })
        );
        // Epoch 1 ends at 2 here, the follower has more of it.
        assert_eq!(
            diverging_epoch(&leader, end, Offset(3), LeaderEpoch(1)),
            Some(EpochEnd { epoch: LeaderEpoch(1), end_offset: Offset(2) })
        );
    }

    /// Two logs that share a prefix and then go their own ways, as after leader changes:
    /// every epoch in either tail is written by one leader only, and epochs increase along
    /// each log.
    fn diverged() -> impl Strategy<Value = (Log, Log)> {
        (
            proptest::collection::vec(1i32..3, 0..6),
            proptest::collection::vec(1usize..4, 0..4),
            proptest::collection::vec(1usize..4, 0..4),
            proptest::bool::ANY,
        )
            .prop_map(|(prefix_bumps, follower_runs, leader_runs, leader_first)| {
                let mut prefix = Vec::new();
                let mut epoch = 0;
                for bump in prefix_bumps {
                    epoch += bump - 1;
                    prefix.push(epoch);
                }
                // Tails take turns at fresh epochs, so no epoch appears in both tails.
                let (mut follower, mut leader) = (prefix.clone(), prefix);
                let mut next = epoch + 1;
                let mut runs: Vec<(bool, usize)> = Vec::new();
                let (mut f, mut l) = (follower_runs.into_iter(), leader_runs.into_iter());
                let mut turn = leader_first;
                loop {
                    let run = if turn { l.next().map(|n| (true, n)) } else { f.next().map(|n| (false, n)) };
                    match run {
                        Some(run) => runs.push(run),
                        None => {
                            let rest = if turn { f.next().map(|n| (false, n)) } else { l.next().map(|n| (true, n)) };
                            match rest {
                                Some(run) => runs.push(run),
                                None => break,
                            }
                        }
                    }
                    turn = !turn;
                }
                for (to_leader, length) in runs {
                    let log = if to_leader { &mut leader } else { &mut follower };
                    log.extend(std::iter::repeat_n(next, length));
                    next += 1;
                }
                (follower, leader)
            })
    }

    proptest! {
        /// The follower keeps exactly the longest common prefix of the two logs.
        #[test]
        fn reconciliation_keeps_exactly_the_common_prefix((follower, leader) in diverged()) {
            let common = follower.iter().zip(&leader).take_while(|(a, b)| a == b).count();
            prop_assert_eq!(reconcile(&follower, &leader), common, "follower {:?} leader {:?}", follower, leader);
        }
    }
}
