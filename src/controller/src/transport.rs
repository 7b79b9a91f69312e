//! The Raft peer channel: raft-rs messages between controllers over TCP.
//!
//! A connection starts with [`PREAMBLE`] and the sender's node id (8 bytes, big-endian), then
//! carries frames: `length: u32` (big-endian) + a protobuf-encoded `eraftpb::Message`. The
//! preamble's first byte is not zero, so a Kafka client (whose frames begin with a size whose
//! top byte is zero) can never be mistaken for a peer on a shared listener.
//!
//! Connections are one-way: each controller dials every other voter and only writes on that
//! connection; what it receives arrives on the connections the others dialled. Raft tolerates
//! loss, so a full queue or a broken connection drops messages (the driver is told, so that
//! raft-rs probes again) instead of blocking the driver.

use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use rt::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use rt::net::{TcpListener, TcpStream};
use rt::sync::mpsc;

/// First bytes of a peer connection.
pub const PREAMBLE: &[u8; 8] = b"WEIRAFT1";
/// Largest frame accepted (a snapshot of a large cluster's metadata fits).
pub const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 4096;
/// How long a dial may take.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// How long a new connection may take to send its preamble.
pub const PREAMBLE_TIMEOUT_MS: u64 = 5_000;
/// After a failed dial, messages to that peer are dropped for this long.
pub const RECONNECT_BACKOFF_MS: u64 = 200;

/// What the transport tells the driver.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A message arrived from a peer.
    Received(Message),
    /// Messages to this peer were dropped (it is unreachable for now).
    Unreachable(u64),
    /// A snapshot message was written to the peer (`true`) or dropped (`false`).
    SnapshotSent(u64, bool),
}

/// Sends to one peer.
#[derive(Debug, Clone)]
pub(crate) struct PeerSender {
    queue: mpsc::Sender<Message>,
}

impl PeerSender {
    /// Starts the task that dials `address` and writes what is queued.
    pub(crate) fn start(self_id: u64, peer_id: u64, address: String, deliveries: mpsc::Sender<Delivery>) -> PeerSender {
        let (queue, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
        drop(rt::task::spawn(run_peer(self_id, peer_id, address, receiver, deliveries)));
        PeerSender { queue }
    }

    /// Queues a message; false if the queue is full (the message is dropped).
    pub(crate) fn send(&self, message: Message) -> bool {
        self.queue.try_send(message).is_ok()
    }
}

async fn dial(self_id: u64, address: &str) -> std::io::Result<BufWriter<TcpStream>> {
    let connect = TcpStream::connect(address);
    let stream = rt::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    let mut writer = BufWriter::new(stream);
    writer.write_all(PREAMBLE).await?;
    writer.write_all(&self_id.to_be_bytes()).await?;
    Ok(writer)
}

async fn write_message(writer: &mut BufWriter<TcpStream>, message: &Message) -> std::io::Result<()> {
    let bytes =
        message.write_to_bytes().map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))?;
    let length = u32::try_from(bytes.len())
        .ok()
        .filter(|length| *length as usize <= FRAME_BYTES_MAX)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "raft message over the frame bound"))?;
    writer.write_all(&length.to_be_bytes()).await?;
    writer.write_all(&bytes).await
}

async fn run_peer(
    self_id: u64,
    peer_id: u64,
    address: String,
    mut queue: mpsc::Receiver<Message>,
    deliveries: mpsc::Sender<Delivery>,
) {
    let mut connection: Option<BufWriter<TcpStream>> = None;
    let mut backoff_until: Option<rt::time::Instant> = None;
    while let Some(first) = queue.recv().await {
        // Everything queued now goes out with one flush.
        let mut batch = vec![first];
        while let Ok(message) = queue.try_recv() {
            batch.push(message);
        }
        if connection.is_none() && backoff_until.is_none_or(|until| rt::time::Instant::now() >= until) {
            match dial(self_id, &address).await {
                Ok(writer) => connection = Some(writer),
                Err(error) => {
                    tracing::debug!(peer_id, %address, %error, "cannot reach controller peer");
                    backoff_until = Some(rt::time::Instant::now() + Duration::from_millis(RECONNECT_BACKOFF_MS));
                }
            }
        }
        let mut delivered = false;
        if let Some(writer) = connection.as_mut() {
            let mut result = Ok(());
            for message in &batch {
                result = write_message(writer, message).await;
                if result.is_err() {
                    break;
                }
            }
            if result.is_ok() {
                result = writer.flush().await;
            }
            match result {
                Ok(()) => delivered = true,
                Err(error) => {
                    tracing::debug!(peer_id, %error, "controller peer connection lost");
                    connection = None;
                }
            }
        }
        for message in batch.iter().filter(|message| message.get_msg_type() == MessageType::MsgSnapshot) {
            let _ = deliveries.send(Delivery::SnapshotSent(message.to, delivered)).await;
        }
        if !delivered {
            let _ = deliveries.send(Delivery::Unreachable(peer_id)).await;
        }
    }
}

/// Accepts peer connections and forwards their messages to the driver. Connections that
/// start with [`crate::rpc::CONTROL_PREAMBLE`] go to `control` (the controller's RPC service);
/// connections that start with neither preamble, or send a malformed frame, are closed.
pub(crate) async fn accept_peers(
    listener: TcpListener,
    deliveries: mpsc::Sender<Delivery>,
    control: Option<mpsc::Sender<TcpStream>>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "controller listener accept failed");
                rt::time::sleep(Duration::from_millis(RECONNECT_BACKOFF_MS)).await;
                continue;
            }
        };
        let deliveries = deliveries.clone();
        let control = control.clone();
        drop(rt::task::spawn(async move {
            if let Err(error) = read_peer(stream, deliveries, control).await {
                tracing::debug!(%remote, %error, "controller peer connection closed");
            }
        }));
    }
}

async fn read_peer(
    mut stream: TcpStream,
    deliveries: mpsc::Sender<Delivery>,
    control: Option<mpsc::Sender<TcpStream>>,
) -> std::io::Result<()> {
    let invalid = |text: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, text.to_owned());
    let mut preamble = [0u8; 8];
    let read = rt::time::timeout(Duration::from_millis(PREAMBLE_TIMEOUT_MS), stream.read_exact(&mut preamble)).await;
    read.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no preamble"))??;
    if &preamble == crate::rpc::CONTROL_PREAMBLE {
        if let Some(control) = control {
            let _ = control.send(stream).await;
            return Ok(());
        }
        return Err(invalid("this controller serves no control requests"));
    }
    if &preamble != PREAMBLE {
        return Err(invalid("not a weir controller peer"));
    }
    let mut peer_id = [0u8; 8];
    stream.read_exact(&mut peer_id).await?;
    let peer_id = u64::from_be_bytes(peer_id);
    loop {
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).await?;
        let length = u32::from_be_bytes(length) as usize;
        if length > FRAME_BYTES_MAX {
            return Err(invalid("raft frame over the bound"));
        }
        let mut bytes = vec![0u8; length];
        stream.read_exact(&mut bytes).await?;
        let message = Message::parse_from_bytes(&bytes).map_err(|_| invalid("raft message does not decode"))?;
        if message.from != peer_id {
            return Err(invalid("raft message from another node than the connection's"));
        }
        if deliveries.send(Delivery::Received(message)).await.is_err() {
            return Ok(());
        }
    }
}
