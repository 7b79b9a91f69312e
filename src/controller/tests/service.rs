//! The control service on loopback, over real sockets and a raft-engine store: what it
//! answers, what it refuses, how it fences, and that bad frames get a clear refusal without
//! hurting later connections.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use controller::rpc::{self, ControlError, ControlRequest, ControlResponse};
use controller::service::{AppliedLog, ControllerService};
use controller::{Quorum, QuorumConfig, Role};
use metadata::ops::{MetadataOp, OpError};
use metadata::record::TopicId;
use protocol::ids::NodeId;
use raft_engine::env::DefaultFileSystem;
use storage::raft_log::RaftLogStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound on waiting for the quorum or a fencing.
const SETTLE_MS: u64 = 20_000;
/// A short session, so the test sees a fencing soon.
const SESSION_TIMEOUT_MS: u64 = 600;
/// Per-call bound.
const CALL_TIMEOUT_MS: u64 = 5_000;

struct Controller {
    address: String,
    quorum: Quorum,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// A controller of `voters` (this one is id 1, listening on `listener`) with its service.
async fn start(listener: TcpListener, voters: BTreeMap<u64, String>) -> Controller {
    let dir = tempfile::tempdir().expect("temp dir");
    let address = listener.local_addr().expect("bound").to_string();
    let (store, recovered) = RaftLogStore::open(Arc::new(DefaultFileSystem), dir.path()).expect("open store");
    let mut config = QuorumConfig::new(1, voters);
    config.tick_ms = 20;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (control, streams) = tokio::sync::mpsc::channel(controller::quorum::INBOX_MAX);
    let log = AppliedLog::new();
    let quorum =
        Quorum::start(config, store, recovered, listener, Some(control), Some(log.observer(None)), async move {
            let _ = stopped.await;
        })
        .expect("start");
    let _service = ControllerService::start(quorum.clone(), log, SESSION_TIMEOUT_MS, streams);
    Controller { address, quorum, _stop: stop, _dir: dir }
}

async fn call(controller: &Controller, request: ControlRequest) -> (ControlResponse, bytes::Bytes) {
    rpc::call(&controller.address, &request, CALL_TIMEOUT_MS).await.expect("the controller answers")
}

fn heartbeat(broker_epoch: i64, applied_index: u64) -> ControlRequest {
    ControlRequest::Heartbeat { broker_id: NodeId(7), broker_epoch, applied_index, want_shutdown: false }
}

fn create_topic(replication_factor: i16) -> ControlRequest {
    ControlRequest::Op(MetadataOp::CreateTopic {
        name: format!("rf{replication_factor}"),
        topic_id: TopicId([replication_factor as u8; 16]),
        partitions: 2,
        replication_factor,
        assignments: Vec::new(),
        configs: Vec::new(),
        placement_seed: 0,
    })
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SETTLE_MS);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what} within {SETTLE_MS} ms");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_registers_unfences_fences_and_serves_the_log() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("bound").to_string();
    let controller = start(listener, BTreeMap::from([(1, address)])).await;
    wait_until("a single voter leads", || controller.quorum.status().role == Role::Leader).await;

    // A heartbeat without a registration is refused as a stale epoch.
    let (answer, _) = call(&controller, heartbeat(1, 0)).await;
    assert!(matches!(answer, ControlResponse::Error(ControlError::Op(OpError::StaleBrokerEpoch { .. }))), "{answer:?}");

    let register = ControlRequest::Register {
        broker_id: NodeId(7),
        host: "localhost".into(),
        port: 9092,
        rack: None,
        previous_broker_epoch: -1,
    };
    let (answer, _) = call(&controller, register).await;
    let ControlResponse::Registered { broker_epoch, index } = answer else { panic!("not registered: {answer:?}") };

    // Fenced until the broker has applied its registration; a wrong epoch is refused.
    let (answer, _) = call(&controller, heartbeat(broker_epoch, index - 1)).await;
    assert!(matches!(answer, ControlResponse::Heartbeat { fenced: true, caught_up: false, .. }), "{answer:?}");
    let (answer, _) = call(&controller, heartbeat(broker_epoch + 1, index)).await;
    assert!(matches!(answer, ControlResponse::Error(ControlError::Op(OpError::StaleBrokerEpoch { .. }))), "{answer:?}");
    let (answer, _) = call(&controller, heartbeat(broker_epoch, index)).await;
    assert!(matches!(answer, ControlResponse::Heartbeat { fenced: false, caught_up: true, .. }), "{answer:?}");

    // Operations: refused when they do not fit, applied when they do.
    let (answer, _) = call(&controller, create_topic(2)).await;
    assert!(
        matches!(answer, ControlResponse::Error(ControlError::Op(OpError::InvalidReplicationFactor(_)))),
        "{answer:?}"
    );
    let (answer, _) = call(&controller, create_topic(1)).await;
    let ControlResponse::Applied { index: created, .. } = answer else { panic!("not applied: {answer:?}") };

    // The log from the start: every entry up to the creation, bytes in the blob.
    let (answer, blob) = call(&controller, ControlRequest::FetchLog { from_index: 1, max_wait_ms: 0 }).await;
    let ControlResponse::Log { snapshot: None, entries, leader_id: Some(1) } = answer else {
        panic!("unexpected log answer: {answer:?}")
    };
    assert_eq!(entries.first().map(|part| part.index), Some(1));
    assert!(entries.iter().any(|part| part.index == created));
    assert_eq!(blob.len(), entries.iter().map(|part| part.length as usize).sum::<usize>());
    // Nothing new: the fetch waits its bound, then answers empty.
    let (answer, _) = call(&controller, ControlRequest::FetchLog { from_index: created + 100, max_wait_ms: 50 }).await;
    assert!(
        matches!(answer, ControlResponse::Log { snapshot: None, ref entries, .. } if entries.is_empty()),
        "{answer:?}"
    );

    // No heartbeats for longer than the session: fenced, and its leaderships are gone.
    wait_until("the silent broker is fenced", || !controller.quorum.image().image.is_unfenced(NodeId(7))).await;
    let image = controller.quorum.image();
    let topic = image.image.topic("rf1").expect("created");
    assert!(topic.partitions.values().all(|state| state.leader.0 == -1), "{topic:?}");
    let (answer, _) = call(&controller, ControlRequest::Status).await;
    let ControlResponse::Status(status) = answer else { panic!("no status: {answer:?}") };
    assert_eq!(status.role, "leader");
    assert!(status.brokers.iter().any(|broker| broker.broker_id == NodeId(7) && broker.fenced));

    // Heartbeating again unfences it and its partitions get their leader back.
    let (answer, _) = call(&controller, heartbeat(broker_epoch, created)).await;
    assert!(matches!(answer, ControlResponse::Heartbeat { fenced: false, .. }), "{answer:?}");
    let image = controller.quorum.image();
    assert!(image.image.topic("rf1").expect("created").partitions.values().all(|state| state.leader == NodeId(7)));
}

/// Sends raw bytes after the control preamble and reads the refusal.
async fn refusal_to(address: &str, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(rpc::CONTROL_PREAMBLE).await.expect("write");
    stream.write_all(bytes).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(CALL_TIMEOUT_MS), stream.read_to_end(&mut answer));
    let _ = read.await.expect("the controller closes the connection");
    assert!(answer.len() > 8, "a refusal frame: {answer:?}");
    String::from_utf8_lossy(&answer[4..]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_refused_and_a_follower_points_to_no_leader() {
    // One of three voters whose peers never answer: it never leads.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("bound").to_string();
    let voters = BTreeMap::from([(1, address.clone()), (2, "127.0.0.1:9".to_owned()), (3, "127.0.0.1:9".to_owned())]);
    let controller = start(listener, voters).await;

    // Oversized header length: refused before anything is allocated.
    let oversized = ((rpc::REQUEST_BYTES_MAX + 1) as u32).to_be_bytes();
    let refusal = refusal_to(&address, &oversized).await;
    assert!(refusal.contains("over the bound"), "{refusal}");
    // A header that is not a request.
    let garbage = b"{\"Nonsense\":1}";
    let mut frame = (garbage.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(garbage);
    frame.extend_from_slice(&0u32.to_be_bytes());
    let refusal = refusal_to(&address, &frame).await;
    assert!(refusal.contains("bad control request"), "{refusal}");

    // Still serving: lifecycle requests are refused with no leader to point to, and reads
    // are answered by any controller.
    let (answer, _) = call(&controller, heartbeat(1, 0)).await;
    assert!(matches!(answer, ControlResponse::Error(ControlError::NotController { leader_id: None })), "{answer:?}");
    let (answer, _) = call(&controller, create_topic(1)).await;
    assert!(matches!(answer, ControlResponse::Error(ControlError::NotController { .. })), "{answer:?}");
    let (answer, _) = call(&controller, ControlRequest::Status).await;
    assert!(matches!(answer, ControlResponse::Status(ref status) if status.role != "leader"), "{answer:?}");
}
