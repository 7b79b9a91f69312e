//! A follower's fetcher: one task per followed partition, fetching from the leader with the
//! Kafka Fetch API (v12, with `ReplicaId`, `CurrentLeaderEpoch` and `LastFetchedEpoch`, so
//! the leader checks the follower's log against its epochs on every fetch).
//!
//! Each round: fetch from the log end offset, which is also the durable end (every append is
//! fsynced before the next fetch reports its offset, so the leader counts only what this
//! follower has on stable storage); on a diverging-epoch answer cut the log where
//! [`replication::truncation::resolve`] says (never at the high watermark) and fetch again;
//! otherwise append the leader's batches as they are ([`storage::PartitionLog::append_replicated`]),
//! fsync, and take the leader's high watermark, capped at the log end. The task ends when the
//! partition stops following this leader in this epoch (the metadata image moved on).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use client::BrokerConnection;
use protocol::ids::{LeaderEpoch, NodeId, Offset};
use protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use protocol::kafka_protocol::messages::{BrokerId, FetchRequest, RequestKind, ResponseKind, TopicName};
use protocol::kafka_protocol::protocol::StrBytes;
use protocol::ResponseError;
use replication::epoch_cache::{EpochEnd, UNDEFINED_EPOCH};
use replication::truncation::{resolve, Truncation};

use crate::partition::Partition;

/// How long the leader may hold a follower's fetch waiting for data.
const FOLLOWER_FETCH_WAIT_MS: i32 = 500;
/// Bytes of one partition in one fetch answer.
const FOLLOWER_FETCH_PARTITION_BYTES_MAX: i32 = 4 * 1024 * 1024;
/// Bound on one fetch exchange (connect, or request and answer).
const FOLLOWER_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Largest answer frame read from a leader.
const FOLLOWER_SOCKET_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Pause after a failed round.
const FOLLOWER_RETRY_BACKOFF_MS: u64 = 200;

/// Starts fetching `partition` from `leader` (at `address`) in `leader_epoch`.
pub(crate) fn start(partition: Arc<Partition>, me: NodeId, leader: NodeId, leader_epoch: LeaderEpoch, address: String) {
    drop(rt::task::spawn(async move {
        // Planted bug: the pre-KIP-101 rule, a new follower cutting its log at its high
        // watermark before it fetches.
        if crate::planted_bug("truncate-to-high-watermark", true) {
            let _io = partition.replica_io().await;
            if partition.follows(leader, leader_epoch) {
                let _ = partition.truncate_to(partition.high_watermark()).await;
            }
        }
        let mut connection: Option<BrokerConnection> = None;
        while partition.follows(leader, leader_epoch) {
            match round(&partition, me, leader, leader_epoch, &address, &mut connection).await {
                Ok(()) => {}
                Err(reason) => {
                    tracing::debug!(partition = %partition.topic_partition, %leader, %reason, "follower fetch failed");
                    rt::time::sleep(Duration::from_millis(FOLLOWER_RETRY_BACKOFF_MS)).await;
                }
            }
        }
        tracing::debug!(partition = %partition.topic_partition, %leader, %leader_epoch, "stopped following");
    }));
}

/// One fetch and what follows from it.
async fn round(
    partition: &Partition,
    me: NodeId,
    leader: NodeId,
    leader_epoch: LeaderEpoch,
    address: &str,
    connection: &mut Option<BrokerConnection>,
) -> Result<(), String> {
    if !connection.as_ref().is_some_and(BrokerConnection::is_alive) {
        let client_id = format!("weir-replica-{}", me.0);
        let connected =
            BrokerConnection::connect(address, &client_id, FOLLOWER_REQUEST_TIMEOUT_MS, FOLLOWER_SOCKET_BYTES_MAX)
                .await
                .map_err(|error| format!("cannot connect to the leader at {address}: {error}"))?;
        *connection = Some(connected);
    }
    let connection = connection.as_ref().expect("connected above");
    let log = &partition.log;
    let fetch_offset = log.log_end_offset();
    let last_fetched_epoch = log.latest_epoch().unwrap_or(UNDEFINED_EPOCH);
    let topic = &partition.topic_partition;
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(me.0))
        .with_max_wait_ms(FOLLOWER_FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FOLLOWER_FETCH_PARTITION_BYTES_MAX)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.topic.clone())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(topic.partition.0)
                .with_current_leader_epoch(leader_epoch.0)
                .with_fetch_offset(fetch_offset.0)
                .with_last_fetched_epoch(last_fetched_epoch.0)
                .with_log_start_offset(log.log_start_offset().0)
                .with_partition_max_bytes(FOLLOWER_FETCH_PARTITION_BYTES_MAX)])]);
    let response = connection.send(&RequestKind::Fetch(request)).await.map_err(|error| error.to_string())?;
    let ResponseKind::Fetch(response) = response else {
        return Err("the leader answered a fetch with another kind of response".into());
    };
    if response.error_code != 0 {
        return Err(format!("fetch refused with error code {}", response.error_code));
    }
    let data = response
        .responses
        .into_iter()
        .flat_map(|topic| topic.partitions)
        .find(|data| data.partition_index == topic.partition.0)
        .ok_or("the fetch answer lacks the partition")?;
    // Writes happen under the replica lock, and only while still following this epoch.
    let _io = partition.replica_io().await;
    if !partition.follows(leader, leader_epoch) {
        return Ok(());
    }
    match ResponseError::try_from_code(data.error_code) {
        None => {}
        Some(ResponseError::OffsetOutOfRange) if fetch_offset.0 < data.log_start_offset => {
            // The leader no longer holds anything this log has: start over at its log start.
            tracing::info!(partition = %topic, from = %fetch_offset, to = data.log_start_offset, "follower log behind the leader's start; restarting there");
            return partition.truncate_fully_to(Offset(data.log_start_offset)).await.map_err(|error| error.to_string());
        }
        Some(error) => return Err(format!("fetch refused: {error:?}")),
    }
    // A diverging answer has an epoch, or (the leader knows none at or below ours) epoch -1
    // with the leader's log start offset.
    if data.diverging_epoch.epoch >= 0 || data.diverging_epoch.end_offset >= 0 {
        let leader_end = EpochEnd {
            epoch: LeaderEpoch(data.diverging_epoch.epoch),
            end_offset: Offset(data.diverging_epoch.end_offset),
        };
        let cut = match resolve(&log.leader_epoch_cache(), log.log_end_offset(), leader_end) {
            Truncation::To(offset) | Truncation::ToThenAsk { offset, .. } => offset,
            Truncation::Fully => log.log_start_offset(),
        };
        if cut < partition.high_watermark() {
            // Would cut committed data: a protocol bug. Refuse and say so loudly.
            tracing::error!(partition = %topic, %cut, high_watermark = %partition.high_watermark(), "refusing a truncation below the high watermark");
            return Err("a truncation below the high watermark was asked for".into());
        }
        tracing::info!(partition = %topic, from = %log.log_end_offset(), to = %cut, "follower truncating a diverged tail");
        return partition.truncate_to(cut).await.map_err(|error| error.to_string());
    }
    if let Some(records) = data.records.filter(|records| !records.is_empty()) {
        let now_ms = partition.now_ms();
        partition.append_replicated(BytesMut::from(&records[..]), now_ms).await.map_err(|error| error.to_string())?;
        // Planted bug: report appended data as replicated before it is on stable storage.
        if !crate::planted_bug("follower-reports-unsynced", true) {
            log.flush().await.map_err(|error| error.to_string())?;
        }
    }
    partition.advance_high_watermark(replication::follower_high_watermark(
        Offset(data.high_watermark),
        log.log_end_offset(),
    ));
    Ok(())
}
