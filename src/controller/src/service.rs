//! The controller's RPC service: broker registration, heartbeats and fencing, forwarded
//! metadata operations, and the metadata-log fetch brokers follow the log with.
//!
//! Sessions live only in the active controller's memory, as in KRaft: a controller that
//! becomes active gives every unfenced broker a fresh session (a full
//! `broker.session.timeout.ms` to heartbeat) rather than fencing on stale knowledge. A broker
//! whose session expires is fenced (its leaderships move, see [`metadata::ops`]); it is
//! unfenced once a heartbeat shows it applied the log up to its registration.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use metadata::image::MetadataImage;
use metadata::ops::{MetadataOp, PreferredElection};
use metadata::record::{MetadataRecord, TopicId};
use protocol::ids::NodeId;
use rt::net::TcpStream;
use rt::sync::{mpsc, watch};

use crate::quorum::{AppliedEntry, ApplyObserver, Quorum, Role};
use crate::rpc::{self, ClusterStatus, ControlError, ControlRequest, ControlResponse, LogPart};

/// Applied entries kept for brokers to fetch; older ones are served as a snapshot.
pub const APPLIED_LOG_ENTRIES_MAX: usize = 8_192;
/// Bytes of applied entries kept.
pub const APPLIED_LOG_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Bytes of entries in one fetch answer (at least one entry is sent).
pub const FETCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Longest a fetch may wait for a new entry.
pub const FETCH_WAIT_MS_MAX: u64 = 30_000;
/// How often the active controller looks for expired sessions.
pub const SESSION_CHECK_INTERVAL_MS: u64 = 100;
/// Control connections served at once; more are closed on arrival (every broker call opens
/// one and closes it after the answer, so a healthy cluster holds a few per broker).
pub const CONTROL_CONNECTIONS_MAX: usize = 1_024;
/// Longest a control connection may stay silent before a request (a caller that connects
/// and sends nothing is dropped).
pub const CONTROL_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Kafka's default `broker.session.timeout.ms`.
pub const BROKER_SESSION_TIMEOUT_MS_DEFAULT: u64 = 9_000;

/// The committed entries this controller applied recently, for brokers following the log.
#[derive(Debug)]
pub struct AppliedLog {
    inner: Mutex<AppliedLogInner>,
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct AppliedLogInner {
    /// Entries held start right after this index.
    base: u64,
    entries: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl AppliedLog {
    /// An empty log.
    pub fn new() -> Arc<AppliedLog> {
        let (changed, _) = watch::channel(0);
        Arc::new(AppliedLog { inner: Mutex::new(AppliedLogInner::default()), changed })
    }

    /// The observer to give [`Quorum::start`], chaining `then` (for the simulator's checks).
    pub fn observer(self: &Arc<Self>, then: Option<ApplyObserver>) -> ApplyObserver {
        let log = Arc::clone(self);
        Arc::new(move |entry: &AppliedEntry| {
            log.record(entry);
            if let Some(then) = &then {
                then(entry);
            }
        })
    }

    fn record(&self, entry: &AppliedEntry) {
        let mut inner = self.inner.lock().expect("applied log lock is never poisoned");
        let next = inner.base + inner.entries.len() as u64 + 1;
        if entry.from_snapshot || entry.index != next {
            // A restored snapshot (or the first entry after one): what came before is served
            // as a snapshot from now on.
            inner.entries.clear();
            inner.bytes = 0;
            inner.base = if entry.from_snapshot { entry.index } else { entry.index - 1 };
        }
        if !entry.from_snapshot {
            inner.bytes += entry.data.len();
            inner.entries.push_back((entry.index, entry.data.clone()));
            while inner.entries.len() > APPLIED_LOG_ENTRIES_MAX || inner.bytes > APPLIED_LOG_BYTES_MAX {
                let (_, data) = inner.entries.pop_front().expect("over the bound means not empty");
                inner.bytes -= data.len();
                inner.base += 1;
            }
        }
        drop(inner);
        let _ = self.changed.send_replace(entry.index);
    }

    /// Entries from `from_index` on (up to [`FETCH_BYTES_MAX`]), or `None` if some of them are
    /// no longer held.
    fn read(&self, from_index: u64) -> Option<Vec<(u64, Bytes)>> {
        let inner = self.inner.lock().expect("applied log lock is never poisoned");
        if from_index <= inner.base {
            return None;
        }
        let skip = (from_index - inner.base - 1) as usize;
        let mut bytes = 0;
        let mut entries = Vec::new();
        for (index, data) in inner.entries.iter().skip(skip) {
            if !entries.is_empty() && bytes + data.len() > FETCH_BYTES_MAX {
                break;
            }
            bytes += data.len();
            entries.push((*index, data.clone()));
        }
        Some(entries)
    }
}

/// A broker's session with the active controller.
#[derive(Debug, Clone, Copy)]
struct Session {
    broker_epoch: i64,
    last_heartbeat: rt::time::Instant,
    /// The broker is caught up once it has applied this index.
    caught_up_at: u64,
}

/// The service of one controller.
#[derive(Debug)]
pub struct ControllerService {
    quorum: Quorum,
    log: Arc<AppliedLog>,
    session_timeout: Duration,
    sessions: Mutex<BTreeMap<NodeId, Session>>,
}

impl ControllerService {
    /// Starts serving the control connections `streams` (handed over by the quorum's listener)
    /// and the session checks.
    pub fn start(
        quorum: Quorum,
        log: Arc<AppliedLog>,
        session_timeout_ms: u64,
        mut streams: mpsc::Receiver<TcpStream>,
    ) -> Arc<ControllerService> {
        let service = Arc::new(ControllerService {
            quorum,
            log,
            session_timeout: Duration::from_millis(session_timeout_ms),
            sessions: Mutex::new(BTreeMap::new()),
        });
        let serving = Arc::clone(&service);
        drop(rt::task::spawn(async move {
            let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            while let Some(stream) = streams.recv().await {
                if open.load(std::sync::atomic::Ordering::Relaxed) >= CONTROL_CONNECTIONS_MAX {
                    tracing::warn!(limit = CONTROL_CONNECTIONS_MAX, "too many control connections; closing a new one");
                    drop(stream);
                    continue;
                }
                let _ = open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (service, open) = (Arc::clone(&serving), Arc::clone(&open));
                drop(rt::task::spawn(async move {
                    if let Err(error) = service.serve(stream).await {
                        tracing::debug!(%error, "control connection closed");
                    }
                    let _ = open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }));
            }
        }));
        let checking = Arc::clone(&service);
        drop(rt::task::spawn(async move { checking.check_sessions().await }));
        service
    }

    async fn serve(&self, mut stream: TcpStream) -> std::io::Result<()> {
        loop {
            let next = rpc::read_frame::<ControlRequest>(&mut stream, rpc::REQUEST_BYTES_MAX);
            let Ok(next) = rt::time::timeout(Duration::from_millis(CONTROL_IDLE_TIMEOUT_MS), next).await else {
                return Ok(());
            };
            let (request, _) = match next {
                Ok(request) => request,
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                    // Oversized or undecodable: say why, then close (the stream cannot be
                    // resynchronised).
                    let refusal =
                        ControlResponse::Error(ControlError::Invalid(format!("bad control request: {error}")));
                    let _ = rpc::write_frame(&mut stream, &refusal, &[]).await;
                    return Err(error);
                }
                Err(error) => return Err(error),
            };
            let (response, blob) = self.handle(request).await;
            rpc::write_frame(&mut stream, &response, &blob).await?;
        }
    }

    async fn handle(&self, request: ControlRequest) -> (ControlResponse, Bytes) {
        let result = match request {
            ControlRequest::Register { broker_id, host, port, rack, previous_broker_epoch } => {
                self.register(broker_id, host, port, rack, previous_broker_epoch).await
            }
            ControlRequest::Heartbeat { broker_id, broker_epoch, applied_index, want_shutdown } => {
                self.heartbeat(broker_id, broker_epoch, applied_index, want_shutdown).await
            }
            ControlRequest::Op(op) => match self.quorum.propose_op(op).await {
                Ok((index, records)) => Ok(ControlResponse::Applied { index, records }),
                Err(error) => Err(error.into()),
            },
            ControlRequest::FetchLog { from_index, max_wait_ms } => {
                return self.fetch_log(from_index, max_wait_ms.min(FETCH_WAIT_MS_MAX)).await;
            }
            ControlRequest::Status => Ok(ControlResponse::Status(self.status())),
        };
        (result.unwrap_or_else(ControlResponse::Error), Bytes::new())
    }

    fn leading(&self) -> Result<(), ControlError> {
        let status = self.quorum.status();
        if status.role == Role::Leader {
            Ok(())
        } else {
            Err(ControlError::NotController { leader_id: status.leader_id })
        }
    }

    async fn register(
        &self,
        broker_id: NodeId,
        host: String,
        port: u16,
        rack: Option<String>,
        previous_broker_epoch: i64,
    ) -> Result<ControlResponse, ControlError> {
        let op = MetadataOp::RegisterBroker { broker_id, host, port, rack, previous_broker_epoch, fenced: true };
        let (index, records) = self.quorum.propose_op(op).await?;
        let registration = records.iter().find_map(|record| match record {
            MetadataRecord::RegisterBroker { broker_epoch, clean_shutdown, .. } => Some((broker_epoch, clean_shutdown)),
            _ => None,
        });
        let Some((broker_epoch, clean_shutdown)) = registration else {
            return Err(ControlError::Invalid("registration planned no record".into()));
        };
        if !clean_shutdown {
            tracing::warn!(broker_id = broker_id.0, "broker registered after an unclean shutdown");
        }
        tracing::info!(broker_id = broker_id.0, broker_epoch, index, "broker registered");
        let session =
            Session { broker_epoch: *broker_epoch, last_heartbeat: rt::time::Instant::now(), caught_up_at: index };
        let _ = self.sessions.lock().expect("sessions lock is never poisoned").insert(broker_id, session);
        Ok(ControlResponse::Registered { broker_epoch: *broker_epoch, index })
    }

    async fn heartbeat(
        &self,
        broker_id: NodeId,
        broker_epoch: i64,
        applied_index: u64,
        want_shutdown: bool,
    ) -> Result<ControlResponse, ControlError> {
        self.leading()?;
        let committed = self.quorum.image();
        let registered =
            committed.image.broker(broker_id).filter(|broker| broker.broker_epoch == broker_epoch).cloned();
        let Some(registration) = registered else {
            return Err(ControlError::Op(metadata::ops::OpError::StaleBrokerEpoch { broker_id, broker_epoch }));
        };
        let session = {
            let mut sessions = self.sessions.lock().expect("sessions lock is never poisoned");
            let session = sessions.entry(broker_id).or_insert(Session {
                broker_epoch,
                last_heartbeat: rt::time::Instant::now(),
                // A session this controller did not see register: caught up once the broker has
                // what this controller has now.
                caught_up_at: committed.applied_index,
            });
            if session.broker_epoch != broker_epoch {
                *session = Session {
                    broker_epoch,
                    last_heartbeat: rt::time::Instant::now(),
                    caught_up_at: committed.applied_index,
                };
            }
            session.last_heartbeat = rt::time::Instant::now();
            *session
        };
        let caught_up = applied_index >= session.caught_up_at;
        let mut fenced = registration.fenced;
        if want_shutdown && !fenced {
            let _ = self.quorum.propose_op(MetadataOp::FenceBroker { broker_id, broker_epoch }).await?;
            tracing::info!(broker_id = broker_id.0, "controlled shutdown: leadership moved away");
            fenced = true;
        } else if !want_shutdown && fenced && caught_up {
            let _ = self.quorum.propose_op(MetadataOp::UnfenceBroker { broker_id, broker_epoch }).await?;
            tracing::info!(broker_id = broker_id.0, broker_epoch, "broker caught up; unfenced");
            fenced = false;
        }
        Ok(ControlResponse::Heartbeat { fenced, caught_up, should_shut_down: want_shutdown && fenced })
    }

    async fn fetch_log(&self, from_index: u64, max_wait_ms: u64) -> (ControlResponse, Bytes) {
        let mut changed = self.log.changed.subscribe();
        let deadline = rt::time::Instant::now() + Duration::from_millis(max_wait_ms);
        loop {
            let mut blob = BytesMut::new();
            let mut snapshot = None;
            let entries = match self.log.read(from_index) {
                Some(entries) => entries,
                None => {
                    let committed = self.quorum.image();
                    let bytes = committed.image.to_snapshot();
                    snapshot = Some(LogPart { index: committed.applied_index, length: bytes.len() as u32 });
                    blob.extend_from_slice(&bytes);
                    self.log.read(committed.applied_index + 1).unwrap_or_default()
                }
            };
            if snapshot.is_some() || !entries.is_empty() || rt::time::Instant::now() >= deadline {
                let parts = entries
                    .into_iter()
                    .map(|(index, data)| {
                        blob.extend_from_slice(&data);
                        LogPart { index, length: data.len() as u32 }
                    })
                    .collect();
                let leader_id = self.quorum.status().leader_id;
                return (ControlResponse::Log { snapshot, entries: parts, leader_id }, blob.freeze());
            }
            let left = deadline.saturating_duration_since(rt::time::Instant::now());
            let _ = rt::time::timeout(left, changed.changed()).await;
        }
    }

    fn status(&self) -> ClusterStatus {
        let status = self.quorum.status();
        let committed = self.quorum.image();
        ClusterStatus {
            node_id: status.node_id,
            role: match status.role {
                Role::Leader => "leader",
                Role::Follower => "follower",
                Role::Candidate => "candidate",
            }
            .to_owned(),
            term: status.term,
            leader_id: status.leader_id,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            voters: self.quorum.voters().iter().map(|(id, address)| (*id, address.clone())).collect(),
            brokers: committed.image.brokers().cloned().collect(),
        }
    }

    /// Moves leaderships back to preferred replicas (Kafka's `auto.leader.rebalance.enable`):
    /// every `interval_ms`, on the active controller, a broker that is the preferred replica
    /// of partitions it does not lead, for more than `imbalance_percent` of the partitions
    /// it prefers, gets those of them back where it is a live ISR member.
    pub fn balance_leaders(self: &Arc<Self>, interval_ms: u64, imbalance_percent: u32) {
        let service = Arc::clone(self);
        drop(rt::task::spawn(async move {
            loop {
                rt::time::sleep(Duration::from_millis(interval_ms.max(1))).await;
                if service.quorum.status().role != Role::Leader {
                    continue;
                }
                let partitions = imbalanced(&service.quorum.image().image, imbalance_percent);
                if partitions.is_empty() {
                    continue;
                }
                let count = partitions.len();
                match service.quorum.propose_op(MetadataOp::ElectPreferredLeaders { partitions }).await {
                    Ok(_) => tracing::info!(partitions = count, "moved leaderships back to preferred replicas"),
                    Err(error) => tracing::debug!(%error, "leader rebalance deferred"),
                }
            }
        }));
    }

    /// On the active controller: fences unfenced brokers whose session expired. A controller
    /// that becomes active starts every session afresh.
    async fn check_sessions(&self) {
        let mut was_leading_term = None;
        loop {
            rt::time::sleep(Duration::from_millis(SESSION_CHECK_INTERVAL_MS)).await;
            let status = self.quorum.status();
            if status.role != Role::Leader {
                was_leading_term = None;
                continue;
            }
            let now = rt::time::Instant::now();
            if was_leading_term != Some(status.term) {
                self.sessions.lock().expect("sessions lock is never poisoned").clear();
                was_leading_term = Some(status.term);
            }
            let committed = self.quorum.image();
            let mut expired = Vec::new();
            {
                let mut sessions = self.sessions.lock().expect("sessions lock is never poisoned");
                for broker in committed.image.unfenced_brokers() {
                    let session = sessions.entry(broker.broker_id).or_insert(Session {
                        broker_epoch: broker.broker_epoch,
                        last_heartbeat: now,
                        caught_up_at: committed.applied_index,
                    });
                    if session.broker_epoch != broker.broker_epoch {
                        *session = Session {
                            broker_epoch: broker.broker_epoch,
                            last_heartbeat: now,
                            caught_up_at: committed.applied_index,
                        };
                    }
                    if now.duration_since(session.last_heartbeat) > self.session_timeout {
                        expired.push((broker.broker_id, broker.broker_epoch));
                    }
                }
            }
            for (broker_id, broker_epoch) in expired {
                match self.quorum.propose_op(MetadataOp::FenceBroker { broker_id, broker_epoch }).await {
                    Ok(_) => tracing::warn!(broker_id = broker_id.0, "broker session expired; fenced"),
                    Err(error) => tracing::debug!(broker_id = broker_id.0, %error, "fencing deferred"),
                }
            }
        }
    }
}

/// The partitions whose preferred replica should lead again: for every broker that does not
/// lead more than `imbalance_percent` percent of the partitions it is the preferred replica
/// of, those of them where it is a live ISR member.
pub fn imbalanced(image: &MetadataImage, imbalance_percent: u32) -> Vec<(TopicId, i32)> {
    #[derive(Default)]
    struct Preferred {
        total: u64,
        not_led: u64,
        electable: Vec<(TopicId, i32)>,
    }
    let mut brokers: BTreeMap<NodeId, Preferred> = BTreeMap::new();
    for topic in image.topics() {
        for (partition, state) in &topic.partitions {
            let Some(first) = state.replicas.first() else { continue };
            let entry = brokers.entry(*first).or_default();
            entry.total += 1;
            if state.leader != *first {
                entry.not_led += 1;
            }
            if metadata::ops::preferred_election(image, topic.topic_id, *partition) == PreferredElection::Elect {
                entry.electable.push((topic.topic_id, *partition));
            }
        }
    }
    brokers
        .into_values()
        .filter(|broker| broker.not_led * 100 > broker.total * u64::from(imbalance_percent))
        .flat_map(|broker| broker.electable)
        .collect()
}

#[cfg(test)]
mod tests {
    use metadata::image::MetadataImage;
    use metadata::ops::{plan, MetadataOp};
    use metadata::record::TopicId;
    use protocol::ids::NodeId;

    use super::imbalanced;

    fn apply(image: &mut MetadataImage, op: &MetadataOp) {
        for record in plan(image, op).expect("plans") {
            image.apply(&record).expect("fits");
        }
    }

    #[test]
    fn leaderships_return_to_preferred_replicas_past_the_imbalance_threshold() {
        let mut image = MetadataImage::default();
        for id in 1..=2 {
            let register = MetadataOp::RegisterBroker {
                broker_id: NodeId(id),
                host: "h".into(),
                port: 1,
                rack: None,
                previous_broker_epoch: -1,
                fenced: false,
            };
            apply(&mut image, &register);
        }
        let topic_id = TopicId([3; 16]);
        apply(
            &mut image,
            &MetadataOp::CreateTopic {
                name: "t".into(),
                topic_id,
                partitions: 4,
                replication_factor: 2,
                assignments: (0..4).map(|_| vec![NodeId(1), NodeId(2)]).collect(),
                configs: Vec::new(),
                placement_seed: 0,
            },
        );
        assert!(imbalanced(&image, 10).is_empty(), "balanced at creation");
        // Broker 1 is fenced and comes back: broker 2 leads everything.
        let epoch = image.broker(NodeId(1)).expect("registered").broker_epoch;
        apply(&mut image, &MetadataOp::FenceBroker { broker_id: NodeId(1), broker_epoch: epoch });
        apply(&mut image, &MetadataOp::UnfenceBroker { broker_id: NodeId(1), broker_epoch: epoch });
        assert!(imbalanced(&image, 10).is_empty(), "broker 1 is not back in the ISRs yet");
        for partition in 0..4 {
            let state = image.topic_by_id(topic_id).expect("exists").partitions[&partition].clone();
            let leader_epoch = image.broker(NodeId(2)).expect("registered").broker_epoch;
            apply(
                &mut image,
                &MetadataOp::AlterPartition {
                    topic_id,
                    partition,
                    broker_id: NodeId(2),
                    broker_epoch: leader_epoch,
                    leader_epoch: state.leader_epoch,
                    partition_epoch: state.partition_epoch,
                    new_isr: vec![NodeId(1), NodeId(2)],
                },
            );
        }
        assert_eq!(imbalanced(&image, 10).len(), 4);
        assert_eq!(imbalanced(&image, 100).len(), 0, "a 100% threshold never moves anything");
    }
}
