//! The partition assignors the group leader runs (in the client, as in Kafka): `range`,
//! `roundrobin`, `sticky` and `cooperative-sticky`, under Kafka's protocol names so a group
//! can mix weir's consumers with Java, librdkafka or kafka-python ones.
//!
//! * `range`: per topic, the members subscribed to it (by member id) take contiguous ranges;
//!   the first `partitions % members` take one more.
//! * `roundrobin`: every partition (by topic, then index) goes to the next member, in member
//!   id order, that subscribes to its topic.
//! * `sticky`: each member keeps the partitions it owns (from its subscription's owned
//!   partitions) where that stays balanced; the rest go to the least loaded eligible member,
//!   and partitions move from a member with two more than another eligible one until no such
//!   pair remains.
//! * `cooperative-sticky`: the sticky assignment, minus every partition that would change
//!   owner this round: its owner revokes it first, and the follow-up rebalance (which the
//!   owner starts after revoking) hands it over. So no partition ever has two owners.

use std::collections::{BTreeMap, BTreeSet};

use protocol::ids::TopicPartition;

use super::protocol::Subscription;

/// An assignor, by Kafka's protocol name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// `range`.
    Range,
    /// `roundrobin`.
    RoundRobin,
    /// `sticky` (eager).
    Sticky,
    /// `cooperative-sticky` (incremental, KIP-429).
    CooperativeSticky,
}

impl Assignor {
    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::Sticky => "sticky",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// The assignor of this name.
    pub fn from_name(name: &str) -> Option<Assignor> {
        [Assignor::Range, Assignor::RoundRobin, Assignor::Sticky, Assignor::CooperativeSticky]
            .into_iter()
            .find(|assignor| assignor.name() == name)
    }

    /// True for the incremental protocol: members keep their partitions across a rebalance
    /// and give up only those taken from them.
    pub fn cooperative(self) -> bool {
        self == Assignor::CooperativeSticky
    }

    /// Assigns the partitions of the subscribed topics (`partitions`: topic -> count) to the
    /// members.
    pub fn assign(
        self,
        members: &BTreeMap<String, Subscription>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut assignment: BTreeMap<String, Vec<TopicPartition>> =
            members.keys().map(|member| (member.clone(), Vec::new())).collect();
        match self {
            Assignor::Range => {
                for (topic, count) in partitions {
                    let subscribed: Vec<&String> =
                        members.iter().filter(|(_, s)| s.topics.contains(topic)).map(|(m, _)| m).collect();
                    if subscribed.is_empty() {
                        continue;
                    }
                    let per_member = *count / subscribed.len() as i32;
                    let extra = *count % subscribed.len() as i32;
                    let mut next = 0;
                    for (index, member) in subscribed.into_iter().enumerate() {
                        let take = per_member + i32::from((index as i32) < extra);
                        let owned = assignment.get_mut(member).expect("every member has an entry");
                        owned
                            .extend((next..next + take).map(|partition| TopicPartition::new(topic.clone(), partition)));
                        next += take;
                    }
                }
            }
            Assignor::RoundRobin => {
                let order: Vec<&String> = members.keys().collect();
                let mut cursor = 0;
                for (topic, count) in partitions {
                    for partition in 0..*count {
                        for step in 0..order.len() {
                            let member = order[(cursor + step) % order.len()];
                            if members[member].topics.contains(topic) {
                                assignment
                                    .get_mut(member)
                                    .expect("every member has an entry")
                                    .push(TopicPartition::new(topic.clone(), partition));
                                cursor = (cursor + step + 1) % order.len();
                                break;
                            }
                        }
                    }
                }
            }
            Assignor::Sticky | Assignor::CooperativeSticky => {
                assignment = sticky(members, partitions);
                if self == Assignor::CooperativeSticky {
                    for (member, owned) in &mut assignment {
                        owned.retain(|partition| {
                            members.iter().all(|(other, s)| other == member || !s.owned_partitions.contains(partition))
                        });
                    }
                }
            }
        }
        for owned in assignment.values_mut() {
            owned.sort();
        }
        assignment
    }
}

/// The balanced, sticky assignment (see the module docs).
fn sticky(
    members: &BTreeMap<String, Subscription>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let eligible = |member: &str, partition: &TopicPartition| {
        members[member].topics.contains(&partition.topic)
            && partitions.get(&partition.topic).is_some_and(|count| partition.partition.0 < *count)
    };
    let all: BTreeSet<TopicPartition> = partitions
        .iter()
        .filter(|(topic, _)| members.values().any(|s| s.topics.contains(topic)))
        .flat_map(|(topic, count)| (0..*count).map(move |partition| TopicPartition::new(topic.clone(), partition)))
        .collect();
    let mut owner: BTreeMap<TopicPartition, String> = BTreeMap::new();
    let mut assignment: BTreeMap<String, BTreeSet<TopicPartition>> =
        members.keys().map(|member| (member.clone(), BTreeSet::new())).collect();
    // Keep what members own, once each.
    for (member, subscription) in members {
        for partition in &subscription.owned_partitions {
            if all.contains(partition) && eligible(member, partition) && !owner.contains_key(partition) {
                let _ = owner.insert(partition.clone(), member.clone());
                let _ = assignment.get_mut(member).expect("entry").insert(partition.clone());
            }
        }
    }
    // A member above the balanced share gives up its excess first.
    let share = all.len().div_ceil(members.len().max(1));
    for (member, owned) in &mut assignment {
        while owned.len() > share {
            let last = owned.iter().next_back().cloned().expect("not empty");
            let _ = owned.remove(&last);
            if owner.get(&last) == Some(member) {
                let _ = owner.remove(&last);
            }
        }
    }
    // The rest go to the least loaded eligible member.
    for partition in &all {
        if owner.contains_key(partition) {
            continue;
        }
        let target = assignment
            .iter()
            .filter(|(member, _)| eligible(member, partition))
            .min_by_key(|(member, owned)| (owned.len(), (*member).clone()))
            .map(|(member, _)| member.clone());
        if let Some(target) = target {
            let _ = assignment.get_mut(&target).expect("entry").insert(partition.clone());
            let _ = owner.insert(partition.clone(), target);
        }
    }
    // Move partitions from a member with two more than an eligible one (bounded: each move
    // narrows the spread).
    for _ in 0..all.len() * members.len().max(1) {
        let mut moved = false;
        let loads: Vec<(String, usize)> = assignment.iter().map(|(m, o)| (m.clone(), o.len())).collect();
        'search: for (heavy, heavy_load) in &loads {
            for (light, light_load) in &loads {
                if heavy_load <= &(light_load + 1) {
                    continue;
                }
                let candidate = assignment[heavy].iter().find(|partition| eligible(light, partition)).cloned();
                if let Some(partition) = candidate {
                    let _ = assignment.get_mut(heavy).expect("entry").remove(&partition);
                    let _ = assignment.get_mut(light).expect("entry").insert(partition);
                    moved = true;
                    break 'search;
                }
            }
        }
        if !moved {
            break;
        }
    }
    assignment.into_iter().map(|(member, owned)| (member, owned.into_iter().collect())).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn members(specs: &[(&str, &[&str], &[(&str, i32)])]) -> BTreeMap<String, Subscription> {
        specs
            .iter()
            .map(|(member, topics, owned)| {
                (
                    (*member).to_owned(),
                    Subscription {
                        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
                        user_data: vec![],
                        owned_partitions: owned.iter().map(|(t, p)| TopicPartition::new(*t, *p)).collect(),
                    },
                )
            })
            .collect()
    }

    fn names(partitions: &[TopicPartition]) -> Vec<String> {
        partitions.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn range_gives_contiguous_ranges_per_topic() {
        let m = members(&[("a", &["t"], &[]), ("b", &["t"], &[])]);
        let out = Assignor::Range.assign(&m, &BTreeMap::from([("t".to_owned(), 5)]));
        assert_eq!(names(&out["a"]), ["t-0", "t-1", "t-2"]);
        assert_eq!(names(&out["b"]), ["t-3", "t-4"]);
    }

    #[test]
    fn roundrobin_deals_partitions_in_turn() {
        let m = members(&[("a", &["t", "u"], &[]), ("b", &["t", "u"], &[])]);
        let out = Assignor::RoundRobin.assign(&m, &BTreeMap::from([("t".to_owned(), 3), ("u".to_owned(), 1)]));
        assert_eq!(names(&out["a"]), ["t-0", "t-2"]);
        assert_eq!(names(&out["b"]), ["t-1", "u-0"]);
    }

    #[test]
    fn sticky_keeps_owned_partitions_and_cooperative_holds_back_moves() {
        let m = members(&[("a", &["t"], &[("t", 0), ("t", 1), ("t", 2), ("t", 3)]), ("b", &["t"], &[])]);
        let counts = BTreeMap::from([("t".to_owned(), 4)]);
        let out = Assignor::Sticky.assign(&m, &counts);
        assert_eq!(out["a"].len(), 2);
        assert_eq!(out["b"].len(), 2);
        assert!(out["a"].iter().all(|p| p.partition.0 < 4));
        let cooperative = Assignor::CooperativeSticky.assign(&m, &counts);
        assert_eq!(cooperative["a"], out["a"], "a keeps what it keeps");
        assert!(cooperative["b"].is_empty(), "b gets a's partitions only after a revoked them");
    }

    proptest! {
        /// Every assignor gives each partition of a subscribed topic to exactly one member
        /// subscribed to it; the sticky ones are balanced (spread at most one with equal
        /// subscriptions) and keep every owned partition they can.
        #[test]
        fn assignments_are_complete_exclusive_and_balanced(
            member_count in 1usize..6,
            counts in proptest::collection::vec(1i32..7, 1..4),
            owned_seed in proptest::collection::vec(any::<u8>(), 0..30),
        ) {
            let topics: Vec<String> = (0..counts.len()).map(|i| format!("t{i}")).collect();
            let partitions: BTreeMap<String, i32> = topics.iter().cloned().zip(counts.iter().copied()).collect();
            let all: Vec<TopicPartition> = partitions.iter().flat_map(|(t, c)| (0..*c).map(move |p| TopicPartition::new(t.clone(), p))).collect();
            let mut subs: BTreeMap<String, Subscription> = (0..member_count)
                .map(|i| (format!("m{i}"), Subscription { topics: topics.clone(), user_data: vec![], owned_partitions: vec![] }))
                .collect();
            for (index, byte) in owned_seed.iter().enumerate() {
                let partition = all[index % all.len()].clone();
                let member = format!("m{}", usize::from(*byte) % member_count);
                subs.get_mut(&member).unwrap().owned_partitions.push(partition);
            }
            for assignor in [Assignor::Range, Assignor::RoundRobin, Assignor::Sticky, Assignor::CooperativeSticky] {
                let out = assignor.assign(&subs, &partitions);
                let mut seen = BTreeSet::new();
                for owned in out.values() {
                    for partition in owned {
                        prop_assert!(seen.insert(partition.clone()), "{:?} gave {partition} twice", assignor);
                    }
                }
                if assignor == Assignor::CooperativeSticky {
                    continue;
                }
                prop_assert_eq!(seen.len(), all.len(), "{:?} left partitions out", assignor);
                if assignor == Assignor::Sticky {
                    let loads: Vec<usize> = out.values().map(Vec::len).collect();
                    prop_assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1, "{loads:?}");
                }
            }
        }
    }
}
