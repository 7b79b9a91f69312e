//! The quorum driver: one task owning the raft-rs `RawNode`, its stores and the committed
//! metadata image.
//!
//! Inputs (ticks, peer messages, proposals) arrive on one channel and are handled one at a
//! time, so the driver needs no locks around raft-rs. After each input it drains raft-rs's
//! `Ready`: messages a leader may send at once go out first; then a restored snapshot, new
//! entries and the hard state are written to raft-engine in one fsynced batch and to the
//! in-memory log; only then do the messages that depend on them (votes, append responses) go
//! out; committed entries are applied to the image in index order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use metadata::image::MetadataImage;
use metadata::ops::MetadataOp;
use metadata::record::{encode_batch, MetadataRecord};
use raft::eraftpb::{ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};
use rt::rand::Rng;
use rt::sync::{mpsc, oneshot, watch};
use storage::raft_log::{RaftLogStore, RaftWrite, RecoveredRaftLog};

use crate::error::ControllerError;
use crate::memlog::MemLog;
use crate::transport::{self, Delivery, PeerSender};

/// Inputs queued for the driver before senders wait.
pub const INBOX_MAX: usize = 4096;
/// Inputs handled before the driver drains raft-rs's `Ready`.
const INPUTS_PER_READY_MAX: usize = 256;

/// How a controller takes part in the quorum.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// This controller's node id (a voter).
    pub node_id: u64,
    /// Every voter's id and `host:port` controller address (this one included).
    pub voters: BTreeMap<u64, String>,
    /// Length of one Raft tick.
    pub tick_ms: u64,
    /// The election timeout is drawn (from the rt RNG, after every role or term change) in
    /// `[election_ticks, 2 * election_ticks)` ticks.
    pub election_ticks: usize,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: usize,
    /// A snapshot of the image is taken after this many entries past the last one.
    pub snapshot_interval_entries: u64,
}

impl QuorumConfig {
    /// Kafka's KRaft timing: a 1 s election timeout (here 1-2 s), heartbeats every 300 ms.
    pub fn new(node_id: u64, voters: BTreeMap<u64, String>) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 3,
            snapshot_interval_entries: 1_000,
        }
    }
}

/// A controller's role in the quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for votes (pre-vote or vote).
    Candidate,
    /// The active controller.
    Leader,
}

/// What a controller knows of the quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumStatus {
    /// This controller.
    pub node_id: u64,
    /// The current term.
    pub term: u64,
    /// This controller's role.
    pub role: Role,
    /// The leader this controller knows of.
    pub leader_id: Option<u64>,
    /// Highest index known committed.
    pub commit_index: u64,
    /// Highest index applied to the image.
    pub applied_index: u64,
}

/// The committed metadata as of an index.
#[derive(Debug, Clone, Default)]
pub struct CommittedImage {
    /// The image.
    pub image: MetadataImage,
    /// The last index applied to it.
    pub applied_index: u64,
}

/// An entry as it was applied (for observers such as the simulator's checkers).
#[derive(Debug, Clone)]
pub struct AppliedEntry {
    /// Raft index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// The encoded record batch (empty for a leader's no-op).
    pub data: Bytes,
    /// True if the image was restored from a snapshot covering everything up to `index`
    /// (then `term` is the snapshot's and `data` is empty).
    pub from_snapshot: bool,
}

/// Called for every applied entry, in index order.
pub type ApplyObserver = Arc<dyn Fn(&AppliedEntry) + Send + Sync>;

/// Answers a proposal with the index it committed at.
type Reply = Box<dyn FnOnce(Result<u64, ControllerError>) + Send + Sync>;

enum Input {
    Delivery(Delivery),
    Propose(Vec<MetadataRecord>, Reply),
    ProposeOp(MetadataOp, oneshot::Sender<Result<(u64, Vec<MetadataRecord>), ControllerError>>),
}

/// A running controller quorum member.
#[derive(Debug, Clone)]
pub struct Quorum {
    inbox: mpsc::Sender<Input>,
    status: watch::Receiver<QuorumStatus>,
    image: watch::Receiver<Arc<CommittedImage>>,
    voters: BTreeMap<u64, String>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Delivery(delivery) => write!(f, "{delivery:?}"),
            Input::Propose(records, _) => write!(f, "Propose({} records)", records.len()),
            Input::ProposeOp(op, _) => write!(f, "ProposeOp({op:?})"),
        }
    }
}

impl Quorum {
    /// Starts the driver on the recovered store, serving peers on `listener`. Returns once the
    /// driver runs; it stops when `stop` completes (dropping the store, which closes it).
    ///
    /// # Errors
    /// [`ControllerError::InvalidConfig`] for a config raft-rs refuses or that does not list
    /// this node as a voter; [`ControllerError::Snapshot`] if the stored snapshot does not
    /// decode.
    pub fn start(
        config: QuorumConfig,
        store: RaftLogStore,
        recovered: RecoveredRaftLog,
        listener: rt::net::TcpListener,
        control: Option<mpsc::Sender<rt::net::TcpStream>>,
        observer: Option<ApplyObserver>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Quorum, ControllerError> {
        if !config.voters.contains_key(&config.node_id) {
            return Err(ControllerError::InvalidConfig(format!(
                "node {} is not among the voters {:?}",
                config.node_id,
                config.voters.keys().collect::<Vec<_>>()
            )));
        }
        let fresh = recovered.is_empty();
        let conf_state = recovered
            .conf_state
            .clone()
            .unwrap_or_else(|| ConfState { voters: config.voters.keys().copied().collect(), ..ConfState::default() });
        let (image, applied_index) = match &recovered.snapshot {
            Some(snapshot) if !snapshot.data.is_empty() => {
                (MetadataImage::from_snapshot(&snapshot.data)?, snapshot.get_metadata().index)
            }
            Some(snapshot) => (MetadataImage::default(), snapshot.get_metadata().index),
            None => (MetadataImage::default(), 0),
        };
        let memlog = MemLog::restore(
            recovered.hard_state.clone(),
            conf_state.clone(),
            recovered.snapshot.clone(),
            recovered.entries.clone(),
        );
        if fresh {
            // The initial membership must be durable before this node votes.
            store.write(RaftWrite { conf_state: Some(conf_state), ..RaftWrite::default() })?;
        }
        let raft_config = raft::Config {
            id: config.node_id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            min_election_tick: config.election_ticks,
            max_election_tick: 2 * config.election_ticks,
            applied: applied_index,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            ..raft::Config::default()
        };
        raft_config.validate().map_err(|error| ControllerError::InvalidConfig(error.to_string()))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, memlog.clone(), &logger)
            .map_err(|error| ControllerError::InvalidConfig(error.to_string()))?;

        let (inbox, inputs) = mpsc::channel(INBOX_MAX);
        let (deliveries, mut delivered) = mpsc::channel::<Delivery>(INBOX_MAX);
        let peers = config
            .voters
            .iter()
            .filter(|(id, _)| **id != config.node_id)
            .map(|(id, address)| (*id, PeerSender::start(config.node_id, *id, address.clone(), deliveries.clone())))
            .collect();
        let accept = rt::task::spawn(transport::accept_peers(listener, deliveries, control));
        {
            let inbox = inbox.clone();
            drop(rt::task::spawn(async move {
                while let Some(delivery) = delivered.recv().await {
                    if inbox.send(Input::Delivery(delivery)).await.is_err() {
                        return;
                    }
                }
            }));
        }
        let status = QuorumStatus {
            node_id: config.node_id,
            term: raw.raft.term,
            role: Role::Follower,
            leader_id: None,
            commit_index: raw.raft.raft_log.committed,
            applied_index,
        };
        let (status_sender, status_receiver) = watch::channel(status);
        let (image_sender, image_receiver) =
            watch::channel(Arc::new(CommittedImage { image: image.clone(), applied_index }));
        let mut driver = Driver {
            config: config.clone(),
            raw,
            memlog,
            store: Arc::new(store),
            peers,
            image,
            applied_index,
            speculative: None,
            pending: BTreeMap::new(),
            ready_index: None,
            observed: (0, StateRole::Follower, 0, 0),
            status: status_sender,
            published: image_sender,
            observer,
        };
        if let (Some(observer), Some(snapshot)) = (&driver.observer, &recovered.snapshot) {
            observer(&AppliedEntry {
                index: snapshot.get_metadata().index,
                term: snapshot.get_metadata().term,
                data: Bytes::new(),
                from_snapshot: true,
            });
        }
        driver.draw_election_timeout();
        let tick_ms = config.tick_ms;
        drop(rt::task::spawn(driver.run(inputs, tick_ms, stop, accept)));
        Ok(Quorum { inbox, status: status_receiver, image: image_receiver, voters: config.voters })
    }
}

impl Quorum {
    /// Proposes records; resolves with the index they were committed at, once this
    /// controller has applied them.
    ///
    /// # Errors
    /// [`ControllerError::NotController`] if this controller is not the leader (or not yet
    /// ready to lead), [`ControllerError::Invalid`] if the records do not fit the image,
    /// [`ControllerError::Indeterminate`] if leadership was lost before the outcome was known,
    /// [`ControllerError::Stopped`].
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<u64, ControllerError> {
        let (reply, outcome) = oneshot::channel();
        let reply: Reply = Box::new(move |result| {
            let _ = reply.send(result);
        });
        self.inbox.send(Input::Propose(records, reply)).await.map_err(|_| ControllerError::Stopped)?;
        outcome.await.map_err(|_| ControllerError::Stopped)?
    }

    /// Plans an operation against the image with every pending proposal applied
    /// ([`metadata::ops::plan`]) and proposes the records; resolves with the index and the
    /// records once applied. An operation that is refused or has nothing to change resolves
    /// once every proposal pending before it has resolved (its answer was read from their
    /// uncommitted changes), with the failure of the last of them if that one fails.
    ///
    /// # Errors
    /// As [`Quorum::propose`], plus [`ControllerError::Op`] if the operation does not fit.
    pub async fn propose_op(&self, op: MetadataOp) -> Result<(u64, Vec<MetadataRecord>), ControllerError> {
        let (reply, outcome) = oneshot::channel();
        self.inbox.send(Input::ProposeOp(op, reply)).await.map_err(|_| ControllerError::Stopped)?;
        outcome.await.map_err(|_| ControllerError::Stopped)?
    }

    /// What this controller knows of the quorum now.
    pub fn status(&self) -> QuorumStatus {
        self.status.borrow().clone()
    }

    /// Watches the status.
    pub fn watch_status(&self) -> watch::Receiver<QuorumStatus> {
        self.status.clone()
    }

    /// The committed image as of the last applied index.
    pub fn image(&self) -> Arc<CommittedImage> {
        Arc::clone(&self.image.borrow())
    }

    /// Watches the committed image.
    pub fn watch_image(&self) -> watch::Receiver<Arc<CommittedImage>> {
        self.image.clone()
    }

    /// The voters and their controller addresses.
    pub fn voters(&self) -> &BTreeMap<u64, String> {
        &self.voters
    }
}

struct Pending {
    term: u64,
    reply: Reply,
}

struct Driver {
    config: QuorumConfig,
    raw: RawNode<MemLog>,
    memlog: MemLog,
    store: Arc<RaftLogStore>,
    peers: BTreeMap<u64, PeerSender>,
    /// The image as of `applied_index`.
    image: MetadataImage,
    applied_index: u64,
    /// While proposals are pending: the image with all of them applied, which the next
    /// proposal is validated against.
    speculative: Option<MetadataImage>,
    /// Proposals by index.
    pending: BTreeMap<u64, Pending>,
    /// As leader: the index of this term's first entry; proposals wait until it is applied,
    /// so they are validated against everything earlier leaders committed.
    ready_index: Option<u64>,
    /// (term, role, leader, election timeout) as of the last draw of the election timeout.
    observed: (u64, StateRole, u64, usize),
    status: watch::Sender<QuorumStatus>,
    published: watch::Sender<Arc<CommittedImage>>,
    observer: Option<ApplyObserver>,
}

impl Driver {
    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        tick_ms: u64,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
        accept: rt::task::JoinHandle<()>,
    ) {
        let mut ticker = rt::time::interval(Duration::from_millis(tick_ms.max(1)));
        ticker.set_missed_tick_behavior(rt::time::MissedTickBehavior::Delay);
        let mut stop = std::pin::pin!(stop);
        loop {
            rt::select! {
                () = &mut stop => break,
                _ = ticker.tick() => {
                    let _ = self.raw.tick();
                }
                input = inputs.recv() => match input {
                    Some(input) => {
                        self.handle(input);
                        let mut handled = 1;
                        while handled < INPUTS_PER_READY_MAX {
                            match inputs.try_recv() {
                                Ok(input) => self.handle(input),
                                Err(_) => break,
                            }
                            handled += 1;
                        }
                    }
                    None => break,
                },
            }
            self.after_step();
            if let Err(error) = self.on_ready().await {
                rt::fatal(rt::FatalReason::FsyncFailed, &format!("controller log write failed: {error}"));
            }
        }
        accept.abort();
        for (_, pending) in std::mem::take(&mut self.pending) {
            (pending.reply)(Err(ControllerError::Stopped));
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Delivery(Delivery::Received(message)) => {
                if let Err(error) = self.raw.step(message) {
                    tracing::debug!(%error, "raft step refused a message");
                }
            }
            Input::Delivery(Delivery::Unreachable(peer)) => self.raw.report_unreachable(peer),
            Input::Delivery(Delivery::SnapshotSent(peer, delivered)) => {
                let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
                self.raw.report_snapshot(peer, status);
            }
            Input::Propose(records, reply) => self.propose(records, reply),
            Input::ProposeOp(op, reply) => self.propose_op(op, reply),
        }
        self.after_step();
    }

    /// raft-rs redraws its election timeout from an RNG the simulator cannot seed whenever it
    /// resets (role or term changes). Overwrite it with a draw from the rt RNG each time.
    fn draw_election_timeout(&mut self) {
        let minimum = self.config.election_ticks;
        let timeout = rt::rand::thread_rng().gen_range(minimum..2 * minimum);
        self.raw.raft.set_randomized_election_timeout(timeout);
        self.observed = (self.raw.raft.term, self.raw.raft.state, self.raw.raft.leader_id, timeout);
    }

    fn after_step(&mut self) {
        let raft = &self.raw.raft;
        let now = (raft.term, raft.state, raft.leader_id, raft.randomized_election_timeout());
        if now != self.observed {
            let became_leader = raft.state == StateRole::Leader && self.observed.1 != StateRole::Leader;
            self.draw_election_timeout();
            if became_leader {
                // become_leader appended this term's no-op.
                self.ready_index = Some(self.raw.raft.raft_log.last_index());
                tracing::info!(
                    node_id = self.config.node_id,
                    term = self.raw.raft.term,
                    "became the active controller"
                );
            }
            if self.raw.raft.state != StateRole::Leader {
                self.ready_index = None;
                self.speculative = None;
                for (_, pending) in std::mem::take(&mut self.pending) {
                    (pending.reply)(Err(ControllerError::Indeterminate));
                }
            }
        }
    }

    fn leader_hint(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|id| *id != raft::INVALID_ID)
    }

    /// Whether this controller may take proposals: it leads, and its term's first entry is
    /// applied (so proposals are checked against everything earlier leaders committed).
    fn ready_to_propose(&self) -> bool {
        self.raw.raft.state == StateRole::Leader && self.ready_index.is_some_and(|index| self.applied_index >= index)
    }

    fn propose_op(
        &mut self,
        op: MetadataOp,
        reply: oneshot::Sender<Result<(u64, Vec<MetadataRecord>), ControllerError>>,
    ) {
        if !self.ready_to_propose() {
            let _ = reply.send(Err(ControllerError::NotController { leader_id: self.leader_hint() }));
            return;
        }
        let current = self.speculative.as_ref().unwrap_or(&self.image);
        let records = match metadata::ops::plan(current, &op) {
            Ok(records) if !records.is_empty() => records,
            planned => {
                // A refusal or a no-change answer read the image with every pending proposal
                // applied: it holds only if they commit. As Kafka's controller does, answer
                // once the last of them resolves, and with its failure if it fails (an
                // operation refused because of an uncommitted change must not be reported
                // as refused when that change is lost).
                let answer = move |outcome: Result<u64, ControllerError>| {
                    let _ = reply.send(match (outcome, planned) {
                        (Err(error), _) => Err(error),
                        (Ok(index), Ok(records)) => Ok((index, records)),
                        (Ok(_), Err(error)) => Err(ControllerError::Op(error)),
                    });
                };
                self.after_pending(Box::new(answer));
                return;
            }
        };
        let planned = records.clone();
        self.propose(
            records,
            Box::new(move |result: Result<u64, ControllerError>| {
                let _ = reply.send(result.map(|index| (index, planned)));
            }),
        );
    }

    /// Calls `then` once every proposal pending now has resolved: with the last one's index,
    /// or its failure (at once, with the applied index, if none is pending).
    fn after_pending(&mut self, then: Reply) {
        let Some(mut last) = self.pending.last_entry() else {
            then(Ok(self.applied_index));
            return;
        };
        let first: Reply = std::mem::replace(&mut last.get_mut().reply, Box::new(|_| {}));
        last.get_mut().reply = Box::new(move |outcome: Result<u64, ControllerError>| {
            let echoed = match &outcome {
                Ok(index) => Ok(*index),
                Err(ControllerError::NotController { leader_id }) => {
                    Err(ControllerError::NotController { leader_id: *leader_id })
                }
                Err(_) => Err(ControllerError::Indeterminate),
            };
            first(outcome);
            then(echoed);
        });
    }

    fn propose(&mut self, records: Vec<MetadataRecord>, reply: Reply) {
        if !self.ready_to_propose() {
            reply(Err(ControllerError::NotController { leader_id: self.leader_hint() }));
            return;
        }
        if records.is_empty() || records.len() > metadata::record::BATCH_RECORDS_MAX {
            reply(Err(ControllerError::Invalid(format!("{} records in one proposal", records.len()))));
            return;
        }
        let mut next = self.speculative.clone().unwrap_or_else(|| self.image.clone());
        for record in &records {
            if let Err(error) = next.apply(record) {
                reply(Err(ControllerError::Invalid(error.to_string())));
                return;
            }
        }
        let before = self.raw.raft.raft_log.last_index();
        if let Err(error) = self.raw.propose(Vec::new(), encode_batch(&records)) {
            reply(Err(ControllerError::NotController { leader_id: self.leader_hint() }));
            tracing::debug!(%error, "raft refused a proposal");
            return;
        }
        let index = self.raw.raft.raft_log.last_index();
        assert_eq!(index, before + 1, "a proposal appends exactly one entry");
        let _ = self.pending.insert(index, Pending { term: self.raw.raft.term, reply });
        self.speculative = Some(next);
    }

    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            let snapshot = message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
            let sent = self.peers.get(&to).is_some_and(|peer| peer.send(message));
            if !sent {
                self.raw.report_unreachable(to);
                if snapshot {
                    self.raw.report_snapshot(to, SnapshotStatus::Failure);
                }
            }
        }
    }

    async fn persist(&self, write: RaftWrite) -> Result<(), ControllerError> {
        let store = Arc::clone(&self.store);
        rt::task::spawn_blocking(move || store.write(write)).await.map_err(ControllerError::Storage)
    }

    async fn on_ready(&mut self) -> Result<(), ControllerError> {
        if !self.raw.has_ready() {
            self.publish_status();
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            let messages = ready.take_messages();
            self.send(messages);
        }
        let mut write = RaftWrite::default();
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.restore(&snapshot)?;
            write.snapshot = Some(snapshot);
            write.discard_log = true;
        }
        let committed = ready.take_committed_entries();
        self.apply(committed);
        if !ready.entries().is_empty() {
            self.memlog.append(ready.entries());
            write.entries = ready.entries().clone();
        }
        if let Some(hard_state) = ready.hs() {
            self.memlog.set_hard_state(hard_state.clone());
            write.hard_state = Some(hard_state.clone());
        }
        if write.snapshot.is_some() || !write.entries.is_empty() || write.hard_state.is_some() {
            self.persist(write).await?;
        }
        if !ready.persisted_messages().is_empty() {
            let messages = ready.take_persisted_messages();
            self.send(messages);
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.memlog.set_commit(commit);
        }
        let messages = light.take_messages();
        self.send(messages);
        let committed = light.take_committed_entries();
        self.apply(committed);
        self.raw.advance_apply();
        self.maybe_snapshot().await?;
        self.publish_status();
        Ok(())
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), ControllerError> {
        let image = MetadataImage::from_snapshot(&snapshot.data)?;
        let index = snapshot.get_metadata().index;
        self.memlog.restore_snapshot(snapshot.clone());
        self.image = image;
        self.applied_index = index;
        if let Some(observer) = &self.observer {
            observer(&AppliedEntry {
                index,
                term: snapshot.get_metadata().term,
                data: Bytes::new(),
                from_snapshot: true,
            });
        }
        self.publish_image();
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        // Proposals are answered only after the image that includes them is published, so a
        // caller that reads `Quorum::image` next sees its own change.
        let mut answers: Vec<(Reply, Result<u64, ControllerError>)> = Vec::new();
        for entry in entries {
            if entry.index <= self.applied_index {
                continue;
            }
            assert_eq!(entry.index, self.applied_index + 1, "entries are applied in order, without gaps");
            if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
                // Deterministic: every controller and broker skips the same entries.
                if let Err(error) = self.image.apply_entry(&entry.data) {
                    tracing::warn!(index = entry.index, %error, "skipping a committed metadata entry that does not apply");
                }
            }
            self.applied_index = entry.index;
            if let Some(observer) = &self.observer {
                let normal = entry.get_entry_type() == EntryType::EntryNormal;
                observer(&AppliedEntry {
                    index: entry.index,
                    term: entry.term,
                    data: if normal { entry.data.clone() } else { Bytes::new() },
                    from_snapshot: false,
                });
            }
            if let Some(pending) = self.pending.remove(&entry.index) {
                let outcome =
                    if pending.term == entry.term { Ok(entry.index) } else { Err(ControllerError::Indeterminate) };
                answers.push((pending.reply, outcome));
            }
        }
        // Proposals at or below the applied index that were not resolved lost their slot.
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > self.applied_index {
                break;
            }
            answers.push((entry.remove().reply, Err(ControllerError::Indeterminate)));
        }
        if self.pending.is_empty() {
            self.speculative = None;
        }
        self.publish_image();
        for (reply, outcome) in answers {
            reply(outcome);
        }
    }

    async fn maybe_snapshot(&mut self) -> Result<(), ControllerError> {
        let snapshot_index = self.memlog.snapshot_index();
        if self.applied_index < snapshot_index + self.config.snapshot_interval_entries.max(1) {
            return Ok(());
        }
        let Some(term) = self.memlog.entry_term(self.applied_index) else { return Ok(()) };
        let mut snapshot = Snapshot::default();
        snapshot.data = self.image.to_snapshot().into();
        let metadata = snapshot.mut_metadata();
        metadata.index = self.applied_index;
        metadata.term = term;
        metadata.set_conf_state(self.memlog.conf_state());
        self.persist(RaftWrite {
            snapshot: Some(snapshot.clone()),
            compact_to: Some(self.applied_index + 1),
            ..RaftWrite::default()
        })
        .await?;
        self.memlog.compact(snapshot);
        let store = Arc::clone(&self.store);
        rt::task::spawn_blocking(move || store.purge()).await.map_err(ControllerError::Storage)?;
        tracing::debug!(index = self.applied_index, "took a metadata snapshot");
        Ok(())
    }

    fn publish_image(&self) {
        let current = self.published.borrow().applied_index;
        if current != self.applied_index {
            let _ = self.published.send_replace(Arc::new(CommittedImage {
                image: self.image.clone(),
                applied_index: self.applied_index,
            }));
        }
    }

    fn publish_status(&self) {
        let raft = &self.raw.raft;
        let status = QuorumStatus {
            node_id: self.config.node_id,
            term: raft.term,
            role: match raft.state {
                StateRole::Leader => Role::Leader,
                StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
                StateRole::Follower => Role::Follower,
            },
            leader_id: self.leader_hint(),
            commit_index: raft.raft_log.committed,
            applied_index: self.applied_index,
        };
        let _ = self.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }
}
