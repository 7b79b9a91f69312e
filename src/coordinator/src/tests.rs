use std::collections::BTreeMap;

use proptest::prelude::*;
use protocol::ids::TopicPartition;

use super::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
const DELAY_MS: i64 = 3_000;

#[test]
fn groups_are_placed_as_kafka_places_them() {
    // Java: "my-group".hashCode() == -1_906_497_762, whose low 31 bits are 240_985_886;
    // "".hashCode() == 0; "polygenelubricants".hashCode() == i32::MIN.
    assert_eq!(partition_for("my-group", 50), 240_985_886 % 50);
    assert_eq!(partition_for("", 50), 0);
    assert_eq!(partition_for("polygenelubricants", 50), 0);
}

fn coordinator() -> GroupCoordinator {
    GroupCoordinator::new(CoordinatorConfig::default(), 7)
}

fn join_request(request: RequestId, member_id: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        request,
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: protocols.iter().map(|name| ((*name).to_owned(), format!("meta-{name}").into_bytes())).collect(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        require_known_member_id: false,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
    }
}

fn sync_request(request: RequestId, member_id: &str, generation_id: i32, assignments: &[(&str, &str)]) -> SyncRequest {
    SyncRequest {
        request,
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: None,
        generation_id,
        protocol_type: Some("consumer".into()),
        protocol_name: None,
        assignments: assignments
            .iter()
            .map(|(member, bytes)| ((*member).to_owned(), bytes.as_bytes().to_vec()))
            .collect(),
    }
}

fn joins(outputs: &[Output]) -> BTreeMap<RequestId, Result<JoinResult, CoordinatorError>> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Join { request, result } => Some((*request, result.clone())),
            _ => None,
        })
        .collect()
}

fn syncs(outputs: &[Output]) -> BTreeMap<RequestId, Result<Vec<u8>, CoordinatorError>> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Sync { request, result } => Some((*request, result.clone())),
            _ => None,
        })
        .collect()
}

/// Two members in generation 1, Stable, "a" leading; returns their ids.
fn stable_pair(c: &mut GroupCoordinator) -> (String, String) {
    assert!(joins(&c.join(0, join_request(1, "", &["range"]))).is_empty(), "the first join waits");
    assert!(joins(&c.join(100, join_request(2, "", &["range"]))).is_empty());
    let answered = joins(&c.tick(DELAY_MS));
    let first = answered[&1].clone().expect("joined");
    let second = answered[&2].clone().expect("joined");
    assert_eq!((first.generation_id, second.generation_id), (1, 1));
    assert_eq!(first.leader, first.member_id, "the first member leads");
    assert_eq!(first.members.len(), 2, "the leader sees every member");
    assert!(second.members.is_empty());
    let (a, b) = (first.member_id, second.member_id);
    assert!(syncs(&c.sync(DELAY_MS + 10, sync_request(3, &b, 1, &[]))).is_empty(), "a follower waits");
    let out = c.sync(DELAY_MS + 20, sync_request(4, &a, 1, &[(&a, "pa"), (&b, "pb")]));
    assert!(matches!(out[0], Output::Persist(GroupRecord::Group { .. })), "persisted before the answers");
    let answered = syncs(&out);
    assert_eq!(answered[&3], Ok(b"pb".to_vec()));
    assert_eq!(answered[&4], Ok(b"pa".to_vec()));
    assert_eq!(c.describe("g").state, GroupState::Stable);
    (a, b)
}

#[test]
fn members_join_sync_and_get_their_assignments() {
    let mut c = coordinator();
    let (a, b) = stable_pair(&mut c);
    assert_eq!(c.heartbeat(DELAY_MS + 100, "g", &a, None, 1), Ok(()));
    assert_eq!(c.heartbeat(DELAY_MS + 100, "g", &b, None, 1), Ok(()));
    assert_eq!(c.heartbeat(DELAY_MS + 100, "g", &b, None, 0).unwrap_err().error_code(), ILLEGAL_GENERATION);
    assert_eq!(c.heartbeat(DELAY_MS + 100, "g", "nobody", None, 1).unwrap_err().error_code(), UNKNOWN_MEMBER_ID);
    // A follower that rejoins unchanged gets the current generation without a rebalance.
    let answer = joins(&c.join(DELAY_MS + 200, join_request(5, &b, &["range"])));
    assert_eq!(answer[&5].as_ref().map(|result| result.generation_id), Ok(1));
    assert_eq!(c.describe("g").state, GroupState::Stable);
}

#[test]
fn a_new_member_triggers_a_rebalance_the_others_learn_of_by_heartbeat() {
    let mut c = coordinator();
    let (a, b) = stable_pair(&mut c);
    let now = 10_000;
    assert!(joins(&c.join(now, join_request(10, "", &["range"]))).is_empty());
    assert_eq!(c.heartbeat(now + 10, "g", &a, None, 1).unwrap_err().error_code(), REBALANCE_IN_PROGRESS);
    assert!(joins(&c.join(now + 20, join_request(11, &a, &["range"]))).is_empty());
    let answered = joins(&c.join(now + 30, join_request(12, &b, &["range"])));
    assert_eq!(answered.len(), 3, "the last rejoin ends the join phase");
    assert!(answered.values().all(|result| result.as_ref().is_ok_and(|r| r.generation_id == 2)));
    assert_eq!(answered[&11].as_ref().unwrap().leader, a, "the leader stays");
}

#[test]
fn a_member_that_does_not_rejoin_in_time_is_dropped() {
    let mut c = coordinator();
    let (a, b) = stable_pair(&mut c);
    let now = 10_000;
    let _ = c.join(now, join_request(10, &a, &["range", "roundrobin"]));
    assert!(c.next_deadline_ms().is_some_and(|deadline_ms| deadline_ms <= now + i64::from(REBALANCE_MS)));
    // b never rejoins: when the join phase times out it is removed and the phase ends.
    let out = c.tick(now + i64::from(REBALANCE_MS));
    let answered = joins(&out);
    assert_eq!(answered[&10].as_ref().map(|r| (r.generation_id, r.members.len())), Ok((2, 1)));
    assert_eq!(c.member_ids("g"), vec![a.clone()]);
    assert_eq!(
        c.heartbeat(now + i64::from(REBALANCE_MS), "g", &b, None, 1).unwrap_err().error_code(),
        UNKNOWN_MEMBER_ID
    );
}

#[test]
fn an_expired_session_removes_the_member_and_rebalances() {
    let mut c = coordinator();
    let (a, b) = stable_pair(&mut c);
    let start = DELAY_MS + 20;
    // a keeps heartbeating, b goes silent.
    let mut now = start;
    while now < start + i64::from(SESSION_MS) + 1_000 {
        now += 1_000;
        let _ = c.heartbeat(now, "g", &a, None, 1);
        let _ = c.tick(now);
    }
    assert_eq!(c.member_ids("g"), vec![a.clone()], "{b} expired");
    assert_eq!(c.heartbeat(now, "g", &a, None, 1).unwrap_err().error_code(), REBALANCE_IN_PROGRESS);
    let answered = joins(&c.join(now, join_request(20, &a, &["range"])));
    assert_eq!(answered[&20].as_ref().map(|r| r.generation_id), Ok(2));
}

#[test]
fn leaving_rebalances_and_the_last_member_leaves_the_group_empty() {
    let mut c = coordinator();
    let (a, b) = stable_pair(&mut c);
    let (results, _) = c.leave(5_000, "g", &[(b.clone(), None)]);
    assert_eq!(results, vec![Ok(())]);
    assert_eq!(c.describe("g").state, GroupState::PreparingRebalance);
    // The only member left rejoins: the join phase ends at once.
    let answered = joins(&c.join(5_010, join_request(30, &a, &["range"])));
    assert_eq!(answered[&30].as_ref().map(|r| (r.generation_id, r.members.len())), Ok((2, 1)));
    // A new member starts another phase; its pending join is answered when it leaves.
    let _ = c.join(5_015, join_request(31, "", &["range"]));
    let newcomer = c.member_ids("g").into_iter().find(|id| *id != a).expect("joined");
    let (results, out) = c.leave(5_020, "g", &[(newcomer, None), ("ghost".into(), None), (a.clone(), None)]);
    assert_eq!(results[0], Ok(()));
    assert_eq!(results[1].as_ref().unwrap_err().error_code(), UNKNOWN_MEMBER_ID);
    assert_eq!(results[2], Ok(()));
    assert_eq!(joins(&out)[&31].as_ref().unwrap_err().error_code(), UNKNOWN_MEMBER_ID, "its pending join is answered");
    let summary = c.describe("g");
    assert_eq!((summary.state, summary.members.len()), (GroupState::Empty, 0));
    assert!(summary.generation_id >= 2);
    assert!(c.delete_group("g").is_ok());
    assert_eq!(c.describe("g").state, GroupState::Dead);
}

#[test]
fn join_group_v4_asks_for_a_member_id_first() {
    let mut c = coordinator();
    let mut request = join_request(1, "", &["range"]);
    request.require_known_member_id = true;
    let out = c.join(0, request);
    let Err(CoordinatorError::MemberIdRequired(member_id)) = joins(&out)[&1].clone() else {
        panic!("expected MEMBER_ID_REQUIRED: {out:?}")
    };
    assert!(member_id.starts_with("client-7-"));
    assert!(joins(&c.join(10, join_request(2, &member_id, &["range"]))).is_empty());
    let answered = joins(&c.tick(10 + DELAY_MS));
    assert_eq!(answered[&2].as_ref().map(|r| r.member_id.clone()), Ok(member_id));
    // An id nobody handed out is unknown.
    let out = c.join(10 + DELAY_MS, join_request(3, "made-up", &["range"]));
    assert_eq!(joins(&out)[&3].as_ref().unwrap_err().error_code(), UNKNOWN_MEMBER_ID);
}

#[test]
fn static_members_rejoin_without_a_rebalance_and_fence_their_old_id() {
    let mut c = coordinator();
    let mut first = join_request(1, "", &["range"]);
    first.group_instance_id = Some("instance-1".into());
    let mut second = join_request(2, "", &["range"]);
    second.group_instance_id = Some("instance-2".into());
    let _ = c.join(0, first.clone());
    let _ = c.join(0, second.clone());
    let answered = joins(&c.tick(DELAY_MS));
    let (a, b) = (answered[&1].clone().unwrap().member_id, answered[&2].clone().unwrap().member_id);
    let _ = c.sync(DELAY_MS, sync_request(3, &a, 1, &[(&a, "pa"), (&b, "pb")]));
    // instance-2 restarts: a new member id, the same generation and assignment.
    second.request = 4;
    let answered = joins(&c.join(DELAY_MS + 50, second));
    let rejoined = answered[&4].clone().expect("answered at once");
    assert_ne!(rejoined.member_id, b);
    assert_eq!(rejoined.generation_id, 1);
    assert_eq!(c.describe("g").state, GroupState::Stable, "no rebalance");
    let mut sync = sync_request(5, &rejoined.member_id, 1, &[]);
    sync.group_instance_id = Some("instance-2".into());
    assert_eq!(syncs(&c.sync(DELAY_MS + 60, sync))[&5], Ok(b"pb".to_vec()));
    // The old id is fenced.
    let error = c.heartbeat(DELAY_MS + 70, "g", &b, Some("instance-2"), 1).unwrap_err();
    assert_eq!(error.error_code(), FENCED_INSTANCE_ID);
    // Leaving by instance id alone.
    let (results, _) = c.leave(DELAY_MS + 80, "g", &[(String::new(), Some("instance-2".into()))]);
    assert_eq!(results, vec![Ok(())]);
}

#[test]
fn the_protocol_is_one_every_member_supports() {
    let mut c = coordinator();
    let _ = c.join(0, join_request(1, "", &["cooperative-sticky", "range"]));
    let _ = c.join(0, join_request(2, "", &["range", "cooperative-sticky"]));
    let _ = c.join(0, join_request(3, "", &["range"]));
    let answered = joins(&c.tick(DELAY_MS));
    assert!(answered.values().all(|r| r.as_ref().is_ok_and(|r| r.protocol_name == "range")));
    let out = c.join(DELAY_MS, join_request(4, "", &["roundrobin"]));
    assert_eq!(joins(&out)[&4].as_ref().unwrap_err().error_code(), INCONSISTENT_GROUP_PROTOCOL);
    let mut wrong_type = join_request(5, "", &["range"]);
    wrong_type.protocol_type = "connect".into();
    assert_eq!(
        joins(&c.join(DELAY_MS, wrong_type))[&5].as_ref().unwrap_err().error_code(),
        INCONSISTENT_GROUP_PROTOCOL
    );
    let mut bad_session = join_request(6, "", &["range"]);
    bad_session.session_timeout_ms = 10;
    assert_eq!(joins(&c.join(DELAY_MS, bad_session))[&6].as_ref().unwrap_err().error_code(), INVALID_SESSION_TIMEOUT);
    let mut no_group = join_request(7, "", &["range"]);
    no_group.group_id = String::new();
    assert_eq!(joins(&c.join(DELAY_MS, no_group))[&7].as_ref().unwrap_err().error_code(), INVALID_GROUP_ID);
}

fn commit(member_id: &str, generation_id: i32, offset: i64) -> CommitRequest {
    CommitRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: None,
        generation_id,
        offsets: vec![(TopicPartition::new("t", 0), offset, 3, "meta".into())],
    }
}

#[test]
fn offset_commits_are_checked_against_the_generation() {
    let mut c = coordinator();
    // Outside group management, on a group without members.
    let out = c.commit_offsets(1, commit("", -1, 5)).expect("simple commit");
    assert_eq!(out.len(), 1);
    assert_eq!(c.fetch_offsets("g", None)[0].1.offset, 5);
    assert_eq!(c.commit_offsets(1, commit("x", 3, 5)).unwrap_err().error_code(), UNKNOWN_MEMBER_ID);
    let (a, _) = stable_pair(&mut c);
    assert_eq!(c.commit_offsets(5_000, commit("", -1, 6)).unwrap_err().error_code(), UNKNOWN_MEMBER_ID);
    assert_eq!(c.commit_offsets(5_000, commit(&a, 0, 6)).unwrap_err().error_code(), ILLEGAL_GENERATION);
    assert!(c.commit_offsets(5_000, commit(&a, 1, 7)).is_ok());
    let fetched = c.fetch_offsets("g", Some(&[TopicPartition::new("t", 0), TopicPartition::new("t", 1)]));
    assert_eq!(fetched.len(), 1, "partitions without a commit are left out");
    assert_eq!((fetched[0].1.offset, fetched[0].1.leader_epoch), (7, 3));
    // While the leader's assignment is awaited, commits must wait for the rebalance.
    let _ = c.join(6_000, join_request(40, "", &["range"]));
    let _ = c.join(6_000, join_request(41, &a, &["range"]));
    let _ = c.tick(6_000 + i64::from(REBALANCE_MS));
    assert_eq!(c.describe("g").state, GroupState::CompletingRebalance);
    assert_eq!(c.commit_offsets(36_001, commit(&a, 2, 8)).unwrap_err().error_code(), REBALANCE_IN_PROGRESS);
    assert_eq!(c.commit_offsets(1, commit("nobody", 3, 5)).unwrap_err().error_code(), UNKNOWN_MEMBER_ID);
    let mut other = commit("m", 2, 1);
    other.group_id = "fresh".into();
    assert_eq!(c.commit_offsets(1, other).unwrap_err().error_code(), ILLEGAL_GENERATION);
    assert_eq!(c.delete_group("g").unwrap_err().error_code(), NON_EMPTY_GROUP);
    assert_eq!(c.delete_group("nope").unwrap_err().error_code(), GROUP_ID_NOT_FOUND);
}

#[test]
fn a_new_coordinator_rebuilds_groups_and_offsets_from_the_records() {
    let mut c = coordinator();
    let mut records = Vec::new();
    let keep = |records: &mut Vec<GroupRecord>, outputs: Vec<Output>| {
        records.extend(outputs.into_iter().filter_map(|output| match output {
            Output::Persist(record) => Some(record),
            _ => None,
        }));
    };
    let _ = c.join(0, join_request(1, "", &["range"]));
    let _ = c.join(0, join_request(2, "", &["range"]));
    keep(&mut records, c.tick(DELAY_MS));
    let ids = c.member_ids("g");
    let leader = c.describe("g").members[0].member_id.clone();
    keep(&mut records, c.sync(DELAY_MS, sync_request(3, &leader, 1, &[(&ids[0], "x"), (&ids[1], "y")])));
    keep(&mut records, c.commit_offsets(DELAY_MS + 1, commit(&leader, 1, 42)).expect("commit"));
    keep(
        &mut records,
        c.commit_offsets(1, CommitRequest { group_id: "other".into(), ..commit("", -1, 9) }).expect("commit"),
    );

    let mut rebuilt = GroupCoordinator::new(CoordinatorConfig::default(), 8);
    for record in &records {
        rebuilt.replay(10_000, record);
    }
    let (before, after) = (c.describe("g"), rebuilt.describe("g"));
    assert_eq!(after.state, GroupState::Stable);
    assert_eq!(
        (after.generation_id, after.protocol_name.clone(), after.members.clone()),
        (1, before.protocol_name, before.members)
    );
    assert_eq!(rebuilt.fetch_offsets("g", None), c.fetch_offsets("g", None));
    assert_eq!(rebuilt.fetch_offsets("other", None)[0].1.offset, 9);
    // The members carry on in their generation.
    assert_eq!(rebuilt.heartbeat(10_001, "g", &leader, None, 1), Ok(()));
    // Deleting a group is a tombstone that replays too.
    let mut deleted = records.clone();
    let outputs = c.delete_offsets("other", &[TopicPartition::new("t", 0)]).expect("empty group");
    keep(&mut deleted, outputs);
    for record in &deleted[records.len()..] {
        rebuilt.replay(10_002, record);
    }
    assert!(rebuilt.fetch_offsets("other", None).is_empty());
}

/// Operations of the property test: (member index, what, time step).
#[derive(Debug, Clone)]
enum Step {
    Join(usize),
    Sync(usize),
    Heartbeat(usize),
    Leave(usize),
    Wait(i64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..4).prop_map(Step::Join),
        (0usize..4).prop_map(Step::Sync),
        (0usize..4).prop_map(Step::Heartbeat),
        (0usize..4).prop_map(Step::Leave),
        (0i64..40_000).prop_map(Step::Wait),
    ]
}

proptest! {
    /// Members joining, syncing, heartbeating, leaving and going silent in any order: every
    /// join and sync is answered exactly once, generations never go back, the invariants hold
    /// (asserted inside), and a coordinator rebuilt from the persisted records has the last
    /// persisted generation.
    #[test]
    fn every_request_is_answered_once_and_generations_only_rise(steps in proptest::collection::vec(step(), 1..120)) {
        let mut c = coordinator();
        let mut now = 0i64;
        let mut next_request: RequestId = 0;
        let mut member_ids: [String; 4] = Default::default();
        let mut generation: [i32; 4] = [-1; 4];
        let mut outstanding: BTreeMap<RequestId, usize> = BTreeMap::new();
        let mut records = Vec::new();
        let mut highest_generation = 0;
        let handle = |outputs: Vec<Output>, outstanding: &mut BTreeMap<RequestId, usize>, member_ids: &mut [String; 4], generation: &mut [i32; 4], records: &mut Vec<GroupRecord>| -> Result<(), TestCaseError> {
            for output in outputs {
                match output {
                    Output::Persist(record) => records.push(record),
                    Output::Join { request, result } => {
                        let member = outstanding.remove(&request);
                        prop_assert!(member.is_some(), "join {request} answered twice or never asked");
                        let member = member.unwrap();
                        match result {
                            Ok(joined) => {
                                member_ids[member] = joined.member_id;
                                generation[member] = joined.generation_id;
                            }
                            Err(CoordinatorError::MemberIdRequired(id)) => member_ids[member] = id,
                            Err(_) => {}
                        }
                    }
                    Output::Sync { request, .. } => {
                        prop_assert!(outstanding.remove(&request).is_some(), "sync {request} answered twice");
                    }
                }
            }
            Ok(())
        };
        for step in steps {
            match step {
                Step::Wait(ms) => {
                    now += ms;
                    let out = c.tick(now);
                    handle(out, &mut outstanding, &mut member_ids, &mut generation, &mut records)?;
                }
                Step::Join(member) => {
                    next_request += 1;
                    let _ = outstanding.insert(next_request, member);
                    let mut request = join_request(next_request, &member_ids[member], &["range"]);
                    request.require_known_member_id = member % 2 == 0;
                    request.client_id = format!("m{member}");
                    let out = c.join(now, request);
                    handle(out, &mut outstanding, &mut member_ids, &mut generation, &mut records)?;
                }
                Step::Sync(member) => {
                    next_request += 1;
                    let _ = outstanding.insert(next_request, member);
                    let everyone: Vec<(&str, &str)> = member_ids.iter().map(|id| (id.as_str(), "p")).collect();
                    let out = c.sync(now, sync_request(next_request, &member_ids[member], generation[member], &everyone));
                    handle(out, &mut outstanding, &mut member_ids, &mut generation, &mut records)?;
                }
                Step::Heartbeat(member) => {
                    let _ = c.heartbeat(now, "g", &member_ids[member], None, generation[member]);
                }
                Step::Leave(member) => {
                    let (_, out) = c.leave(now, "g", &[(member_ids[member].clone(), None)]);
                    handle(out, &mut outstanding, &mut member_ids, &mut generation, &mut records)?;
                }
            }
            let current = c.describe("g").generation_id;
            prop_assert!(current >= highest_generation || c.describe("g").state == GroupState::Dead);
            highest_generation = highest_generation.max(current);
        }
        // Far enough ahead, everything waiting is answered (members drop out or the phases end).
        for _ in 0..4 {
            now += i64::from(REBALANCE_MS) + i64::from(SESSION_MS);
            let out = c.tick(now);
            handle(out, &mut outstanding, &mut member_ids, &mut generation, &mut records)?;
        }
        prop_assert!(outstanding.is_empty(), "unanswered: {outstanding:?}");
        let mut rebuilt = GroupCoordinator::new(CoordinatorConfig::default(), 9);
        for record in &records {
            rebuilt.replay(now, record);
        }
        let last_persisted = records.iter().rev().find_map(|record| match record {
            GroupRecord::Group { value: Some(snapshot), .. } => Some(snapshot.generation_id),
            _ => None,
        });
        if let Some(generation_id) = last_persisted {
            prop_assert_eq!(rebuilt.describe("g").generation_id, generation_id);
        }
    }
}
