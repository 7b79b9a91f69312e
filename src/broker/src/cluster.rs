//! A cluster member's link to the controller quorum: following the metadata log as an
//! observer, registration and heartbeats, and controlled shutdown.
//!
//! * **Following.** A task fetches committed entries from the controllers (any of them; they
//!   only serve what they applied, which is committed) and folds them into the image with
//!   [`metadata::image::MetadataImage::apply_entry`], the same fold the controllers use, so
//!   the broker's image is always the image of a prefix of the committed log. When the entries
//!   it needs were compacted away it starts again from a snapshot of a controller's image.
//!   After each batch the node reconciles its partitions, then publishes the applied index
//!   (which operations this broker committed wait for).
//! * **Lifecycle.** The broker registers with the active controller (sending the epoch its
//!   previous run shut down cleanly with, so the controller can tell a crash), starts fenced,
//!   and heartbeats every `broker.heartbeat.interval.ms` with the index it applied; the
//!   controller unfences it once that reaches its registration. A heartbeat answered "stale
//!   epoch" (the controller forgot or replaced the registration) makes it register again. Once
//!   caught up the first time, partition directories the image does not place here are
//!   removed.
//! * **Controlled shutdown.** On shutdown the broker heartbeats with `want_shutdown` until the
//!   controller has moved its leaderships away (bounded), flushes, and records its epoch in
//!   `clean.shutdown` for the next registration.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use controller::rpc::{ControlRequest, ControlResponse, ControllerClient};
use controller::ControllerError;
use metadata::image::MetadataImage;
use metadata::ops::OpError;
use rt::sync::watch;
use storage::OpenMode;

use crate::error::BrokerError;
use crate::node::{Node, METADATA_DIR};

/// How long a metadata fetch waits at the controller for a new entry.
pub(crate) const FOLLOW_WAIT_MS: u64 = 2_000;
/// Pause after a failed fetch or registration.
const RETRY_BACKOFF_MS: u64 = 250;
/// Longest one registration or heartbeat exchange may take.
const LIFECYCLE_CALL_TIMEOUT_MS: u64 = 5_000;
/// Kafka's default `broker.heartbeat.interval.ms`.
pub const BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 2_000;
/// Longest a controlled shutdown waits for the controller to move leadership away.
pub(crate) const CONTROLLED_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
/// How often a broker waiting to be unfenced says so.
const READY_LOG_INTERVAL_MS: u64 = 5_000;
/// File (in the metadata directory) holding the broker epoch of a clean shutdown.
const CLEAN_SHUTDOWN_FILE: &str = "clean.shutdown";

/// Called after the broker applied a batch of the metadata log, with the last index applied
/// and the image (the simulator checks every broker image against the committed log).
pub type ImageObserver = Arc<dyn Fn(u64, &MetadataImage) + Send + Sync>;

/// How a broker reaches the controller quorum.
#[derive(Clone)]
pub struct ClusterConfig {
    /// The voters: id to controller `host:port`.
    pub voters: BTreeMap<u64, String>,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// Watches the image as the broker applies the log (`None` outside the simulator).
    pub image_observer: Option<ImageObserver>,
    /// Watches every change to every partition replica (`None` outside the simulator).
    pub replica_observer: Option<crate::observe::ReplicaObserver>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClusterConfig")
            .field("voters", &self.voters)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("image_observer", &self.image_observer.is_some())
            .field("replica_observer", &self.replica_observer.is_some())
            .finish()
    }
}

/// The node's side of the quorum.
pub(crate) struct ClusterLink {
    /// Reaches the controllers.
    pub(crate) client: ControllerClient,
    /// The last metadata-log index applied and reconciled.
    applied: watch::Sender<u64>,
    /// This broker's registration, or -1.
    broker_epoch: AtomicI64,
    /// As the last heartbeat answer said.
    fenced: AtomicBool,
    /// Becomes true the first time the controller unfences this broker.
    ready: watch::Sender<bool>,
    /// Set by a controlled shutdown.
    want_shutdown: AtomicBool,
    /// Becomes true once the controller agreed the broker may stop.
    shut_down_ok: watch::Sender<bool>,
    heartbeat_interval_ms: u64,
    image_observer: Option<ImageObserver>,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClusterLink")
            .field("client", &self.client)
            .field("applied", &self.applied_index())
            .field("broker_epoch", &self.broker_epoch())
            .field("fenced", &self.fenced)
            .finish_non_exhaustive()
    }
}

impl ClusterLink {
    pub(crate) fn new(config: &ClusterConfig) -> ClusterLink {
        ClusterLink {
            client: ControllerClient::new(config.voters.clone()),
            applied: watch::channel(0).0,
            broker_epoch: AtomicI64::new(-1),
            fenced: AtomicBool::new(true),
            ready: watch::channel(false).0,
            want_shutdown: AtomicBool::new(false),
            shut_down_ok: watch::channel(false).0,
            heartbeat_interval_ms: config.heartbeat_interval_ms.max(1),
            image_observer: config.image_observer.clone(),
        }
    }

    /// The last index applied and reconciled.
    pub(crate) fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the image has applied `index`.
    ///
    /// # Errors
    /// `ApplyTimeout` after `timeout_ms`.
    pub(crate) async fn wait_applied(&self, index: u64, timeout_ms: u64) -> Result<(), BrokerError> {
        let mut applied = self.applied.subscribe();
        let outcome =
            rt::time::timeout(Duration::from_millis(timeout_ms), applied.wait_for(|applied| *applied >= index)).await;
        if outcome.is_ok_and(|waited| waited.is_ok()) {
            Ok(())
        } else {
            Err(BrokerError::ApplyTimeout { index })
        }
    }

    /// The current registration's epoch, or -1.
    pub(crate) fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Relaxed)
    }
}

fn link(node: &Node) -> &ClusterLink {
    match &node.metadata {
        crate::node::MetadataSource::Cluster(link) => link,
        crate::node::MetadataSource::Local(_) => unreachable!("only cluster members follow the quorum"),
    }
}

/// Starts following the log and the lifecycle.
pub(crate) fn start(node: &Arc<Node>) {
    let following = Arc::clone(node);
    drop(rt::task::spawn(async move { follow(following).await }));
    let living = Arc::clone(node);
    drop(rt::task::spawn(async move { lifecycle(living).await }));
}

async fn follow(node: Arc<Node>) {
    let link = link(&node);
    let mut image = (*node.image()).clone();
    let mut applied = 0u64;
    // Whether the partitions match the current image. A (re)starting broker replays the log
    // from its start or a snapshot, through states long superseded: in one of them it may
    // still lead a partition in an old epoch. It must not act on those, or it would serve as
    // a zombie leader (or follow one) while it catches up. So partitions are reconciled only
    // with an image that holds this broker's current registration: registering moved its old
    // leaderships away, so any leadership such an image gives it is a new election. (Kafka's
    // brokers likewise publish no image before they caught up with the metadata log.)
    let mut reconciled = false;
    loop {
        let request = ControlRequest::FetchLog { from_index: applied + 1, max_wait_ms: FOLLOW_WAIT_MS };
        let (snapshot, entries, blob) =
            match link.client.call_any(&request, FOLLOW_WAIT_MS + LIFECYCLE_CALL_TIMEOUT_MS).await {
                Ok((ControlResponse::Log { snapshot, entries, leader_id }, blob)) => {
                    if leader_id.is_some() {
                        link.client.note_leader(leader_id);
                    }
                    (snapshot, entries, blob)
                }
                Ok((other, _)) => {
                    tracing::warn!(answer = ?other, "unexpected answer to a metadata fetch");
                    rt::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
                    continue;
                }
                Err(error) => {
                    tracing::debug!(%error, "metadata fetch failed");
                    rt::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
                    continue;
                }
            };
        let mut parts = blob_parts(&blob, snapshot.iter().chain(entries.iter()).map(|part| part.length as usize));
        let mut changed = false;
        if let Some(part) = snapshot {
            match parts.next().flatten().map(|bytes| MetadataImage::from_snapshot(&bytes)) {
                Some(Ok(restored)) => {
                    image = restored;
                    applied = part.index;
                    changed = true;
                }
                _ => {
                    tracing::warn!(index = part.index, "metadata snapshot from the controller does not load");
                    rt::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
                    continue;
                }
            }
        }
        for part in entries {
            let Some(data) = parts.next().flatten() else { break };
            if part.index != applied + 1 {
                break;
            }
            if !data.is_empty() && !crate::planted_bug("follower-skips-entry", part.index % 16 == 0) {
                if let Err(error) = image.apply_entry(&data) {
                    tracing::warn!(index = part.index, %error, "skipping a committed metadata entry that does not apply");
                }
            }
            applied = part.index;
            changed = true;
        }
        if changed {
            node.set_image(Arc::new(image.clone()));
            reconciled = false;
        }
        let broker_epoch = link.broker_epoch();
        let registered = broker_epoch >= 0
            && image.broker(node.config.node_id).is_some_and(|broker| broker.broker_epoch == broker_epoch);
        if !reconciled && registered {
            if let Err(error) = node.reconcile(node.image()).await {
                tracing::error!(%error, "partitions do not match the metadata image");
            }
            reconciled = true;
        }
        if changed {
            let _ = link.applied.send_replace(applied);
            if let Some(observer) = &link.image_observer {
                observer(applied, &image);
            }
        }
    }
}

/// Splits `blob` into consecutive parts of the given lengths; `None` for a part past its end.
fn blob_parts(blob: &Bytes, lengths: impl Iterator<Item = usize>) -> std::vec::IntoIter<Option<Bytes>> {
    let mut offset = 0usize;
    let parts: Vec<Option<Bytes>> = lengths
        .map(|length| {
            let end = offset.checked_add(length).filter(|end| *end <= blob.len())?;
            let part = blob.slice(offset..end);
            offset = end;
            Some(part)
        })
        .collect();
    parts.into_iter()
}

async fn lifecycle(node: Arc<Node>) {
    let link = link(&node);
    let mut previous_broker_epoch = read_clean_shutdown(&node).await;
    let mut swept = false;
    loop {
        let register = ControlRequest::Register {
            broker_id: node.config.node_id,
            host: node.config.advertised_host.clone(),
            port: node.config.advertised_port,
            rack: None,
            previous_broker_epoch,
        };
        let broker_epoch = loop {
            match link.client.call_leader(&register, LIFECYCLE_CALL_TIMEOUT_MS, LIFECYCLE_CALL_TIMEOUT_MS).await {
                Ok((ControlResponse::Registered { broker_epoch, .. }, _)) => break broker_epoch,
                Ok((other, _)) => tracing::warn!(answer = ?other, "unexpected answer to a registration"),
                Err(error) => tracing::info!(%error, "registration with the controller failed; retrying"),
            }
            rt::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
        };
        tracing::info!(broker_epoch, "registered with the controller");
        link.broker_epoch.store(broker_epoch, Ordering::Relaxed);
        previous_broker_epoch = -1;
        remove_clean_shutdown(&node).await;
        loop {
            let heartbeat = ControlRequest::Heartbeat {
                broker_id: node.config.node_id,
                broker_epoch,
                applied_index: link.applied_index(),
                want_shutdown: link.want_shutdown.load(Ordering::Relaxed),
            };
            let deadline_ms = link.heartbeat_interval_ms.max(LIFECYCLE_CALL_TIMEOUT_MS);
            match link.client.call_leader(&heartbeat, LIFECYCLE_CALL_TIMEOUT_MS, deadline_ms).await {
                Ok((ControlResponse::Heartbeat { fenced, caught_up, should_shut_down }, _)) => {
                    if link.fenced.swap(fenced, Ordering::Relaxed) != fenced {
                        tracing::info!(fenced, "broker fencing changed");
                    }
                    if !fenced {
                        let _ = link.ready.send_replace(true);
                    }
                    if caught_up && !swept {
                        swept = true;
                        if let Err(error) = node.remove_orphan_partition_dirs().await {
                            tracing::warn!(%error, "cannot remove partition directories of deleted topics");
                        }
                    }
                    if should_shut_down {
                        let _ = link.shut_down_ok.send_replace(true);
                    }
                }
                Ok((other, _)) => tracing::warn!(answer = ?other, "unexpected answer to a heartbeat"),
                Err(ControllerError::Op(OpError::StaleBrokerEpoch { .. })) => {
                    tracing::warn!(broker_epoch, "the controller does not know this registration; registering again");
                    break;
                }
                Err(error) => tracing::debug!(%error, "heartbeat failed"),
            }
            // While fenced (catching up) or shutting down, ask again soon.
            let interval = if link.want_shutdown.load(Ordering::Relaxed) || link.fenced.load(Ordering::Relaxed) {
                RETRY_BACKOFF_MS
            } else {
                link.heartbeat_interval_ms
            };
            rt::time::sleep(Duration::from_millis(interval)).await;
        }
    }
}

/// Waits until the controller has unfenced this broker once (it caught up with the metadata
/// log), logging while it waits.
pub(crate) async fn wait_ready(node: &Node) {
    let mut ready = link(node).ready.subscribe();
    loop {
        let waited = rt::time::timeout(Duration::from_millis(READY_LOG_INTERVAL_MS), ready.wait_for(|ready| *ready));
        if waited.await.is_ok() {
            return;
        }
        tracing::info!("waiting for the controller quorum to unfence this broker");
    }
}

/// Asks the controller to move leadership away and waits (bounded) until it has.
pub(crate) async fn controlled_shutdown(node: &Node) {
    let link = link(node);
    if link.broker_epoch() < 0 {
        return;
    }
    link.want_shutdown.store(true, Ordering::Relaxed);
    let mut done = link.shut_down_ok.subscribe();
    let waited =
        rt::time::timeout(Duration::from_millis(CONTROLLED_SHUTDOWN_TIMEOUT_MS), done.wait_for(|done| *done)).await;
    if waited.is_err() {
        tracing::warn!("controlled shutdown timed out; stopping anyway");
    }
}

/// Records a clean shutdown of the current registration.
pub(crate) async fn write_clean_shutdown(node: &Node) {
    let epoch = link(node).broker_epoch();
    if epoch < 0 {
        return;
    }
    let path = node.config.data_dir.join(METADATA_DIR).join(CLEAN_SHUTDOWN_FILE);
    let written = async {
        let file = node.disk.open_file(&path, OpenMode::CreateOrOpen).await?;
        file.set_len(0).await?;
        file.write_at(0, Bytes::from(format!("broker.epoch={epoch}\n"))).await?;
        file.sync_data().await
    };
    if let Err(error) = written.await {
        tracing::warn!(%error, path = %path.display(), "cannot record the clean shutdown");
    }
}

async fn read_clean_shutdown(node: &Node) -> i64 {
    let path = node.config.data_dir.join(METADATA_DIR).join(CLEAN_SHUTDOWN_FILE);
    let read = async {
        let file = node.disk.open_file(&path, OpenMode::Existing).await?;
        let length = file.len().await?.min(64) as usize;
        file.read_at(0, length).await
    };
    match read.await {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .trim()
            .strip_prefix("broker.epoch=")
            .and_then(|epoch| epoch.parse().ok())
            .unwrap_or(-1),
        Err(_) => -1,
    }
}

async fn remove_clean_shutdown(node: &Node) {
    let path = node.config.data_dir.join(METADATA_DIR).join(CLEAN_SHUTDOWN_FILE);
    if node.disk.exists(&path).await.unwrap_or(false) {
        if let Err(error) = node.disk.remove_file(&path).await {
            tracing::warn!(%error, path = %path.display(), "cannot remove the clean-shutdown marker");
        }
    }
}
