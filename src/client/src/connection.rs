//! One TCP connection to one broker, with requests pipelined and matched to responses by
//! correlation id.
//!
//! # Design
//!
//! A connection is two tasks and a map. Callers encode their request, register a oneshot
//! under a fresh correlation id in the pending map, and queue the frame to the **writer**
//! task, which writes every queued frame and then flushes once (simulated TCP holds writes
//! until a flush). The **reader** task reads length-prefixed response frames, takes the
//! pending entry for the frame's correlation id, decodes the body at the version the request
//! was sent with, and completes the oneshot.
//!
//! # Invariants
//!
//! * At most [`IN_FLIGHT_REQUESTS_MAX`] requests are pending; a caller beyond that waits.
//! * Once a connection is dead it stays dead: every pending request and every later caller
//!   gets a retriable [`ClientError::Disconnected`], and the pool dials a new connection on
//!   next use. Any I/O error, a frame length outside `0..=socket_max_bytes`, an unknown
//!   correlation id, and any request timeout kill the connection.
//! * No response frame is allocated before its length was checked against the bound.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use protocol::frame::{check_frame_length, decode_response, encode_request, peek_correlation_id};
use protocol::kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestKind, ResponseKind};
use protocol::kafka_protocol::protocol::StrBytes;
use protocol::ResponseError;
use rt::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use rt::net::TcpStream;
use rt::sync::{mpsc, oneshot, Semaphore};
use rt::task::JoinHandle;
use rt::time::{timeout, Duration};

use crate::error::{ClientError, DisconnectCause};
use crate::limits::{CLIENT_SOFTWARE_NAME, IN_FLIGHT_REQUESTS_MAX, WRITE_QUEUE_FRAMES_MAX};
use crate::versions::{
    api_versions_retry_version, decode_api_versions_response, BrokerApiVersions, API_VERSIONS_HANDSHAKE_VERSION,
};

/// Bytes of the correlation id that starts every response frame.
const CORRELATION_ID_BYTES: usize = 4;

/// Locks a mutex that only guards plain data and is never held across an await. A panic while
/// holding it cannot leave the data half-updated in a way we rely on, so poisoning is ignored.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a connection is set up with.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionOptions {
    /// Sent in every request header.
    pub(crate) client_id: String,
    /// Bound on connect + handshake and on each request.
    pub(crate) request_timeout: Duration,
    /// Bound on a response frame.
    pub(crate) socket_max_bytes: usize,
}

/// A request waiting for its response.
struct Pending {
    /// The API, to pick the decoder.
    api_key: ApiKey,
    /// The version the request was sent at; the response uses the same.
    api_version: i16,
    /// Where the decoded response goes.
    reply: oneshot::Sender<Result<ResponseKind, ClientError>>,
}

/// State shared by the handle and both tasks.
struct Shared {
    /// `host:port`, for error reports.
    address: String,
    /// Bounds the pending map.
    in_flight: Semaphore,
    /// Correlation ids are handed out in order; wrapping after 2^31 requests is harmless
    /// because at most `IN_FLIGHT_REQUESTS_MAX` are pending.
    next_correlation_id: AtomicI32,
    /// Pending requests, the death cause, and the reader's handle.
    state: Mutex<SharedState>,
}

#[derive(Default)]
struct SharedState {
    pending: BTreeMap<i32, Pending>,
    /// Set once, when the connection dies.
    dead: Option<DisconnectCause>,
    /// Aborted on death so the socket's read half is released.
    reader: Option<JoinHandle<()>>,
}

impl Shared {
    fn disconnected(&self, cause: DisconnectCause) -> ClientError {
        ClientError::Disconnected { address: self.address.clone(), cause }
    }

    fn dead(&self) -> Option<DisconnectCause> {
        lock(&self.state).dead
    }

    /// Marks the connection dead (first cause wins), fails every pending request, and stops
    /// the reader. The writer notices on its next frame or when the handle is dropped.
    fn shut_down(&self, cause: DisconnectCause) {
        let (pending, reader) = {
            let mut state = lock(&self.state);
            if state.dead.is_none() {
                state.dead = Some(cause);
                tracing::debug!(address = %self.address, %cause, "broker connection closed");
            }
            (std::mem::take(&mut state.pending), state.reader.take())
        };
        let cause = self.dead().unwrap_or(cause);
        for (_, request) in pending {
            // The caller may have given up already; nothing to do then.
            let _ = request.reply.send(Err(self.disconnected(cause)));
        }
        if let Some(reader) = reader {
            reader.abort();
        }
    }
}

/// A live (or dead) connection to one broker, after the ApiVersions handshake.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    /// Frames for the writer task; dropping it stops the writer.
    frames: mpsc::Sender<BytesMut>,
    /// What the broker serves, from the handshake.
    versions: BrokerApiVersions,
    options: ConnectionOptions,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.shared.address)
            .field("dead", &self.shared.dead())
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Nothing can be pending (every request holds a reference to the connection), but the
        // reader must be stopped or it would keep the socket open forever.
        if let Some(reader) = lock(&self.shared.state).reader.take() {
            reader.abort();
        }
    }
}

impl Connection {
    /// Dials `address`, starts the reader and writer tasks and performs the ApiVersions
    /// handshake, all within `request_timeout`.
    ///
    /// # Errors
    /// `Connect` if the dial fails or the whole setup times out; whatever the handshake
    /// request returns otherwise.
    pub(crate) async fn connect(address: &str, options: ConnectionOptions) -> Result<Connection, ClientError> {
        let connect_error = |kind| ClientError::Connect { address: address.to_owned(), kind };
        let setup = async {
            let stream = TcpStream::connect(address).await.map_err(|error| connect_error(error.kind()))?;
            // Latency matters more than packet count for request/response traffic.
            let _ = stream.set_nodelay(true);
            let mut connection = Connection::start(address, stream, options.clone());
            connection.handshake().await?;
            Ok(connection)
        };
        match timeout(options.request_timeout, setup).await {
            Ok(result) => result,
            Err(_) => Err(connect_error(std::io::ErrorKind::TimedOut)),
        }
    }

    /// Spawns the reader and writer over a connected stream (no handshake yet).
    fn start(address: &str, stream: TcpStream, options: ConnectionOptions) -> Connection {
        let (read, write) = rt::io::split(stream);
        let shared = Arc::new(Shared {
            address: address.to_owned(),
            in_flight: Semaphore::new(IN_FLIGHT_REQUESTS_MAX),
            next_correlation_id: AtomicI32::new(0),
            state: Mutex::new(SharedState::default()),
        });
        let (frames, queued) = mpsc::channel(WRITE_QUEUE_FRAMES_MAX);
        drop(rt::task::spawn(write_loop(Arc::clone(&shared), write, queued)));
        let reader = rt::task::spawn(read_loop(Arc::clone(&shared), read, options.socket_max_bytes));
        lock(&shared.state).reader = Some(reader);
        Connection { shared, frames, versions: BrokerApiVersions::default(), options }
    }

    /// ApiVersions at v3; on UNSUPPORTED_VERSION (answered in v0 format) once more at the
    /// highest version the broker listed (KIP-511).
    async fn handshake(&mut self) -> Result<(), ClientError> {
        let request = RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str(CLIENT_SOFTWARE_NAME))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION"))),
        );
        let mut version = API_VERSIONS_HANDSHAKE_VERSION;
        let mut retried = false;
        loop {
            let ResponseKind::ApiVersions(response) = self.request_at(ApiKey::ApiVersions, version, &request).await?
            else {
                return Err(ClientError::UnexpectedResponse { api_key: ApiKey::ApiVersions });
            };
            match ResponseError::try_from_code(response.error_code) {
                None => {
                    self.versions = BrokerApiVersions::from_response(&response);
                    return Ok(());
                }
                Some(ResponseError::UnsupportedVersion) if !retried => {
                    version = api_versions_retry_version(&response);
                    retried = true;
                }
                Some(error) => return Err(ClientError::Broker { error, message: None }),
            }
        }
    }

    /// Whether the connection can still carry requests.
    pub(crate) fn is_alive(&self) -> bool {
        self.shared.dead().is_none()
    }

    /// The version this connection would send `api_key` at.
    ///
    /// # Errors
    /// `UnsupportedApi` or `UnsupportedVersion`.
    pub(crate) fn version_for(&self, api_key: ApiKey) -> Result<i16, ClientError> {
        self.versions.choose(api_key).map_err(|error| match error {
            ClientError::UnsupportedApi { api_key, .. } => {
                ClientError::UnsupportedApi { address: self.shared.address.clone(), api_key }
            }
            other => other,
        })
    }

    /// Sends a request at the negotiated version and waits for its response.
    ///
    /// # Errors
    /// Version negotiation errors, encode/decode errors, `Disconnected`, `RequestTimeout`.
    pub(crate) async fn send(&self, request: &RequestKind) -> Result<ResponseKind, ClientError> {
        let api_key = request_api_key(request)?;
        let version = self.version_for(api_key)?;
        self.request_at(api_key, version, request).await
    }

    /// Sends a request for which the broker sends no response (Produce with acks=0). Returns
    /// once the frame is queued to the writer.
    ///
    /// # Errors
    /// Version negotiation and encode errors, `Disconnected`.
    pub(crate) async fn send_without_response(&self, request: &RequestKind) -> Result<(), ClientError> {
        let api_key = request_api_key(request)?;
        let version = self.version_for(api_key)?;
        if let Some(cause) = self.shared.dead() {
            return Err(self.shared.disconnected(cause));
        }
        let correlation_id = self.shared.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_request(api_key, version, correlation_id, &self.options.client_id, request)?;
        match timeout(self.options.request_timeout, self.frames.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.shared.disconnected(self.shared.dead().unwrap_or(DisconnectCause::Closed))),
            Err(_) => {
                self.shared.shut_down(DisconnectCause::RequestTimedOut);
                Err(self.timeout_error(api_key))
            }
        }
    }

    fn timeout_error(&self, api_key: ApiKey) -> ClientError {
        let timeout_ms = u64::try_from(self.options.request_timeout.as_millis()).unwrap_or(u64::MAX);
        ClientError::RequestTimeout { address: self.shared.address.clone(), api_key, timeout_ms }
    }

    /// Sends a request at an explicit version and waits for the response, all within the
    /// request timeout. A timeout kills the connection.
    async fn request_at(
        &self,
        api_key: ApiKey,
        api_version: i16,
        request: &RequestKind,
    ) -> Result<ResponseKind, ClientError> {
        match timeout(self.options.request_timeout, self.exchange(api_key, api_version, request)).await {
            Ok(result) => result,
            Err(_) => {
                self.shared.shut_down(DisconnectCause::RequestTimedOut);
                Err(self.timeout_error(api_key))
            }
        }
    }

    async fn exchange(
        &self,
        api_key: ApiKey,
        api_version: i16,
        request: &RequestKind,
    ) -> Result<ResponseKind, ClientError> {
        let shared = &self.shared;
        let gone = || shared.disconnected(shared.dead().unwrap_or(DisconnectCause::Closed));
        // The semaphore is never closed, so acquiring only fails if that changes.
        let _slot = shared.in_flight.acquire().await.map_err(|_| gone())?;
        let correlation_id = shared.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_request(api_key, api_version, correlation_id, &self.options.client_id, request)?;
        let (reply, response) = oneshot::channel();
        {
            let mut state = lock(&shared.state);
            if let Some(cause) = state.dead {
                return Err(shared.disconnected(cause));
            }
            state.pending.insert(correlation_id, Pending { api_key, api_version, reply });
        }
        if self.frames.send(frame).await.is_err() {
            lock(&shared.state).pending.remove(&correlation_id);
            return Err(gone());
        }
        // The sender is dropped without a reply only if the reader stopped without shut_down.
        response.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// Writes queued frames; flushes after each burst.
async fn write_loop(shared: Arc<Shared>, mut write: WriteHalf<TcpStream>, mut queued: mpsc::Receiver<BytesMut>) {
    while let Some(frame) = queued.recv().await {
        if shared.dead().is_some() {
            break;
        }
        let mut result = write.write_all(&frame).await;
        while result.is_ok() {
            match queued.try_recv() {
                Ok(next) => result = write.write_all(&next).await,
                Err(_) => break,
            }
        }
        if result.is_ok() {
            result = write.flush().await;
        }
        if let Err(error) = result {
            shared.shut_down(DisconnectCause::Io(error.kind()));
            break;
        }
    }
}

/// Reads response frames and completes their pending requests until the connection dies.
async fn read_loop(shared: Arc<Shared>, mut read: ReadHalf<TcpStream>, max_bytes: usize) {
    let io_cause = |error: std::io::Error| match error.kind() {
        std::io::ErrorKind::UnexpectedEof => DisconnectCause::Closed,
        kind => DisconnectCause::Io(kind),
    };
    let cause = loop {
        let length = match read.read_i32().await {
            Ok(length) => length,
            Err(error) => break io_cause(error),
        };
        let length = match check_frame_length(length, max_bytes) {
            Ok(length) if length >= CORRELATION_ID_BYTES => length,
            _ => break DisconnectCause::FrameLength { length, max_bytes },
        };
        let mut body = BytesMut::zeroed(length);
        if let Err(error) = read.read_exact(&mut body).await {
            break io_cause(error);
        }
        let frame = body.freeze();
        let correlation_id = peek_correlation_id(&frame).unwrap_or(-1);
        let Some(pending) = lock(&shared.state).pending.remove(&correlation_id) else {
            break DisconnectCause::UnknownCorrelationId(correlation_id);
        };
        let result = decode(pending.api_key, pending.api_version, frame);
        // The caller may have been cancelled; the response is then dropped.
        let _ = pending.reply.send(result);
    };
    shared.shut_down(cause);
}

/// Decodes one response body; a malformed body fails only its own request (the frame
/// boundary is intact, so the stream is still in step).
fn decode(api_key: ApiKey, api_version: i16, frame: Bytes) -> Result<ResponseKind, ClientError> {
    if api_key == ApiKey::ApiVersions {
        let (_, response) = decode_api_versions_response(api_version, frame)?;
        return Ok(ResponseKind::ApiVersions(response));
    }
    let (_, response) = decode_response(api_key, api_version, frame)?;
    Ok(response)
}

macro_rules! api_key_of {
    ($request:expr; $($variant:ident),* $(,)?) => {
        match $request {
            $(RequestKind::$variant(_) => Ok(ApiKey::$variant),)*
            // Only reachable if the protocol crate grows a variant this list lacks.
            #[allow(unreachable_patterns)]
            _ => Err(ClientError::UnsupportedRequest),
        }
    };
}

/// The API of a request body.
///
/// # Errors
/// `UnsupportedRequest` for a request kind this client does not know.
pub(crate) fn request_api_key(request: &RequestKind) -> Result<ApiKey, ClientError> {
    api_key_of!(request;
        Produce, Fetch, ListOffsets, Metadata, OffsetCommit, OffsetFetch, FindCoordinator, JoinGroup,
        Heartbeat, LeaveGroup, SyncGroup, DescribeGroups, ListGroups, SaslHandshake, ApiVersions,
        CreateTopics, DeleteTopics, DeleteRecords, InitProducerId, OffsetForLeaderEpoch,
        AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, WriteTxnMarkers, TxnOffsetCommit, DescribeAcls,
        CreateAcls, DeleteAcls, DescribeConfigs, AlterConfigs, AlterReplicaLogDirs, DescribeLogDirs,
        SaslAuthenticate, CreatePartitions, CreateDelegationToken, RenewDelegationToken,
        ExpireDelegationToken, DescribeDelegationToken, DeleteGroups, ElectLeaders,
        IncrementalAlterConfigs, AlterPartitionReassignments, ListPartitionReassignments, OffsetDelete,
        DescribeClientQuotas, AlterClientQuotas, DescribeUserScramCredentials,
        AlterUserScramCredentials, Vote, BeginQuorumEpoch, EndQuorumEpoch, DescribeQuorum,
        AlterPartition, UpdateFeatures, Envelope, FetchSnapshot, DescribeCluster, DescribeProducers,
        BrokerRegistration, BrokerHeartbeat, UnregisterBroker, DescribeTransactions, ListTransactions,
        AllocateProducerIds, ConsumerGroupHeartbeat, ConsumerGroupDescribe, ControllerRegistration,
        GetTelemetrySubscriptions, PushTelemetry, AssignReplicasToDirs, ListConfigResources,
        DescribeTopicPartitions, ShareGroupHeartbeat, ShareGroupDescribe, ShareFetch, ShareAcknowledge,
        AddRaftVoter, RemoveRaftVoter, UpdateRaftVoter, InitializeShareGroupState, ReadShareGroupState,
        WriteShareGroupState, DeleteShareGroupState, ReadShareGroupStateSummary,
        DescribeShareGroupOffsets, AlterShareGroupOffsets, DeleteShareGroupOffsets,
    )
}

/// One connection to one broker, without metadata or routing: for broker-to-broker traffic
/// such as a follower fetching from its leader. Requests go at the highest version both sides
/// support; the connection is dead after any transport error (make a new one).
#[derive(Debug)]
pub struct BrokerConnection {
    connection: Connection,
}

impl BrokerConnection {
    /// Dials `address` and performs the ApiVersions handshake, within `request_timeout_ms`.
    ///
    /// # Errors
    /// `Connect` if the dial or handshake fails or times out.
    pub async fn connect(
        address: &str,
        client_id: &str,
        request_timeout_ms: u64,
        socket_max_bytes: usize,
    ) -> Result<BrokerConnection, ClientError> {
        let options = ConnectionOptions {
            client_id: client_id.to_owned(),
            request_timeout: Duration::from_millis(request_timeout_ms),
            socket_max_bytes,
        };
        Ok(BrokerConnection { connection: Connection::connect(address, options).await? })
    }

    /// Sends a request and waits (bounded by the request timeout) for its response.
    ///
    /// # Errors
    /// Version negotiation, encode/decode, `Disconnected`, `RequestTimeout`.
    pub async fn send(&self, request: &RequestKind) -> Result<ResponseKind, ClientError> {
        self.connection.send(request).await
    }

    /// The version requests of `api_key` go at.
    ///
    /// # Errors
    /// `UnsupportedApi` or `UnsupportedVersion`.
    pub fn version_for(&self, api_key: ApiKey) -> Result<i16, ClientError> {
        self.connection.version_for(api_key)
    }

    /// Whether the connection can still carry requests.
    pub fn is_alive(&self) -> bool {
        self.connection.is_alive()
    }
}
