//! The node's shared state: metadata image, partitions, and the operations that change them.
//!
//! Metadata changes are [`MetadataOp`]s, planned into records by `metadata::ops`. Where they
//! are committed depends on the node:
//!
//! * A single node (no controller voters configured) keeps the metadata log in a local file:
//!   it plans against its image, writes one entry (a batch, atomic on crash) with an fsync,
//!   swaps in the new image, then acts on it. On start the log is replayed, partition
//!   directories no longer in the image are removed and every partition log is recovered.
//! * A cluster member sends the operation to the active controller and waits until its own
//!   image, which follows the committed log ([`crate::cluster`]), has applied it.
//!
//! Either way the image only moves forward through committed entries, and [`Node::reconcile`]
//! makes the hosted partitions match it: it opens the partitions this node is a replica of,
//! and closes and deletes those it no longer is (a hosted partition was opened from an earlier
//! image of the same log, so its absence in a later one means it really went away).

use std::collections::BTreeMap;

use rt::rand::Rng;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use metadata::config::{effective_topic_configs, TopicSettings};
use metadata::image::MetadataImage;
use metadata::ops::MetadataOp;
use metadata::record::{decode_batch, encode_batch, ConfigResource, MetadataRecord, TopicId};
use protocol::ids::{NodeId, Offset, TopicPartition};
use protocol::ResponseError;
use rt::sync::{watch, Mutex};
use rt::time::SharedClock;
use storage::record_log::RecordLog;
use storage::{OpenMode, PartitionLog, SharedDisk, SpaceGuard};

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::partition::{log_config, Partition, PartitionEnv};

/// Directory (under the data dir) of the node's metadata log.
pub const METADATA_DIR: &str = "__cluster_metadata";
const METADATA_LOG_FILE: &str = "metadata.log";
const META_PROPERTIES_FILE: &str = "meta.properties";
const PARTITION_METADATA_FILE: &str = "partition.metadata";
/// Records in one metadata-log entry; a topic creation writes one record per partition.
pub const METADATA_ENTRY_RECORDS_MAX: usize = metadata::record::BATCH_RECORDS_MAX;
/// Producer ids taken per metadata record (Kafka's block size).
pub const PRODUCER_ID_BLOCK_SIZE: i32 = 1000;
/// Most partitions one topic may have.
pub const TOPIC_PARTITIONS_MAX: i32 = metadata::ops::TOPIC_PARTITIONS_MAX;
/// Longest a cluster member waits for its own image to apply a change it committed.
pub const APPLY_WAIT_MS_MAX: u64 = 15_000;

/// Where the metadata log lives.
#[derive(Debug)]
pub(crate) enum MetadataSource {
    /// A single node's local log; its lock also serialises metadata changes.
    Local(Mutex<RecordLog>),
    /// The controller quorum.
    Cluster(crate::cluster::ClusterLink),
}

/// Shared state of one node.
#[derive(Debug)]
pub struct Node {
    /// Validated configuration.
    pub(crate) config: BrokerConfig,
    /// Every file goes through this.
    pub(crate) disk: SharedDisk,
    /// The node's wall clock.
    pub(crate) clock: SharedClock,
    /// Free-space reserve shared by all partitions.
    space: Arc<SpaceGuard>,
    /// This cluster's id (from `meta.properties`).
    pub(crate) cluster_id: String,
    /// The current image; replaced whole on every change so readers never see half a change.
    image: RwLock<Arc<MetadataImage>>,
    /// The metadata log.
    pub(crate) metadata: MetadataSource,
    /// Serialises reconciliation; holds the image last reconciled.
    reconciled: Mutex<Arc<MetadataImage>>,
    /// Partitions hosted here.
    partitions: RwLock<BTreeMap<TopicPartition, Arc<Partition>>>,
    /// Bumped on any high-watermark advance; long-polling fetches wait on it.
    pub(crate) any_high_watermark_changed: watch::Sender<u64>,
    /// Bumped on any append (wakes followers' long polls, which read past the high watermark).
    pub(crate) any_append: watch::Sender<u64>,
    /// The current producer-id block: next id to hand out, and the block's end (exclusive).
    producer_ids: Mutex<(i64, i64)>,
    /// When the node started, on the monotonic clock.
    started: rt::time::Instant,
    /// The group coordinators' clock.
    coordinator_clock: CoordinatorClock,
    /// The group coordinators of the `__consumer_offsets` partitions this broker leads.
    pub(crate) groups: crate::groups::Groups,
}

fn io_error<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BrokerError + 'a {
    move |source| BrokerError::Io { operation, path: path.to_owned(), source }
}

/// A new random topic id (UUID version 4 layout).
fn new_topic_id() -> TopicId {
    let mut bytes = rt::rand::random_uuid_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    TopicId(bytes)
}

/// A new cluster id for a single node: 16 random bytes.
fn new_cluster_id() -> String {
    encode_cluster_id(rt::rand::random_uuid_bytes())
}

/// The cluster id every node of a quorum derives from the voters (`id@host:port` each), so
/// all of them report the same one, as a Kafka cluster formatted with one `--cluster-id`
/// does, without a coordination step: two FNV-1a hashes of the voter list, 16 bytes.
fn quorum_cluster_id(voters: &BTreeMap<u64, String>) -> String {
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let text: String = voters.iter().map(|(id, address)| format!("{id}@{address},")).collect();
    let hash = |offset_basis: u64| {
        text.bytes().fold(offset_basis, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME))
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hash(0xcbf2_9ce4_8422_2325).to_be_bytes());
    bytes[8..].copy_from_slice(&hash(0x6c62_272e_07bb_0142).to_be_bytes());
    encode_cluster_id(bytes)
}

/// 16 bytes in URL-safe base64 without padding, as Kafka prints cluster ids.
fn encode_cluster_id(bytes: [u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits: u32 = 0;
    let mut bit_count = 0;
    let mut id = String::with_capacity(22);
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        bit_count += 8;
        while bit_count >= 6 {
            bit_count -= 6;
            id.push(char::from(ALPHABET[((bits >> bit_count) & 0x3f) as usize]));
        }
    }
    if bit_count > 0 {
        id.push(char::from(ALPHABET[((bits << (6 - bit_count)) & 0x3f) as usize]));
    }
    id
}

/// The group coordinators' clock: the wall-clock time the node started at, advanced by the
/// monotonic clock since. Session, rebalance and join deadlines run on it, so a wall-clock
/// step neither expires every member at once (a jump forward past `session.timeout.ms`) nor
/// holds expiry back (a jump back), as it would on the wall clock, which Kafka's coordinator
/// uses; it stays near wall time for commit timestamps. (Seen in the fault harness: clock
/// bumps made every run's group rebalance about ten times as often.)
#[derive(Debug)]
pub(crate) struct CoordinatorClock {
    started_wall_ms: i64,
    started: rt::time::Instant,
}

impl CoordinatorClock {
    /// Starts at `wall`'s time now.
    pub(crate) fn new(wall: &SharedClock) -> CoordinatorClock {
        CoordinatorClock { started_wall_ms: wall.now_ms(), started: rt::time::Instant::now() }
    }

    /// Milliseconds: the start's wall time plus the monotonic time since.
    pub(crate) fn now_ms(&self) -> i64 {
        let elapsed_ms = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.started_wall_ms.saturating_add(elapsed_ms)
    }
}

/// Partition directory name, as Kafka names it.
pub(crate) fn partition_dir_name(topic_partition: &TopicPartition) -> String {
    format!("{}-{}", topic_partition.topic, topic_partition.partition.0)
}

impl Node {
    /// Opens the data directory, replays the metadata log and recovers every partition.
    ///
    /// # Errors
    /// `DataDir` if the directory belongs to another node; storage and metadata errors.
    pub async fn open(config: BrokerConfig, disk: SharedDisk, clock: SharedClock) -> Result<Arc<Node>, BrokerError> {
        let data_dir = config.data_dir.clone();
        disk.create_dir_all(&data_dir).await.map_err(io_error("create", &data_dir))?;
        let fresh_cluster_id =
            config.cluster.as_ref().map_or_else(new_cluster_id, |cluster| quorum_cluster_id(&cluster.voters));
        let cluster_id = Self::load_meta_properties(&disk, &data_dir, config.node_id, fresh_cluster_id).await?;
        let metadata_dir = data_dir.join(METADATA_DIR);
        disk.create_dir_all(&metadata_dir).await.map_err(io_error("create", &metadata_dir))?;
        let mut image = MetadataImage::default();
        let metadata = match &config.cluster {
            None => {
                let (metadata_log, entries) =
                    RecordLog::open(Arc::clone(&disk), metadata_dir.join(METADATA_LOG_FILE)).await?;
                for entry in entries {
                    for record in decode_batch(&entry).map_err(BrokerError::MetadataDecode)? {
                        image.apply(&record)?;
                    }
                }
                MetadataSource::Local(Mutex::new(metadata_log))
            }
            Some(cluster) => MetadataSource::Cluster(crate::cluster::ClusterLink::new(cluster)),
        };
        let space = Arc::new(SpaceGuard::new(Arc::clone(&disk), data_dir.clone(), config.log_disk_reserve_bytes));
        let (any_high_watermark_changed, _) = watch::channel(0u64);
        let (any_append, _) = watch::channel(0u64);
        let image = Arc::new(image);
        let coordinator_clock = CoordinatorClock::new(&clock);
        let node = Arc::new(Node {
            config,
            disk,
            clock,
            space,
            cluster_id,
            image: RwLock::new(Arc::clone(&image)),
            metadata,
            reconciled: Mutex::new(Arc::new(MetadataImage::default())),
            partitions: RwLock::new(BTreeMap::new()),
            any_high_watermark_changed,
            any_append,
            producer_ids: Mutex::new((0, 0)),
            started: rt::time::Instant::now(),
            coordinator_clock,
            groups: crate::groups::Groups::default(),
        });
        if let MetadataSource::Local(_) = node.metadata {
            node.remove_orphan_partition_dirs().await?;
            node.reconcile(image).await?;
            node.register_self().await?;
        }
        Ok(node)
    }

    /// The cluster id in `meta.properties`, written with `fresh_cluster_id` on first start.
    async fn load_meta_properties(
        disk: &SharedDisk,
        data_dir: &Path,
        node_id: NodeId,
        fresh_cluster_id: String,
    ) -> Result<String, BrokerError> {
        let path = data_dir.join(META_PROPERTIES_FILE);
        if disk.exists(&path).await.map_err(io_error("stat", &path))? {
            let file = disk.open_file(&path, OpenMode::Existing).await.map_err(io_error("open", &path))?;
            let length = file.len().await.map_err(io_error("stat", &path))?;
            let bytes = file.read_at(0, length.min(64 * 1024) as usize).await.map_err(io_error("read", &path))?;
            let text = String::from_utf8_lossy(&bytes);
            let property = |key: &str| {
                text.lines()
                    .find_map(|line| line.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')).map(str::trim))
            };
            let cluster_id = property("cluster.id").ok_or_else(|| BrokerError::DataDir {
                path: path.clone(),
                reason: "meta.properties has no cluster.id".into(),
            })?;
            if property("node.id") != Some(node_id.0.to_string().as_str()) {
                return Err(BrokerError::DataDir {
                    path: data_dir.to_owned(),
                    reason: format!(
                        "it belongs to {}, not node.id={}",
                        property("node.id").unwrap_or("an unknown node"),
                        node_id.0
                    ),
                });
            }
            return Ok(cluster_id.to_owned());
        }
        let cluster_id = fresh_cluster_id;
        let contents = format!("# weir data directory\nversion=1\ncluster.id={cluster_id}\nnode.id={}\n", node_id.0);
        let temporary = data_dir.join("meta.properties.tmp");
        let file = disk.open_file(&temporary, OpenMode::CreateOrOpen).await.map_err(io_error("create", &temporary))?;
        file.set_len(0).await.map_err(io_error("truncate", &temporary))?;
        file.write_at(0, Bytes::from(contents)).await.map_err(io_error("write", &temporary))?;
        file.sync_data().await.map_err(io_error("fsync", &temporary))?;
        disk.rename(&temporary, &path).await.map_err(io_error("rename", &path))?;
        disk.sync_dir(data_dir).await.map_err(io_error("fsync", data_dir))?;
        Ok(cluster_id)
    }

    /// A single node registers itself, unfenced, when its endpoint changed.
    async fn register_self(&self) -> Result<(), BrokerError> {
        let image = self.image();
        let current = image.broker(self.config.node_id);
        let unchanged = current.is_some_and(|broker| {
            broker.host == self.config.advertised_host && broker.port == self.config.advertised_port && !broker.fenced
        });
        if !unchanged {
            let _ = self
                .submit(MetadataOp::RegisterBroker {
                    broker_id: self.config.node_id,
                    host: self.config.advertised_host.clone(),
                    port: self.config.advertised_port,
                    rack: None,
                    previous_broker_epoch: current.map_or(-1, |broker| broker.broker_epoch),
                    fenced: false,
                })
                .await?;
        }
        Ok(())
    }

    /// Removes partition directories the current image does not place on this node. Runs
    /// under the reconciliation lock, so it cannot race a partition being opened.
    pub(crate) async fn remove_orphan_partition_dirs(&self) -> Result<(), BrokerError> {
        let _reconciling = self.reconciled.lock().await;
        let data_dir = &self.config.data_dir;
        let image = self.image();
        let mut wanted = std::collections::BTreeSet::new();
        for topic in image.topics() {
            for (partition, state) in &topic.partitions {
                if state.replicas.contains(&self.config.node_id) {
                    let _ = wanted.insert(partition_dir_name(&TopicPartition::new(topic.name.clone(), *partition)));
                }
            }
        }
        for name in self.disk.list_dir(data_dir).await.map_err(io_error("list", data_dir))? {
            let looks_like_partition = name.rsplit_once('-').is_some_and(|(_, index)| index.parse::<u32>().is_ok());
            if looks_like_partition && !wanted.contains(&name) {
                let path = data_dir.join(&name);
                tracing::info!(path = %path.display(), "removing partition directory of a deleted topic");
                self.disk.remove_dir_all(&path).await.map_err(io_error("remove", &path))?;
            }
        }
        Ok(())
    }

    /// The current metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image.read().expect("image lock is never poisoned"))
    }

    /// Commits a metadata operation and waits until this node acted on it (its partitions
    /// match the image that includes it). Returns the records it became.
    ///
    /// # Errors
    /// `Op` if it does not fit the metadata, `Controller` if the quorum could not commit it,
    /// `ApplyTimeout`, storage errors.
    pub(crate) async fn submit(&self, op: MetadataOp) -> Result<Vec<MetadataRecord>, BrokerError> {
        match &self.metadata {
            MetadataSource::Local(log) => {
                let log = log.lock().await;
                let image = self.image();
                let records = metadata::ops::plan(&image, &op)?;
                if records.is_empty() {
                    return Ok(records);
                }
                assert!(records.len() <= METADATA_ENTRY_RECORDS_MAX, "metadata entry over its bound");
                let mut next = (*image).clone();
                for record in &records {
                    next.apply(record)?;
                }
                log.append(&encode_batch(&records)).await?;
                let next = Arc::new(next);
                self.set_image(Arc::clone(&next));
                self.reconcile(next).await?;
                drop(log);
                Ok(records)
            }
            MetadataSource::Cluster(link) => {
                let (index, records) = link.client.submit(op).await?;
                link.wait_applied(index, APPLY_WAIT_MS_MAX).await?;
                Ok(records)
            }
        }
    }

    /// Replaces the image.
    pub(crate) fn set_image(&self, image: Arc<MetadataImage>) {
        *self.image.write().expect("image lock is never poisoned") = image;
    }

    /// Makes the hosted partitions match `image`: opens the partitions this node is a replica
    /// of, closes and deletes the ones it no longer is, and passes config changes on.
    ///
    /// # Errors
    /// Storage errors opening or deleting a partition log (the rest is still done).
    pub(crate) async fn reconcile(&self, image: Arc<MetadataImage>) -> Result<(), BrokerError> {
        let mut reconciled = self.reconciled.lock().await;
        let me = self.config.node_id;
        let mut first_error = None;
        for topic in image.topics() {
            let resource = ConfigResource::Topic(topic.name.clone());
            let configs_changed = reconciled.topic_by_id(topic.topic_id).is_none()
                || reconciled.configs(&resource) != image.configs(&resource);
            let settings = configs_changed.then(|| self.topic_settings(&image, &topic.name));
            for (partition, state) in &topic.partitions {
                if !state.replicas.contains(&me) {
                    continue;
                }
                let hosted = match self.partition(&topic.name, *partition) {
                    Some(hosted) if hosted.topic_id == topic.topic_id => {
                        if let Some(settings) = &settings {
                            hosted.set_settings(settings.clone());
                        }
                        hosted
                    }
                    _ => match self.open_partition(&topic.name, *partition, topic.topic_id).await {
                        Ok(opened) => opened,
                        Err(error) => {
                            tracing::error!(topic = topic.name, partition, %error, "cannot open partition");
                            first_error.get_or_insert(error);
                            continue;
                        }
                    },
                };
                if state.leader == me {
                    if let Err(error) = hosted.lead(me, state, self.monotonic_ms()).await {
                        tracing::error!(topic = topic.name, partition, %error, "cannot take the leadership");
                        first_error.get_or_insert(error);
                    }
                } else if hosted.follow(state) {
                    match image.broker(state.leader) {
                        Some(leader) => crate::follower::start(
                            Arc::clone(&hosted),
                            me,
                            state.leader,
                            state.leader_epoch,
                            format!("{}:{}", leader.host, leader.port),
                        ),
                        None => {
                            tracing::warn!(topic = topic.name, partition, leader = %state.leader, "the leader is not registered")
                        }
                    }
                }
            }
        }
        let gone: Vec<Arc<Partition>> = {
            let mut partitions = self.partitions.write().expect("partitions lock is never poisoned");
            let doomed: Vec<TopicPartition> = partitions
                .iter()
                .filter(|(key, partition)| {
                    let state = image
                        .topic_by_id(partition.topic_id)
                        .filter(|topic| topic.name == key.topic)
                        .and_then(|topic| topic.partitions.get(&key.partition.0));
                    !state.is_some_and(|state| state.replicas.contains(&me))
                })
                .map(|(key, _)| key.clone())
                .collect();
            doomed.iter().filter_map(|key| partitions.remove(key)).collect()
        };
        for partition in gone {
            tracing::info!(partition = %partition.topic_partition, "removing partition no longer placed here");
            partition.close();
            if let Err(error) = partition.log.delete().await {
                first_error.get_or_insert(error.into());
            }
        }
        *reconciled = image;
        first_error.map_or(Ok(()), Err)
    }

    /// The effective settings of a topic.
    pub(crate) fn topic_settings(&self, image: &MetadataImage, topic: &str) -> TopicSettings {
        let overrides = image.configs(&ConfigResource::Topic(topic.to_owned()));
        TopicSettings::from_effective(&effective_topic_configs(overrides, &self.config.static_configs))
    }

    async fn open_partition(
        &self,
        topic: &str,
        partition: i32,
        topic_id: TopicId,
    ) -> Result<Arc<Partition>, BrokerError> {
        let topic_partition = TopicPartition::new(topic, partition);
        let dir = self.config.data_dir.join(partition_dir_name(&topic_partition));
        self.check_partition_metadata(&dir, topic_id).await?;
        let settings = self.topic_settings(&self.image(), topic);
        let log = PartitionLog::open(
            Arc::clone(&self.disk),
            dir,
            log_config(&settings, self.config.producer_id_expiration_ms),
            Arc::clone(&self.space),
            self.clock.now_ms(),
        )
        .await?;
        let partition = Partition::start(
            topic_partition.clone(),
            topic_id,
            log,
            settings,
            PartitionEnv {
                any_high_watermark_changed: self.any_high_watermark_changed.clone(),
                any_append: self.any_append.clone(),
                clock: Arc::clone(&self.clock),
                replica_lag_time_max_ms: i64::try_from(self.config.replica_lag_time_max_ms).unwrap_or(i64::MAX),
                producer_id_expiration_ms: self.config.producer_id_expiration_ms,
                observer: self.config.cluster.as_ref().and_then(|cluster| cluster.replica_observer.clone()),
            },
        );
        let _ = self
            .partitions
            .write()
            .expect("partitions lock is never poisoned")
            .insert(topic_partition, Arc::clone(&partition));
        Ok(partition)
    }

    /// Makes sure a partition directory belongs to this topic id: a directory left by a deleted
    /// topic of the same name is wiped, and a new one is stamped with the id.
    async fn check_partition_metadata(&self, dir: &Path, topic_id: TopicId) -> Result<(), BrokerError> {
        let path = dir.join(PARTITION_METADATA_FILE);
        let expected = format!("version: 0\ntopic_id: {}\n", uuid::Uuid::from_bytes(topic_id.0));
        if self.disk.exists(&path).await.map_err(io_error("stat", &path))? {
            let file = self.disk.open_file(&path, OpenMode::Existing).await.map_err(io_error("open", &path))?;
            let bytes = file.read_at(0, 256).await.map_err(io_error("read", &path))?;
            if bytes[..] == *expected.as_bytes() {
                return Ok(());
            }
            tracing::warn!(dir = %dir.display(), "partition directory belongs to another topic id; wiping it");
            self.disk.remove_dir_all(dir).await.map_err(io_error("remove", dir))?;
        }
        self.disk.create_dir_all(dir).await.map_err(io_error("create", dir))?;
        let temporary = dir.join("partition.metadata.tmp");
        let file =
            self.disk.open_file(&temporary, OpenMode::CreateOrOpen).await.map_err(io_error("create", &temporary))?;
        file.set_len(0).await.map_err(io_error("truncate", &temporary))?;
        file.write_at(0, Bytes::from(expected)).await.map_err(io_error("write", &temporary))?;
        file.sync_data().await.map_err(io_error("fsync", &temporary))?;
        self.disk.rename(&temporary, &path).await.map_err(io_error("rename", &path))?;
        self.disk.sync_dir(dir).await.map_err(io_error("fsync", dir))?;
        if let Some(parent) = dir.parent() {
            self.disk.sync_dir(parent).await.map_err(io_error("fsync", parent))?;
        }
        Ok(())
    }

    /// A hosted partition.
    pub(crate) fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock is never poisoned")
            .get(&TopicPartition::new(topic, partition))
            .cloned()
    }

    /// Every hosted partition.
    pub(crate) fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().expect("partitions lock is never poisoned").values().cloned().collect()
    }

    /// Creates a topic (name and configs already validated by the caller); replicas are
    /// placed by the controller unless `assignments` names them.
    ///
    /// # Errors
    /// `Op` if it exists or the placement does not work; controller and storage errors.
    pub(crate) async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        assignments: Vec<Vec<NodeId>>,
        configs: &[(String, String)],
    ) -> Result<TopicId, BrokerError> {
        let topic_id = new_topic_id();
        let _ = self
            .submit(self.create_topic_op(name, topic_id, partitions, replication_factor, assignments, configs))
            .await?;
        Ok(topic_id)
    }

    /// The operation that creates a topic (also used to validate without creating).
    pub(crate) fn create_topic_op(
        &self,
        name: &str,
        topic_id: TopicId,
        partitions: i32,
        replication_factor: i16,
        assignments: Vec<Vec<NodeId>>,
        configs: &[(String, String)],
    ) -> MetadataOp {
        MetadataOp::CreateTopic {
            name: name.to_owned(),
            topic_id,
            partitions,
            replication_factor,
            assignments,
            configs: configs.to_vec(),
            placement_seed: rt::rand::thread_rng().gen(),
        }
    }

    /// Adds partitions to a topic, up to `total`.
    ///
    /// # Errors
    /// Metadata, controller and storage errors.
    pub(crate) async fn create_partitions(
        &self,
        topic_id: TopicId,
        total: i32,
        assignments: Vec<Vec<NodeId>>,
    ) -> Result<(), BrokerError> {
        let placement_seed = rt::rand::thread_rng().gen();
        let _ = self.submit(MetadataOp::CreatePartitions { topic_id, total, assignments, placement_seed }).await?;
        Ok(())
    }

    /// Deletes a topic; every replica deletes its logs once it applies the change.
    ///
    /// # Errors
    /// Metadata, controller and storage errors.
    pub(crate) async fn delete_topic(&self, topic_id: TopicId) -> Result<(), BrokerError> {
        let _ = self.submit(MetadataOp::DeleteTopic { topic_id }).await?;
        Ok(())
    }

    /// Changes a topic's config overrides (AlterConfigs semantics when `replace_all`,
    /// otherwise only the named keys change; `None` removes an override).
    ///
    /// # Errors
    /// Metadata and controller errors.
    pub(crate) async fn set_topic_configs(
        &self,
        topic: &str,
        changes: Vec<(String, Option<String>)>,
        replace_all: bool,
    ) -> Result<(), BrokerError> {
        let resource = ConfigResource::Topic(topic.to_owned());
        let _ = self.submit(MetadataOp::SetConfigs { resource, changes, replace_all }).await?;
        Ok(())
    }

    /// Moves leadership of these partitions to their preferred replicas where possible.
    ///
    /// # Errors
    /// Metadata and controller errors.
    pub(crate) async fn elect_preferred_leaders(&self, partitions: Vec<(TopicId, i32)>) -> Result<(), BrokerError> {
        let _ = self.submit(MetadataOp::ElectPreferredLeaders { partitions }).await?;
        Ok(())
    }

    /// Gives leaderless partitions whose ISR is all down a leader from their other live
    /// replicas (an operator's unclean election).
    ///
    /// # Errors
    /// Metadata and controller errors.
    pub(crate) async fn elect_unclean_leaders(&self, partitions: Vec<(TopicId, i32)>) -> Result<(), BrokerError> {
        let _ = self.submit(MetadataOp::ElectUncleanLeaders { partitions }).await?;
        Ok(())
    }

    /// Starts (or, with `None`, cancels) reassignments of partitions to new replica sets.
    ///
    /// # Errors
    /// Metadata and controller errors.
    pub(crate) async fn reassign_partitions(
        &self,
        reassignments: Vec<(TopicId, i32, Option<Vec<NodeId>>)>,
    ) -> Result<(), BrokerError> {
        let _ = self.submit(MetadataOp::ReassignPartitions { reassignments }).await?;
        Ok(())
    }

    /// Hands out a producer id never given before, taking a new block of ids through the
    /// metadata log when the current one is used up.
    ///
    /// # Errors
    /// Metadata log errors.
    pub(crate) async fn allocate_producer_id(&self) -> Result<i64, BrokerError> {
        let mut block = self.producer_ids.lock().await;
        if block.0 >= block.1 {
            let records = self
                .submit(MetadataOp::AllocateProducerIds {
                    broker_id: self.config.node_id,
                    count: PRODUCER_ID_BLOCK_SIZE,
                })
                .await?;
            let Some(MetadataRecord::AllocateProducerIds { first_producer_id, count, .. }) = records.first() else {
                unreachable!("a producer id block is planned as one AllocateProducerIds record");
            };
            *block = (*first_producer_id, first_producer_id + i64::from(*count));
        }
        let producer_id = block.0;
        block.0 += 1;
        Ok(producer_id)
    }

    /// The partition a Produce, Fetch or ListOffsets for `topic`/`partition` goes to: this node
    /// must lead it.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION` if the image has no such partition,
    /// `NOT_LEADER_OR_FOLLOWER` if another broker leads it (or it has no leader, or this node
    /// has not opened it yet).
    pub(crate) fn leader_partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, ResponseError> {
        let image = self.image();
        let state = image
            .topic(topic)
            .and_then(|topic| topic.partitions.get(&partition))
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        if state.leader != self.config.node_id {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        // The image names this broker, but until reconciliation took the leadership (epoch
        // recorded) it must not serve as leader.
        self.partition(topic, partition)
            .filter(|hosted| hosted.leader_epoch() == Some(state.leader_epoch))
            .ok_or(ResponseError::NotLeaderOrFollower)
    }

    /// Milliseconds on the group coordinators' clock ([`CoordinatorClock`]).
    pub(crate) fn coordinator_now_ms(&self) -> i64 {
        self.coordinator_clock.now_ms()
    }

    /// Milliseconds on the node's monotonic clock (for replica lag, which a wall-clock step
    /// must not fake).
    pub(crate) fn monotonic_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// The controller id clients are told: the active controller when it is also a live
    /// broker (clients can only reach brokers), else this broker, which forwards what it gets
    /// (KRaft likewise names a broker). A single node is its own controller.
    pub(crate) fn controller_id(&self) -> i32 {
        match &self.metadata {
            MetadataSource::Local(_) => self.config.node_id.0,
            MetadataSource::Cluster(link) => link
                .client
                .leader_hint()
                .and_then(|id| i32::try_from(id).ok())
                .filter(|id| self.image().is_unfenced(NodeId(*id)))
                .unwrap_or(self.config.node_id.0),
        }
    }

    /// Runs retention on every partition, the `flush.ms` check and the leaders' ISR checks.
    pub(crate) async fn housekeeping(self: &Arc<Self>, retention_due: bool) {
        let now_ms = self.clock.now_ms();
        let monotonic_ms = self.monotonic_ms();
        for partition in self.all_partitions() {
            partition.tick(now_ms);
            if let Some(alter) = partition.replication_tick(monotonic_ms) {
                self.alter_partition(&partition, alter);
            }
            if retention_due {
                if let Err(error) = partition.log.apply_retention(now_ms).await {
                    tracing::warn!(partition = %partition.topic_partition, %error, "retention failed");
                }
            }
        }
    }

    /// One compaction pass over every compacted partition that is due, each bounded by its
    /// high watermark (a record that may still be truncated must not hide an older value).
    pub(crate) async fn clean_logs(&self) {
        for partition in self.all_partitions() {
            if !partition.settings().compact {
                continue;
            }
            let now_ms = self.clock.now_ms();
            match partition.log.clean(now_ms, partition.high_watermark()).await {
                Ok(Some(stats)) if stats.segments_cleaned > 0 => {
                    tracing::info!(partition = %partition.topic_partition, ?stats, "compacted");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(partition = %partition.topic_partition, %error, "compaction failed"),
            }
        }
    }

    /// Sends a leader's ISR change to the controller (AlterPartition) in the background; the
    /// partition learns the outcome from the metadata image, or is told it failed.
    pub(crate) fn alter_partition(self: &Arc<Self>, partition: &Arc<Partition>, alter: replication::leader::AlterIsr) {
        let node = Arc::clone(self);
        let partition = Arc::clone(partition);
        drop(rt::task::spawn(async move {
            let me = node.config.node_id;
            let broker_epoch = match &node.metadata {
                MetadataSource::Cluster(link) => link.broker_epoch(),
                MetadataSource::Local(_) => node.image().broker(me).map_or(-1, |broker| broker.broker_epoch),
            };
            let op = MetadataOp::AlterPartition {
                topic_id: partition.topic_id,
                partition: partition.topic_partition.partition.0,
                broker_id: me,
                broker_epoch,
                leader_epoch: alter.leader_epoch,
                partition_epoch: alter.partition_epoch,
                new_isr: alter.new_isr.clone(),
            };
            for attempt in 0..ALTER_PARTITION_ATTEMPTS_MAX {
                if attempt > 0 {
                    rt::time::sleep(rt::time::Duration::from_millis(ALTER_PARTITION_RETRY_MS)).await;
                    if !partition.alter_pending(&alter) {
                        return;
                    }
                }
                match node.submit(op.clone()).await {
                    Ok(_) => {
                        tracing::info!(partition = %partition.topic_partition, isr = ?alter.new_isr, "ISR changed");
                        return;
                    }
                    Err(error) => match AlterOutcome::of(&error) {
                        AlterOutcome::Refused => {
                            tracing::info!(partition = %partition.topic_partition, isr = ?alter.new_isr, %error, "ISR change refused");
                            partition.alter_failed(&alter);
                            return;
                        }
                        AlterOutcome::Moved => {
                            // The partition is past the epoch proposed against (perhaps by
                            // this very change): keep the maximal ISR until the image shows
                            // where it went.
                            tracing::info!(partition = %partition.topic_partition, isr = ?alter.new_isr, %error, "ISR change outcome follows the image");
                            return;
                        }
                        AlterOutcome::Unknown => {
                            tracing::info!(partition = %partition.topic_partition, isr = ?alter.new_isr, %error, "ISR change outcome unknown; retrying");
                        }
                    },
                }
            }
            // Still unknown: give the proposal up (the image reconciles if it did commit).
            partition.alter_failed(&alter);
        }));
    }

    /// The data directory.
    pub fn data_dir(&self) -> &PathBuf {
        &self.config.data_dir
    }

    /// Log end offset of a partition, for tests and tools.
    pub fn log_end_offset(&self, topic: &str, partition: i32) -> Option<Offset> {
        self.partition(topic, partition).map(|partition| partition.log.log_end_offset())
    }
}

/// Attempts of one AlterPartition whose outcome stays unknown (about 5 s in all).
const ALTER_PARTITION_ATTEMPTS_MAX: u32 = 20;
/// Pause between two attempts of an AlterPartition whose outcome is unknown.
const ALTER_PARTITION_RETRY_MS: u64 = 250;

/// What an AlterPartition failure says about the proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AlterOutcome {
    /// Definitely not applied, and the partition is as proposed against: propose anew.
    Refused,
    /// The partition moved past the proposed-against epoch (INVALID_UPDATE_VERSION): the
    /// proposal may be what moved it, so the leader keeps counting its members until its
    /// image catches up.
    Moved,
    /// The proposal may or may not have committed (leadership changed, no answer): retry it.
    Unknown,
}

impl AlterOutcome {
    fn of(error: &BrokerError) -> AlterOutcome {
        use controller::ControllerError;
        use metadata::ops::OpError;
        match error {
            BrokerError::Op(OpError::InvalidUpdateVersion { .. })
            | BrokerError::Controller(ControllerError::Op(OpError::InvalidUpdateVersion { .. })) => AlterOutcome::Moved,
            // Committed, not yet applied here: the image will show it.
            BrokerError::ApplyTimeout { .. } => AlterOutcome::Moved,
            BrokerError::Controller(
                ControllerError::Indeterminate | ControllerError::Unavailable(_) | ControllerError::Stopped,
            ) => AlterOutcome::Unknown,
            _ => AlterOutcome::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let voters: BTreeMap<u64, String> = [(1, "10.0.0.1:9093".to_owned()), (2, "10.0.0.2:9093".to_owned())].into();
        for id in [new_cluster_id(), quorum_cluster_id(&voters)] {
            assert_eq!(id.len(), 22);
            assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        }
    }

    /// A wall clock the test steps.
    #[derive(Debug)]
    struct SteppedClock(std::sync::atomic::AtomicI64);

    impl rt::time::Clock for SteppedClock {
        fn now_ms(&self) -> i64 {
            self.0.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    #[test]
    fn the_coordinator_clock_starts_at_wall_time_and_ignores_wall_steps() {
        let wall = Arc::new(SteppedClock(std::sync::atomic::AtomicI64::new(1_000_000)));
        let shared: SharedClock = wall.clone();
        let clock = CoordinatorClock::new(&shared);
        let start_ms = clock.now_ms();
        assert!((1_000_000..1_001_000).contains(&start_ms), "starts at wall time: {start_ms}");
        for step_ms in [120_000, -300_000] {
            wall.0.store(1_000_000 + step_ms, std::sync::atomic::Ordering::Relaxed);
            let now_ms = clock.now_ms();
            assert!((start_ms..start_ms + 1_000).contains(&now_ms), "a step of {step_ms} ms moved it to {now_ms}");
        }
    }

    #[test]
    fn every_voter_derives_the_same_cluster_id_and_other_quorums_another() {
        let voters: BTreeMap<u64, String> = [(1, "10.0.0.1:9093".to_owned()), (2, "10.0.0.2:9093".to_owned())].into();
        assert_eq!(quorum_cluster_id(&voters), quorum_cluster_id(&voters.clone()));
        let mut other = voters.clone();
        let _ = other.insert(2, "10.0.0.3:9093".to_owned());
        assert_ne!(quorum_cluster_id(&voters), quorum_cluster_id(&other));
    }
}
