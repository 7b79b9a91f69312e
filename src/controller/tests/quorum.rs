//! Three controllers on loopback, each with its own raft-engine store: they elect a leader,
//! commit proposals everywhere, survive the leader's loss and recover their log on restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use controller::{ControllerError, Quorum, QuorumConfig, Role};
use metadata::record::{ConfigResource, MetadataRecord};
use raft_engine::env::DefaultFileSystem;
use storage::raft_log::RaftLogStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Bound on waiting for the quorum to settle.
const SETTLE_MS: u64 = 20_000;

struct Member {
    quorum: Quorum,
    stop: Option<oneshot::Sender<()>>,
}

fn config_record(value: u32) -> MetadataRecord {
    MetadataRecord::Config {
        resource: ConfigResource::Broker(protocol::ids::NodeId(1)),
        name: "log.retention.ms".into(),
        value: Some(value.to_string()),
    }
}

async fn start(id: u64, voters: &BTreeMap<u64, String>, listener: TcpListener, dir: &Path) -> Member {
    let (store, recovered) =
        RaftLogStore::open(Arc::new(DefaultFileSystem), &dir.join(format!("c{id}"))).expect("open store");
    let mut config = QuorumConfig::new(id, voters.clone());
    config.tick_ms = 20;
    config.snapshot_interval_entries = 5;
    let (stop, stopped) = oneshot::channel::<()>();
    let quorum = Quorum::start(config, store, recovered, listener, None, None, async move {
        let _ = stopped.await;
    })
    .expect("start");
    Member { quorum, stop: Some(stop) }
}

async fn leader(members: &BTreeMap<u64, Member>) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SETTLE_MS);
    loop {
        let leaders: Vec<u64> = members
            .iter()
            .filter(|(_, member)| member.quorum.status().role == Role::Leader)
            .map(|(id, _)| *id)
            .collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(tokio::time::Instant::now() < deadline, "no single leader within {SETTLE_MS} ms: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn propose(members: &BTreeMap<u64, Member>, record: MetadataRecord) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SETTLE_MS);
    loop {
        let id = leader(members).await;
        match members[&id].quorum.propose(vec![record.clone()]).await {
            Ok(index) => return index,
            Err(ControllerError::NotController { .. } | ControllerError::Indeterminate) => {}
            Err(error) => panic!("proposal failed: {error}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "no proposal committed within {SETTLE_MS} ms");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn applied_everywhere(members: &BTreeMap<u64, Member>, index: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SETTLE_MS);
    while members.values().any(|member| member.quorum.image().applied_index < index) {
        assert!(tokio::time::Instant::now() < deadline, "index {index} not applied everywhere");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_elect_commit_fail_over_and_recover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut listeners = BTreeMap::new();
    let mut voters = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _ = voters.insert(id, listener.local_addr().expect("addr").to_string());
        let _ = listeners.insert(id, listener);
    }
    let mut members = BTreeMap::new();
    for (id, listener) in listeners {
        let _ = members.insert(id, start(id, &voters, listener, dir.path()).await);
    }
    let first_leader = leader(&members).await;
    let mut last = 0;
    for value in 0..12 {
        last = propose(&members, config_record(value)).await;
    }
    applied_everywhere(&members, last).await;
    let resource = ConfigResource::Broker(protocol::ids::NodeId(1));
    for member in members.values() {
        let image = member.quorum.image();
        assert_eq!(
            image.image.configs(&resource).and_then(|configs| configs.get("log.retention.ms")).map(String::as_str),
            Some("11")
        );
    }
    // A follower refuses proposals and names the leader.
    let follower = *members.keys().find(|id| **id != first_leader).expect("a follower");
    match members[&follower].quorum.propose(vec![config_record(99)]).await {
        Err(ControllerError::NotController { leader_id }) => assert_eq!(leader_id, Some(first_leader)),
        other => panic!("a follower accepted a proposal: {other:?}"),
    }
    // An invalid change is refused before it is proposed.
    let unknown = MetadataRecord::RemoveTopic { topic_id: metadata::record::TopicId([1; 16]) };
    assert!(matches!(members[&first_leader].quorum.propose(vec![unknown]).await, Err(ControllerError::Invalid(_))));

    // The leader stops; the other two elect a new one and keep committing.
    let mut stopped = members.remove(&first_leader).expect("leader");
    let _ = stopped.stop.take().expect("stop").send(());
    drop(stopped);
    let second_leader = leader(&members).await;
    assert_ne!(second_leader, first_leader);
    let index = propose(&members, config_record(100)).await;
    assert!(index > last);
    applied_everywhere(&members, index).await;

    // The old leader restarts from its store (snapshot + entries) and catches up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listener = TcpListener::bind(&voters[&first_leader]).await.expect("rebind");
    let _ = members.insert(first_leader, start(first_leader, &voters, listener, dir.path()).await);
    applied_everywhere(&members, index).await;
    let image = members[&first_leader].quorum.image();
    assert_eq!(
        image.image.configs(&resource).and_then(|configs| configs.get("log.retention.ms")).map(String::as_str),
        Some("100")
    );
    for member in members.values_mut() {
        let _ = member.stop.take().expect("stop").send(());
    }
}
