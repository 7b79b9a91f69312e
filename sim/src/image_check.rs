//! Brokers' metadata images against the committed log.
//!
//! The checker folds the committed metadata log itself (entries arrive as the controllers
//! apply them; the first to apply an index defines it, and [`crate::quorum_check`] flags any
//! controller that applies something else there) and remembers the image's hash after every
//! index. A broker reports its image each time it applied a batch; it must equal the
//! checker's image at that index:
//!
//! * `broker-image-diverged`: a broker's image at index `i` is not the fold of the committed
//!   entries `1..=i` (it skipped, reordered or invented a change);
//! * `broker-image-went-back`: within one incarnation, a broker reported a lower index than
//!   before (its image moved back in the log).
//!
//! Every committed image must also keep the partition invariants
//! (`partition-invariant-broken`): the ISR is a nonempty subset of the replicas, and the ELR a
//! subset of the other replicas; a leader is an ISR member and an unfenced broker; a partition
//! has no leader only while no ISR or ELR member is unfenced (else an election was missed).
//!
//! A broker may report an index the checker has not seen committed yet only if a controller
//! applied it in between (the observers are called in the same simulated instant); such
//! reports wait until the index is known, and any still waiting at the end are violations.

use std::collections::BTreeMap;

use bytes::Bytes;
use metadata::image::MetadataImage;

use crate::trace::fnv1a;

/// FNV-1a offset basis.
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// The hash the checker compares images by.
pub fn image_hash(image: &MetadataImage) -> u64 {
    fnv1a(FNV_BASIS, &image.to_snapshot())
}

/// What is wrong with the image's partitions, one line each.
pub fn partition_invariants(image: &MetadataImage) -> Vec<String> {
    let mut broken = Vec::new();
    for topic in image.topics() {
        for (partition, state) in &topic.partitions {
            let name = format!("{}-{partition}", topic.name);
            if state.isr.is_empty() || state.isr.iter().any(|member| !state.replicas.contains(member)) {
                broken.push(format!(
                    "{name}: ISR {:?} is not a nonempty subset of replicas {:?}",
                    state.isr, state.replicas
                ));
            }
            if state.elr.iter().any(|member| state.isr.contains(member) || !state.replicas.contains(member)) {
                broken.push(format!(
                    "{name}: ELR {:?} overlaps the ISR {:?} or holds a non-replica of {:?}",
                    state.elr, state.isr, state.replicas
                ));
            }
            if state.leader.0 >= 0 {
                if !state.isr.contains(&state.leader) {
                    broken.push(format!("{name}: leader {} is not in the ISR {:?}", state.leader.0, state.isr));
                }
                if !image.is_unfenced(state.leader) {
                    broken.push(format!("{name}: leader {} is fenced or unregistered", state.leader.0));
                }
            } else if let Some(live) = state.isr.iter().chain(&state.elr).find(|member| image.is_unfenced(**member)) {
                broken.push(format!("{name}: no leader although ISR or ELR member {} is unfenced", live.0));
            }
        }
    }
    broken
}

/// The checker's state.
#[derive(Debug, Default)]
pub struct ImageCheck {
    /// The fold of the committed entries up to `reference_index`.
    reference: MetadataImage,
    reference_index: u64,
    /// Entries that arrived ahead of the fold (applied out of order somewhere).
    ahead: BTreeMap<u64, Bytes>,
    /// Index -> hash of the committed image after it.
    hashes: BTreeMap<u64, u64>,
    /// Broker -> last index it reported in its current incarnation.
    positions: BTreeMap<u64, u64>,
    /// Reports past the fold: (broker, index, image hash).
    waiting: Vec<(u64, u64, u64)>,
    /// Reports checked.
    checked: u64,
    violations: Vec<String>,
}

impl ImageCheck {
    /// An empty checker (the committed log starts empty).
    pub fn new() -> ImageCheck {
        let mut check = ImageCheck::default();
        let _ = check.hashes.insert(0, image_hash(&check.reference));
        check
    }

    /// A controller applied the committed entry at `index` (empty `data` for entries that
    /// carry no records).
    pub fn committed(&mut self, index: u64, data: &Bytes) {
        if index <= self.reference_index {
            return;
        }
        let _ = self.ahead.entry(index).or_insert_with(|| data.clone());
        while let Some(data) = self.ahead.remove(&(self.reference_index + 1)) {
            // The same fold as the controllers and brokers: entries that do not apply are
            // skipped by all.
            if !data.is_empty() {
                let _ = self.reference.apply_entry(&data);
            }
            self.reference_index += 1;
            let _ = self.hashes.insert(self.reference_index, image_hash(&self.reference));
            for broken in partition_invariants(&self.reference) {
                self.violations
                    .push(format!("partition-invariant-broken: at index {}: {broken}", self.reference_index));
            }
        }
        let waiting = std::mem::take(&mut self.waiting);
        for (broker, index, hash) in waiting {
            self.compare(broker, index, hash);
        }
    }

    /// `broker` (re)started with an empty image.
    pub fn restarted(&mut self, broker: u64) {
        let _ = self.positions.insert(broker, 0);
    }

    /// `broker` applied the log up to `index`, and its image hashes to `hash`.
    pub fn broker_image(&mut self, broker: u64, index: u64, hash: u64) {
        let position = self.positions.get(&broker).copied().unwrap_or(0);
        if index < position {
            self.violations.push(format!(
                "broker-image-went-back: broker {broker} reported its image at index {index} after index {position}"
            ));
        }
        let _ = self.positions.insert(broker, index);
        self.compare(broker, index, hash);
    }

    fn compare(&mut self, broker: u64, index: u64, hash: u64) {
        match self.hashes.get(&index) {
            None => self.waiting.push((broker, index, hash)),
            Some(expected) if *expected == hash => self.checked += 1,
            Some(expected) => self.violations.push(format!(
                "broker-image-diverged: broker {broker}'s image at index {index} hashes to {hash:016x}, the committed log's to {expected:016x}"
            )),
        }
    }

    /// The committed image folded so far, and its index.
    pub fn reference(&self) -> (&MetadataImage, u64) {
        (&self.reference, self.reference_index)
    }

    /// Broker reports checked against the committed log.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Every violation so far, plus reports of indexes that were never committed.
    pub fn violations(&self) -> Vec<String> {
        let mut violations = self.violations.clone();
        for (broker, index, _) in &self.waiting {
            violations.push(format!(
                "broker-image-diverged: broker {broker} reported an image at index {index}, past everything committed ({})",
                self.reference_index
            ));
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use metadata::record::{encode_batch, ConfigResource, MetadataRecord};
    use protocol::ids::NodeId;

    use super::*;

    fn entry(value: &str) -> Bytes {
        encode_batch(&[MetadataRecord::Config {
            resource: ConfigResource::Broker(NodeId(1)),
            name: "weir.test".to_owned(),
            value: Some(value.to_owned()),
        }])
        .into()
    }

    /// The image a correct follower holds after applying `entries`.
    fn folded(entries: &[Bytes]) -> u64 {
        let mut image = MetadataImage::default();
        for data in entries {
            image.apply_entry(data).expect("applies");
        }
        image_hash(&image)
    }

    #[test]
    fn prefixes_pass_and_skipped_or_backward_images_are_found() {
        let log = [entry("a"), entry("b"), entry("c")];
        let mut check = ImageCheck::new();
        check.restarted(7);
        // A broker may be ahead of the checker's fold for a moment.
        check.committed(1, &log[0]);
        check.broker_image(7, 2, folded(&log[..2]));
        check.committed(3, &log[2]);
        check.committed(2, &log[1]);
        check.broker_image(7, 3, folded(&log));
        check.restarted(7);
        check.broker_image(7, 1, folded(&log[..1]));
        assert!(check.violations().is_empty(), "{:?}", check.violations());
        assert_eq!(check.checked(), 3);

        let mut skipped = ImageCheck::new();
        for (index, data) in log.iter().enumerate() {
            skipped.committed(index as u64 + 1, data);
        }
        skipped.broker_image(7, 3, folded(&[log[0].clone(), log[2].clone()]));
        assert!(skipped.violations()[0].starts_with("broker-image-diverged"), "{:?}", skipped.violations());

        let mut back = ImageCheck::new();
        back.committed(1, &log[0]);
        back.broker_image(7, 1, folded(&log[..1]));
        back.broker_image(7, 0, folded(&[]));
        assert!(back.violations()[0].starts_with("broker-image-went-back"), "{:?}", back.violations());

        let mut invented = ImageCheck::new();
        invented.broker_image(7, 5, folded(&log));
        assert!(invented.violations()[0].starts_with("broker-image-diverged"), "{:?}", invented.violations());
    }
}
