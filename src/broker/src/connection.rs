//! One client connection: read frames, decode, dispatch, write responses in request order.
//!
//! The reader decodes and dispatches requests one at a time, so their effects (appends, topic
//! creation) happen in request order. A handler may answer at once or return a deferred
//! response (an acks=all produce waiting for its fsync, a fetch waiting for data); deferred
//! responses go into a bounded queue that the writer resolves strictly in order. So a client
//! that pipelines acks=all produces gets them all covered by one group commit, while responses
//! still leave in request order as Kafka requires.
//!
//! Bad input closes the connection, as Kafka does: a frame over `socket.request.max.bytes`,
//! an unknown API key, an unsupported version (except ApiVersions, which gets its v0
//! fallback), or a body that does not decode.

use std::sync::Arc;

use bytes::BytesMut;
use futures::future::BoxFuture;
use protocol::frame::{self, FrameError};
use protocol::kafka_protocol::messages::{ApiKey, ResponseKind};
use rt::io::{AsyncReadExt, AsyncWriteExt};
use rt::net::TcpStream;
use rt::sync::mpsc;

use crate::config::CONNECTION_IN_FLIGHT_MAX;
use crate::handler;
use crate::node::Node;

/// What a handler answers.
pub(crate) enum Reply {
    /// Respond now.
    Now(ResponseKind),
    /// Respond when the future completes (still in request order).
    Later(BoxFuture<'static, ResponseKind>),
    /// Send nothing (acks=0 produce).
    Nothing,
}

/// A response waiting for its turn on the wire.
enum Outgoing {
    /// Encoded bytes.
    Ready(BytesMut),
    /// A deferred response and how to encode it.
    Deferred { api_key: ApiKey, api_version: i16, correlation_id: i32, body: BoxFuture<'static, ResponseKind> },
}

/// Serves one connection until the peer closes it or sends bad input.
pub(crate) async fn serve(node: Arc<Node>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().map(|address| address.to_string()).unwrap_or_default();
    let (reader, writer) = rt::io::split(stream);
    let (sender, receiver) = mpsc::channel(CONNECTION_IN_FLIGHT_MAX);
    let writer_task = rt::task::spawn(write_responses(writer, receiver));
    if let Err(reason) = read_requests(&node, reader, sender, &peer).await {
        tracing::debug!(%peer, %reason, "closing connection");
    }
    let _ = writer_task.await;
}

async fn read_requests(
    node: &Arc<Node>,
    mut reader: rt::io::ReadHalf<TcpStream>,
    sender: mpsc::Sender<Outgoing>,
    peer: &str,
) -> Result<(), String> {
    loop {
        let mut length = [0u8; frame::FRAME_LENGTH_BYTES];
        match reader.read_exact(&mut length).await {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error.to_string()),
        }
        let length = frame::check_frame_length(i32::from_be_bytes(length), node.config.socket_request_max_bytes)
            .map_err(|error| error.to_string())?;
        let mut body = BytesMut::zeroed(length);
        let _ = reader.read_exact(&mut body).await.map_err(|error| error.to_string())?;
        let request = match frame::decode_request(body.freeze()) {
            Ok(request) => request,
            Err(FrameError::UnsupportedVersion { api_key: ApiKey::ApiVersions, correlation_id, .. }) => {
                let fallback = frame::encode_api_versions_fallback(
                    correlation_id,
                    protocol::code(protocol::ResponseError::UnsupportedVersion),
                );
                sender.send(Outgoing::Ready(fallback)).await.map_err(|_| "writer closed".to_owned())?;
                continue;
            }
            Err(error) => return Err(error.to_string()),
        };
        let (api_key, api_version, correlation_id) =
            (request.api_key, request.api_version, request.header.correlation_id);
        let outgoing = match handler::dispatch(node, request, peer).await {
            Reply::Now(body) => Outgoing::Ready(
                frame::encode_response(api_key, api_version, correlation_id, &body).map_err(|error| {
                    // Every handler must build responses its version can carry: this is a bug.
                    tracing::error!(%error, "cannot encode a response; closing the connection");
                    error.to_string()
                })?,
            ),
            Reply::Later(body) => Outgoing::Deferred { api_key, api_version, correlation_id, body },
            Reply::Nothing => continue,
        };
        sender.send(outgoing).await.map_err(|_| "writer closed".to_owned())?;
    }
}

async fn write_responses(mut writer: rt::io::WriteHalf<TcpStream>, mut receiver: mpsc::Receiver<Outgoing>) {
    while let Some(outgoing) = receiver.recv().await {
        let bytes = match outgoing {
            Outgoing::Ready(bytes) => bytes,
            Outgoing::Deferred { api_key, api_version, correlation_id, body } => {
                let body = body.await;
                match frame::encode_response(api_key, api_version, correlation_id, &body) {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        tracing::error!(%error, "cannot encode a response; closing the connection");
                        return;
                    }
                }
            }
        };
        if rt::buggify() {
            // A dropped response: the client must time out and retry (or count the outcome as
            // indeterminate); the server's state is unaffected.
            tracing::debug!("buggify: dropping a response and the connection");
            return;
        }
        if writer.write_all(&bytes).await.is_err() {
            return;
        }
        // Flush only when nothing else is ready, so bursts of small responses share a write.
        if receiver.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}
