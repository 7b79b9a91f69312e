//! The control channel: what brokers ask the controllers, on the controller listener.
//!
//! A connection starts with [`CONTROL_PREAMBLE`], then carries request/response exchanges,
//! one at a time. Each message is a frame: `header_length: u32`, a JSON header
//! ([`ControlRequest`] or [`ControlResponse`]), `blob_length: u32`, and a binary blob (the
//! metadata-log entries and snapshots a [`ControlResponse::Log`] describes; empty otherwise).
//! All lengths are big-endian and bounded by [`FRAME_BYTES_MAX`].
//!
//! These are Kafka's controller RPCs in weir's own framing: registration and heartbeats
//! (BrokerRegistration, BrokerHeartbeat), forwarded metadata changes (KIP-590's forwarding,
//! one [`MetadataOp`] each), and the metadata log fetch observers use to follow the log
//! (KRaft's Fetch and FetchSnapshot on `__cluster_metadata`). The controller listener is not a
//! client listener, so nothing outside weir speaks it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use metadata::image::BrokerRegistration;
use metadata::ops::{MetadataOp, OpError};
use metadata::record::MetadataRecord;
use protocol::ids::NodeId;
use rt::io::{AsyncReadExt, AsyncWriteExt};
use rt::net::TcpStream;

use crate::error::ControllerError;
use crate::transport::{CONNECT_TIMEOUT_MS, FRAME_BYTES_MAX};

/// First bytes of a control connection.
pub const CONTROL_PREAMBLE: &[u8; 8] = b"WEIRCTL1";
/// Longest the active controller may take to commit an operation before the caller gives up
/// on that attempt.
pub const OPERATION_TIMEOUT_MS: u64 = 15_000;
/// Largest request frame part a controller reads: requests carry no blob and small headers,
/// so an unauthenticated peer cannot make it allocate more than this per connection.
pub const REQUEST_BYTES_MAX: usize = 1024 * 1024;
/// Pause before asking again when no controller knows a leader.
const NO_LEADER_BACKOFF_MS: u64 = 100;

/// A broker's request to a controller.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ControlRequest {
    /// Join the cluster (BrokerRegistration). Answered by the active controller.
    Register {
        /// The broker.
        broker_id: NodeId,
        /// Advertised host.
        host: String,
        /// Advertised Kafka port.
        port: u16,
        /// Rack.
        rack: Option<String>,
        /// The epoch of the previous run if it shut down cleanly, else -1.
        previous_broker_epoch: i64,
    },
    /// Keep the session alive (BrokerHeartbeat). Answered by the active controller.
    Heartbeat {
        /// The broker.
        broker_id: NodeId,
        /// Its registration.
        broker_epoch: i64,
        /// The last metadata-log index the broker applied.
        applied_index: u64,
        /// The broker is shutting down: move leadership away (controlled shutdown).
        want_shutdown: bool,
    },
    /// A metadata change. Answered by the active controller once committed and applied.
    Op(MetadataOp),
    /// Committed metadata-log entries from `from_index` on (any controller answers), waiting up
    /// to `max_wait_ms` for one.
    FetchLog {
        /// The first index wanted.
        from_index: u64,
        /// Longest wait for a new entry.
        max_wait_ms: u64,
    },
    /// The quorum and the brokers, as this controller knows them.
    Status,
}

/// An entry in a [`ControlResponse::Log`]; its bytes are the next `length` bytes of the blob.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct LogPart {
    /// Metadata-log index (for a snapshot: the last index it covers).
    pub index: u64,
    /// Bytes in the blob.
    pub length: u32,
}

/// What the controllers know, for `weir cluster status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    /// The controller that answered.
    pub node_id: u64,
    /// Its role: `leader`, `follower` or `candidate`.
    pub role: String,
    /// Its term.
    pub term: u64,
    /// The active controller it knows of.
    pub leader_id: Option<u64>,
    /// Its commit index.
    pub commit_index: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// The voters and their controller addresses.
    pub voters: Vec<(u64, String)>,
    /// Registered brokers, as of its applied index.
    pub brokers: Vec<BrokerRegistration>,
}

/// Why a controller refused a request.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ControlError {
    /// Not the active controller.
    NotController {
        /// The leader it knows of.
        leader_id: Option<u64>,
    },
    /// The operation does not fit the metadata.
    Op(OpError),
    /// A malformed or impossible request.
    Invalid(String),
    /// Leadership changed before the outcome was known.
    Indeterminate,
    /// The controller is stopping or failed.
    Unavailable(String),
}

/// A controller's answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ControlResponse {
    /// The registration committed.
    Registered {
        /// The broker's new epoch.
        broker_epoch: i64,
        /// The metadata-log index of the registration: the broker is caught up once it has
        /// applied it.
        index: u64,
    },
    /// The session is alive.
    Heartbeat {
        /// Whether the broker is fenced now.
        fenced: bool,
        /// Whether it has caught up with the metadata log.
        caught_up: bool,
        /// Controlled shutdown finished: the broker leads nothing and may stop.
        should_shut_down: bool,
    },
    /// An operation committed and was applied by the active controller.
    Applied {
        /// Its index.
        index: u64,
        /// The records it became.
        records: Vec<MetadataRecord>,
    },
    /// Metadata-log entries: a snapshot (when the entries wanted were compacted away) then
    /// entries in index order, their bytes in the blob in the same order.
    Log {
        /// An image snapshot ([`metadata::image::MetadataImage::to_snapshot`]) to start from.
        snapshot: Option<LogPart>,
        /// Entries after it (or after `from_index - 1`).
        entries: Vec<LogPart>,
        /// The active controller this controller knows of.
        leader_id: Option<u64>,
    },
    /// The status.
    Status(ClusterStatus),
    /// A refusal.
    Error(ControlError),
}

impl From<ControllerError> for ControlError {
    fn from(error: ControllerError) -> ControlError {
        match error {
            ControllerError::NotController { leader_id } => ControlError::NotController { leader_id },
            ControllerError::Op(error) => ControlError::Op(error),
            ControllerError::Invalid(detail) => ControlError::Invalid(detail),
            ControllerError::Indeterminate => ControlError::Indeterminate,
            other => ControlError::Unavailable(other.to_string()),
        }
    }
}

impl From<ControlError> for ControllerError {
    fn from(error: ControlError) -> ControllerError {
        match error {
            ControlError::NotController { leader_id } => ControllerError::NotController { leader_id },
            ControlError::Op(error) => ControllerError::Op(error),
            ControlError::Invalid(detail) => ControllerError::Invalid(detail),
            ControlError::Indeterminate => ControllerError::Indeterminate,
            ControlError::Unavailable(detail) => ControllerError::Unavailable(detail),
        }
    }
}

fn invalid_data(detail: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, detail.into())
}

/// Writes one frame.
pub(crate) async fn write_frame<M: serde::Serialize>(
    stream: &mut TcpStream,
    message: &M,
    blob: &[u8],
) -> std::io::Result<()> {
    let header = serde_json::to_vec(message).map_err(|error| invalid_data(error.to_string()))?;
    if header.len() > FRAME_BYTES_MAX || blob.len() > FRAME_BYTES_MAX {
        return Err(invalid_data("control frame over the bound"));
    }
    let mut frame = Vec::with_capacity(8 + header.len() + blob.len());
    frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(&(blob.len() as u32).to_be_bytes());
    frame.extend_from_slice(blob);
    stream.write_all(&frame).await?;
    stream.flush().await
}

async fn read_part(stream: &mut TcpStream, bytes_max: usize) -> std::io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await?;
    let length = u32::from_be_bytes(length) as usize;
    if length > bytes_max {
        return Err(invalid_data("control frame over the bound"));
    }
    let mut bytes = vec![0u8; length];
    stream.read_exact(&mut bytes).await?;
    Ok(bytes)
}

/// Reads one frame, each part at most `bytes_max`: the decoded header and the blob.
pub(crate) async fn read_frame<M: serde::de::DeserializeOwned>(
    stream: &mut TcpStream,
    bytes_max: usize,
) -> std::io::Result<(M, Bytes)> {
    let header = read_part(stream, bytes_max).await?;
    let message = serde_json::from_slice(&header).map_err(|error| invalid_data(error.to_string()))?;
    let blob = read_part(stream, bytes_max).await?;
    Ok((message, Bytes::from(blob)))
}

/// Sends one request to the controller at `address` and waits up to `timeout_ms` for the
/// answer.
///
/// # Errors
/// Connection failures, timeouts and malformed answers.
pub async fn call(
    address: &str,
    request: &ControlRequest,
    timeout_ms: u64,
) -> std::io::Result<(ControlResponse, Bytes)> {
    let connect = rt::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), TcpStream::connect(address));
    let mut stream = connect
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connect to {address} timed out")))??;
    let _ = stream.set_nodelay(true);
    let exchange = async {
        stream.write_all(CONTROL_PREAMBLE).await?;
        write_frame(&mut stream, request, &[]).await?;
        read_frame::<ControlResponse>(&mut stream, FRAME_BYTES_MAX).await
    };
    rt::time::timeout(Duration::from_millis(timeout_ms), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{address} did not answer in time")))?
}

/// Finds the active controller among the voters and sends it requests.
#[derive(Debug)]
pub struct ControllerClient {
    voters: BTreeMap<u64, String>,
    /// The last controller known to lead (or to answer, for reads).
    leader: Mutex<Option<u64>>,
}

impl ControllerClient {
    /// A client of these voters (id to `host:port`).
    pub fn new(voters: BTreeMap<u64, String>) -> ControllerClient {
        ControllerClient { voters, leader: Mutex::new(None) }
    }

    /// The active controller as last seen.
    pub fn leader_hint(&self) -> Option<u64> {
        *self.leader.lock().expect("leader lock is never poisoned")
    }

    /// Records the active controller as someone else reported it.
    pub fn note_leader(&self, leader: Option<u64>) {
        if leader.is_some_and(|leader| self.voters.contains_key(&leader)) {
            self.set_leader(leader);
        }
    }

    fn set_leader(&self, leader: Option<u64>) {
        *self.leader.lock().expect("leader lock is never poisoned") = leader;
    }

    /// The voters.
    pub fn voters(&self) -> &BTreeMap<u64, String> {
        &self.voters
    }

    /// Voters to try, the hinted leader first.
    fn order(&self) -> Vec<u64> {
        let hint = self.leader_hint();
        let mut order: Vec<u64> = hint.into_iter().collect();
        order.extend(self.voters.keys().copied().filter(|id| Some(*id) != hint));
        order
    }

    /// Sends a request to the active controller, following leader hints and trying every
    /// voter, until it is answered (an error answer other than "not the controller" counts)
    /// or `deadline_ms` passes.
    ///
    /// # Errors
    /// [`ControllerError::Unavailable`] if no controller answered as the active one in time;
    /// the controller's refusal otherwise.
    pub async fn call_leader(
        &self,
        request: &ControlRequest,
        timeout_ms: u64,
        deadline_ms: u64,
    ) -> Result<(ControlResponse, Bytes), ControllerError> {
        if self.voters.is_empty() {
            return Err(ControllerError::Unavailable("no controller voters configured".into()));
        }
        let start = rt::time::Instant::now();
        let mut last_problem;
        loop {
            for voter in self.order() {
                let address = &self.voters[&voter];
                match call(address, request, timeout_ms).await {
                    Ok((ControlResponse::Error(ControlError::NotController { leader_id }), _)) => {
                        last_problem = format!("controller {voter} is not the active controller");
                        if let Some(leader) = leader_id.filter(|leader| *leader != voter) {
                            self.set_leader(Some(leader));
                            if let Some(address) = self.voters.get(&leader) {
                                match call(address, request, timeout_ms).await {
                                    Ok((ControlResponse::Error(ControlError::NotController { .. }), _)) => {}
                                    Ok(answer) => return Self::answer(answer),
                                    Err(error) => last_problem = format!("controller {leader}: {error}"),
                                }
                            }
                        }
                    }
                    Ok(answer) => {
                        self.set_leader(Some(voter));
                        return Self::answer(answer);
                    }
                    Err(error) => last_problem = format!("controller {voter} at {address}: {error}"),
                }
                self.set_leader(None);
                if start.elapsed() >= Duration::from_millis(deadline_ms) {
                    return Err(ControllerError::Unavailable(last_problem));
                }
            }
            rt::time::sleep(Duration::from_millis(NO_LEADER_BACKOFF_MS)).await;
        }
    }

    /// Sends a request to one controller after another until one answers.
    ///
    /// # Errors
    /// [`ControllerError::Unavailable`] if none did.
    pub async fn call_any(
        &self,
        request: &ControlRequest,
        timeout_ms: u64,
    ) -> Result<(ControlResponse, Bytes), ControllerError> {
        let mut last_problem = String::from("no controllers configured");
        for voter in self.order() {
            match call(&self.voters[&voter], request, timeout_ms).await {
                Ok(answer) => return Self::answer(answer),
                Err(error) => last_problem = format!("controller {voter}: {error}"),
            }
        }
        Err(ControllerError::Unavailable(last_problem))
    }

    fn answer((response, blob): (ControlResponse, Bytes)) -> Result<(ControlResponse, Bytes), ControllerError> {
        match response {
            ControlResponse::Error(error) => Err(error.into()),
            response => Ok((response, blob)),
        }
    }

    /// Commits a metadata operation through the active controller.
    ///
    /// # Errors
    /// As [`ControllerClient::call_leader`].
    pub async fn submit(&self, op: MetadataOp) -> Result<(u64, Vec<MetadataRecord>), ControllerError> {
        match self.call_leader(&ControlRequest::Op(op), OPERATION_TIMEOUT_MS, OPERATION_TIMEOUT_MS).await? {
            (ControlResponse::Applied { index, records }, _) => Ok((index, records)),
            (other, _) => Err(ControllerError::Unavailable(format!("unexpected answer {other:?}"))),
        }
    }
}
