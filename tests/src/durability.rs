//! Durability across restarts: a graceful stop (SIGTERM) and a crash (SIGKILL) under load must
//! keep every record acknowledged with acks=all, at the offset it was acknowledged at.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use client::{Client, ClientConfig};

use crate::harness::WeirProcess;
use crate::tester::{connect, create_topic, log_end_offset, offsets, read_to_end};

/// What the broker acknowledged: (partition, offset) -> value.
type Acknowledged = BTreeMap<(i32, i64), Bytes>;

/// Checks that the partitions hold every acknowledged value at its offset, that offsets are
/// dense from 0, and returns the number of records read.
async fn assert_acknowledged_present(
    client: &Client,
    topic: &str,
    partitions: i32,
    acknowledged: &Acknowledged,
    when: &str,
) -> usize {
    let read = read_to_end(client, topic, partitions).await;
    let mut stored: BTreeMap<(i32, i64), Option<Bytes>> = BTreeMap::new();
    for (partition, records) in &read {
        let found = offsets(records);
        let dense: Vec<i64> = (0..found.len() as i64).collect();
        assert_eq!(found, dense, "{when}: offsets of partition {partition} are not dense from 0");
        for record in records {
            let _ = stored.insert((*partition, record.offset.0), record.value.clone());
        }
    }
    let mut missing = Vec::new();
    let mut different = Vec::new();
    for ((partition, offset), value) in acknowledged {
        match stored.get(&(*partition, *offset)) {
            None => missing.push((*partition, *offset, value.clone())),
            Some(found) if found.as_ref() != Some(value) => {
                different.push((*partition, *offset, value.clone(), found.clone()))
            }
            Some(_) => {}
        }
    }
    assert!(
        missing.is_empty() && different.is_empty(),
        "{when}: {} of {} acknowledged records lost (first: {:?}); {} offsets hold another value than acknowledged \
         (first: (partition, offset, acknowledged, found) {:?})",
        missing.len(),
        acknowledged.len(),
        missing.first(),
        different.len(),
        different.first()
    );
    stored.len()
}

/// Goal: a graceful shutdown loses nothing and a restarted node continues the offsets.
/// Method: produce 3000 keyed records with headers over three partitions (acks=all), stop with
/// SIGTERM (exit status 0), restart on the same data directory, read everything back and
/// compare exactly; produce more and check they land right after the old end; repeat once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_keeps_every_acknowledged_record() {
    const PARTITIONS: i32 = 3;
    const FLAGS: [&str; 2] = ["--log-segment-bytes", "32768"];
    let data_dir = tempfile::Builder::new().prefix("weir-graceful-").tempdir().expect("a temporary directory");
    let mut node = WeirProcess::start_in(data_dir.path(), &FLAGS);
    let topic = "graceful";
    let mut acknowledged = Acknowledged::new();
    let mut expected_total = 0;
    for cycle in 0..2 {
        let client = connect(&node.address()).await;
        if cycle == 0 {
            create_topic(&client, topic, PARTITIONS, &[]).await;
        }
        let mut ends_before = BTreeMap::new();
        for partition in 0..PARTITIONS {
            let _ = ends_before.insert(partition, log_end_offset(&client, topic, partition).await);
        }
        let producer = Producer::new(
            client.clone(),
            ProducerConfig { acks: Acks::All, linger_ms: 5, ..ProducerConfig::default() },
        )
        .expect("valid config");
        let mut deliveries = Vec::new();
        for index in 0..1500 {
            let value = Bytes::from(format!("cycle {cycle} record {index} {}", "payload ".repeat(index % 9)));
            let record = ProducerRecord::new(topic, value.clone()).with_key(format!("key-{}", index % 31));
            deliveries.push((value, producer.send(record).await.expect("accepted")));
        }
        producer.flush().await.expect("flush");
        let mut first_new_offset: BTreeMap<i32, i64> = BTreeMap::new();
        for (value, delivery) in deliveries {
            let metadata =
                delivery.await.unwrap_or_else(|error| panic!("cycle {cycle}: a record was not acknowledged: {error}"));
            let first = first_new_offset.entry(metadata.partition).or_insert(metadata.offset.0);
            *first = (*first).min(metadata.offset.0);
            assert!(
                acknowledged.insert((metadata.partition, metadata.offset.0), value).is_none(),
                "cycle {cycle}: offset {}@{} acknowledged twice",
                metadata.partition,
                metadata.offset
            );
        }
        for (partition, first) in &first_new_offset {
            assert_eq!(
                *first, ends_before[partition],
                "cycle {cycle}: new records of partition {partition} start at the old log end"
            );
        }
        expected_total += 1500;
        drop(producer);
        drop(client);

        let status = node.terminate();
        assert!(status.success(), "cycle {cycle}: graceful shutdown exited with {status}; stderr:\n{}", node.stderr());
        if cycle == 0 {
            node.restart();
        } else {
            // A new process (on a new port) over the same directory sees the same log.
            drop(node);
            node = WeirProcess::start_in(data_dir.path(), &FLAGS);
        }
        let client = connect(&node.address()).await;
        let stored = assert_acknowledged_present(
            &client,
            topic,
            PARTITIONS,
            &acknowledged,
            &format!("after graceful restart {cycle}"),
        )
        .await;
        assert_eq!(
            stored, expected_total,
            "after graceful restart {cycle}: records stored (no retries happened, so no duplicates)"
        );
    }
}

/// Outcome counters of one load round.
#[derive(Debug, Default)]
struct RoundOutcome {
    acknowledged: Vec<(i32, i64, Bytes)>,
    failed: usize,
}

/// Goal: a crash (SIGKILL) in the middle of an acks=all load loses no acknowledged record and
/// never puts another value at an acknowledged offset; the recovered log accepts new writes.
/// Method: three rounds; in each a producer sends continuously (acks=all, 4 partitions, small
/// segments so crashes hit rolls too), the node is SIGKILLed once enough records are
/// acknowledged while sends are still in flight, restarted on the same directory, and every
/// record acknowledged in any round so far is checked at its offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_keeps_every_acks_all_record() {
    const PARTITIONS: i32 = 4;
    const ROUNDS: usize = 3;
    const ACKNOWLEDGED_BEFORE_KILL: usize = 3_000;
    const SENDS_PER_ROUND_MAX: usize = 2_000_000;
    const IN_FLIGHT_MAX: usize = 4_000;
    let mut node = WeirProcess::start(&["--log-segment-bytes", "65536"]);
    let topic = "crash";
    create_topic(&connect(&node.address()).await, topic, PARTITIONS, &[]).await;
    let mut acknowledged = Acknowledged::new();

    for round in 0..ROUNDS {
        let config = ClientConfig {
            bootstrap_servers: vec![node.address()],
            request_timeout_ms: 3_000,
            retry_backoff_ms: 50,
            ..ClientConfig::default()
        };
        let client = Client::connect(config).await.expect("connect");
        let producer_config = ProducerConfig {
            acks: Acks::All,
            linger_ms: 2,
            batch_size: 8_192,
            delivery_timeout_ms: 4_000,
            ..ProducerConfig::default()
        };
        let producer = Producer::new(client, producer_config).expect("valid config");
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged_count = Arc::new(AtomicUsize::new(0));
        let outcome = Arc::new(Mutex::new(RoundOutcome::default()));
        let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MAX));

        let sender = {
            let (producer, stop, acknowledged_count, outcome, in_flight) =
                (producer.clone(), stop.clone(), acknowledged_count.clone(), outcome.clone(), in_flight.clone());
            tokio::spawn(async move {
                let mut deliveries = tokio::task::JoinSet::new();
                for index in 0..SENDS_PER_ROUND_MAX {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let permit = in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
                    let value = Bytes::from(format!("round {round} record {index}"));
                    let record = ProducerRecord::new(topic, value.clone()).with_key(format!("k{}", index % 64));
                    let delivery = match producer.send(record).await {
                        Ok(delivery) => delivery,
                        Err(_) => {
                            outcome.lock().expect("no poisoning").failed += 1;
                            continue;
                        }
                    };
                    let (acknowledged_count, outcome) = (acknowledged_count.clone(), outcome.clone());
                    let _ = deliveries.spawn(async move {
                        let result = delivery.await;
                        let mut outcome = outcome.lock().expect("no poisoning");
                        match result {
                            Ok(metadata) => {
                                outcome.acknowledged.push((metadata.partition, metadata.offset.0, value));
                                let _ = acknowledged_count.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(_) => outcome.failed += 1,
                        }
                        drop(permit);
                    });
                    // Reap finished deliveries so the set stays small.
                    while deliveries.try_join_next().is_some() {}
                }
                while deliveries.join_next().await.is_some() {}
            })
        };

        let deadline = Instant::now() + Duration::from_secs(90);
        while acknowledged_count.load(Ordering::SeqCst) < ACKNOWLEDGED_BEFORE_KILL {
            assert!(
                Instant::now() < deadline,
                "round {round}: only {} records acknowledged in 90 s; stderr:\n{}",
                acknowledged_count.load(Ordering::SeqCst),
                node.stderr()
            );
            assert!(!sender.is_finished(), "round {round}: the sending task stopped early");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node.kill9();
        stop.store(true, Ordering::SeqCst);
        drop(producer);
        tokio::time::timeout(Duration::from_secs(60), sender)
            .await
            .unwrap_or_else(|_| panic!("round {round}: deliveries did not settle within 60 s of the kill"))
            .expect("the sending task does not panic");
        let outcome = std::mem::take(&mut *outcome.lock().expect("no poisoning"));
        assert!(outcome.failed > 0, "round {round}: no send was in flight at the kill, so the crash tested nothing");
        for (partition, offset, value) in outcome.acknowledged.iter().cloned() {
            if let Some(previous) = acknowledged.insert((partition, offset), value.clone()) {
                panic!("round {round}: {partition}@{offset} acknowledged for {value:?} after an earlier round acknowledged {previous:?} there");
            }
        }
        eprintln!(
            "round {round}: {} acknowledged, {} failed or unknown at the kill; {} acknowledged in total",
            outcome.acknowledged.len(),
            outcome.failed,
            acknowledged.len()
        );

        node.restart();
        let client = connect(&node.address()).await;
        let _ = assert_acknowledged_present(
            &client,
            topic,
            PARTITIONS,
            &acknowledged,
            &format!("after kill -9 round {round}"),
        )
        .await;
    }
}
