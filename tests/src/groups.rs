//! Consumer groups with real clients: librdkafka (confluent-kafka-python) and kafka-python
//! against one node, and a librdkafka group that keeps consuming while its coordinator is
//! SIGKILLed on a 3-node cluster.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use client::admin::{Admin, NewTopic};

use crate::dev_cluster::{leaders_among, DevCluster};
use crate::harness::{
    python, repo_root, run_bounded, scrub_weir_environment, tail, weir_binary, weir_cli, WeirProcess,
};
use crate::tester::connect_any;

/// How long the failover script may run.
const FAILOVER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
/// Records the failover script produces and consumes.
const FAILOVER_RECORDS: usize = 600;
/// Partitions of the failover topic.
const FAILOVER_PARTITIONS: i32 = 4;

/// Runs `tests/python/consumer_groups.py` for `library` against a fresh node.
fn run_groups_script(library: &str) {
    let node = WeirProcess::start(&["--group-initial-rebalance-delay-ms", "500"]);
    let mut command = Command::new(python());
    let _ = command
        .arg(repo_root().join("tests/python/consumer_groups.py"))
        .arg(node.address())
        .arg(library)
        .env("PYTHONUNBUFFERED", "1");
    let output = run_bounded(&mut command, None, Duration::from_secs(240));
    output.assert_success("consumer_groups.py");
    assert!(
        output.stdout.lines().any(|line| line.starts_with("PASS")),
        "consumer_groups.py exited 0 without its PASS line\n{}\n{}\n--- weir ---\n{}",
        output.stdout,
        output.stderr,
        node.stderr()
    );
    eprintln!("groups: {}", output.stdout.trim());
}

/// Goal: librdkafka consumer groups work against weir: two groups on one topic each see every
/// record; in one group, members added and removed rebalance and together see every record
/// with no committed offset going back; a consumer that joins later resumes from the committed
/// offsets. Method: `tests/python/consumer_groups.py confluent` (manual commits after each
/// poll, committed offsets read back after each commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_consumer_groups_rebalance_commit_and_resume() {
    run_groups_script("confluent");
}

/// Goal: the same with kafka-python, whose group protocol code is its own (JoinGroup v7,
/// SyncGroup v5, OffsetCommit v8). Method: `tests/python/consumer_groups.py kafka-python`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_consumer_groups_rebalance_commit_and_resume() {
    run_groups_script("kafka-python");
}

/// Goal: a consumer group outlives its coordinator: when the broker leading the group's
/// `__consumer_offsets` partition is SIGKILLed, another replica takes the partition, rebuilds
/// the group and its offsets from it, and the members carry on: together they see every
/// record, no committed offset goes back, and the final commits cover every record. Method: 3
/// nodes (`__consumer_offsets` with replication factor 3); `tests/python/group_failover.py`
/// consumes slowly with two librdkafka members; once it has joined, the coordinator's node is
/// killed and restarted (`weir dev-cluster restart`). Prints the measured first-join and
/// rebalance times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_survives_the_loss_of_its_coordinator() {
    let mut cluster = DevCluster::start_nodes_with(
        3,
        &[("WEIR_BROKER_SESSION_TIMEOUT_MS", "3000"), ("WEIR_OFFSETS_TOPIC_NUM_PARTITIONS", "6")],
    );
    let nodes = cluster.nodes();
    let bootstrap: Vec<String> = nodes.iter().map(|node| node.kafka.clone()).collect();
    let all: Vec<i32> = nodes.iter().map(|node| i32::try_from(node.id).expect("small")).collect();
    let client = connect_any(&bootstrap).await;
    let topic = NewTopic {
        num_partitions: FAILOVER_PARTITIONS,
        replication_factor: 3,
        configs: vec![("min.insync.replicas".to_owned(), "2".to_owned())],
        ..NewTopic::new("group-failover")
    };
    let created = Admin::new(&client).create_topics(&[topic], false).await.expect("CreateTopics answers");
    assert!(created[0].1.is_ok(), "creating the topic failed: {created:?}");
    let _ = leaders_among(&client, "group-failover", &all).await;

    let stdout_path = cluster.dir.with_file_name("group-failover.stdout");
    let stderr_path = cluster.dir.with_file_name("group-failover.stderr");
    let mut script = Command::new(python());
    let _ = script
        .arg(repo_root().join("tests/python/group_failover.py"))
        .arg(bootstrap.join(","))
        .arg("group-failover")
        .arg(FAILOVER_PARTITIONS.to_string())
        .arg(FAILOVER_RECORDS.to_string())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
    scrub_weir_environment(&mut script);
    let mut child = script.spawn().expect("python starts");
    let started = Instant::now();
    while !tail(&stdout_path).contains("READY") {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("group_failover.py exited {status} before joining:\n{}\n{}", tail(&stdout_path), tail(&stderr_path));
        }
        assert!(started.elapsed() < FAILOVER_SCRIPT_TIMEOUT, "the group never joined:\n{}", tail(&stdout_path));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The coordinator is the leader of the group's __consumer_offsets partition.
    let _ = client.refresh_metadata(Some(&["__consumer_offsets".to_owned()])).await;
    let offsets_partitions = client.partitions_for("__consumer_offsets").await.expect("__consumer_offsets exists");
    let index = coordinator::partition_for("failover", i32::try_from(offsets_partitions.len()).expect("small"));
    let coordinator_node =
        offsets_partitions.iter().find(|partition| partition.partition == index).expect("the group's partition").leader;
    let mut restart = Command::new(weir_binary());
    let _ =
        restart.args(["dev-cluster", "restart", "--node", &coordinator_node.to_string(), "--dir"]).arg(&cluster.dir);
    scrub_weir_environment(&mut restart);
    run_bounded(&mut restart, None, Duration::from_secs(60)).assert_success("weir dev-cluster restart");

    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let (stdout, stderr) = (tail(&stdout_path), tail(&stderr_path));
            assert!(
                status.success() && stdout.lines().any(|line| line.starts_with("PASS")),
                "group_failover.py failed ({status}) after its coordinator (node {coordinator_node}) was killed:\n{stdout}\n{stderr}\n{}",
                cluster.output()
            );
            eprintln!("groups: coordinator node {coordinator_node} killed; {}", stdout.trim());
            return;
        }
        if started.elapsed() > FAILOVER_SCRIPT_TIMEOUT {
            let _ = child.kill();
            panic!("group_failover.py did not finish:\n{}\n{}", tail(&stdout_path), tail(&stderr_path));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Goal: `weir group` lists, describes, resets and deletes a consumer group as
/// `kafka-consumer-groups` would: the description shows each partition's committed offset, log
/// end offset and lag; `reset-offsets` without `--execute` changes nothing, with it moves the
/// offsets; a group with members is refused a reset; deleting an unknown group fails. Method:
/// a librdkafka member reads 20 of 30 records on one partition, commits and leaves
/// (`tests/python/commit_and_leave.py`), then the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_cli_lists_describes_resets_and_deletes() {
    let node = WeirProcess::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let address = node.address();
    weir_cli(&address, &["topic", "create", "cli-topic", "--partitions", "1"], None).assert_success("topic create");
    let lines: String = (0..30).map(|i| format!("r{i}\n")).collect();
    weir_cli(&address, &["produce", "cli-topic"], Some(&lines)).assert_success("produce");
    let mut member = Command::new(python());
    let _ = member
        .arg(repo_root().join("tests/python/commit_and_leave.py"))
        .args([address.as_str(), "cli-group", "cli-topic", "20"])
        .env("PYTHONUNBUFFERED", "1");
    run_bounded(&mut member, None, Duration::from_secs(120)).assert_success("commit_and_leave.py");

    let listed = weir_cli(&address, &["group", "list"], None);
    listed.assert_success("group list");
    assert!(listed.stdout.contains("cli-group\tEmpty\tconsumer"), "group list:\n{}", listed.stdout);
    let described = weir_cli(&address, &["group", "describe", "cli-group"], None);
    described.assert_success("group describe");
    assert!(described.stdout.contains("State: Empty"), "{}", described.stdout);
    assert!(
        described.stdout.contains("cli-topic\t0\t20\t30\t10\t"),
        "offset 20, end 30, lag 10:\n{}",
        described.stdout
    );

    let dry =
        weir_cli(&address, &["group", "reset-offsets", "cli-group", "--topic", "cli-topic", "--to-earliest"], None);
    dry.assert_success("reset-offsets dry run");
    assert!(dry.stdout.contains("cli-topic\t0\t20\t0") && dry.stdout.contains("Dry run"), "{}", dry.stdout);
    let unchanged = weir_cli(&address, &["group", "describe", "cli-group"], None);
    assert!(
        unchanged.stdout.contains("cli-topic\t0\t20\t30\t10\t"),
        "a dry run changed offsets:\n{}",
        unchanged.stdout
    );
    let executed = weir_cli(
        &address,
        &["group", "reset-offsets", "cli-group", "--topic", "cli-topic", "--to-offset", "7", "--execute"],
        None,
    );
    executed.assert_success("reset-offsets --execute");
    let moved = weir_cli(&address, &["group", "describe", "cli-group"], None);
    assert!(moved.stdout.contains("cli-topic\t0\t7\t30\t23\t"), "offset 7, lag 23:\n{}", moved.stdout);
    let ambiguous = weir_cli(&address, &["group", "reset-offsets", "cli-group", "--topic", "cli-topic"], None);
    assert!(!ambiguous.status.success() && ambiguous.stderr.contains("exactly one"), "{}", ambiguous.stderr);

    let unknown = weir_cli(&address, &["group", "delete", "no-such-group"], None);
    assert!(!unknown.status.success() && unknown.stderr.contains("GroupIdNotFound"), "{}", unknown.stderr);
    weir_cli(&address, &["group", "delete", "cli-group"], None).assert_success("group delete");
    let after = weir_cli(&address, &["group", "list"], None);
    assert!(!after.stdout.contains("cli-group"), "deleted group still listed:\n{}", after.stdout);
}

/// Records of the native group test.
const NATIVE_RECORDS: usize = 300;
/// Partitions of the native group test's topic.
const NATIVE_PARTITIONS: i32 = 6;

/// Goal: the native client's group consumer works with each of the four assignors: two
/// members share a topic, never own one partition at the same time, together read every
/// record, and their auto-commits cover every record when they close. Also a librdkafka
/// member joins the same group as a native one (both speak `range`) and between them they
/// read everything. Method: one node; per assignor a fresh group whose two `GroupConsumer`s
/// are polled in turn; then `tests/python/commit_and_leave.py` next to a native member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_group_consumers_share_partitions_with_every_assignor() {
    use client::consumer::{ConsumerConfig, OffsetReset};
    use client::group::assignor::Assignor;
    use client::group::{GroupConfig, GroupConsumer};
    use client::producer::{Producer, ProducerConfig, ProducerRecord};
    use protocol::ids::TopicPartition;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let node = WeirProcess::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let client = connect_any(&[node.address()]).await;
    crate::tester::create_topic(&client, "native-groups", NATIVE_PARTITIONS, &[]).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let produce = |prefix: String| {
        let producer = producer.clone();
        async move {
            let values: BTreeSet<String> = (0..NATIVE_RECORDS).map(|i| format!("{prefix}-{i}")).collect();
            for (index, value) in values.iter().enumerate() {
                let partition = i32::try_from(index).expect("small") % NATIVE_PARTITIONS;
                let _ =
                    producer.send(ProducerRecord::new("native-groups", value.clone()).with_partition(partition)).await;
            }
            producer.flush().await.expect("flush");
            values
        }
    };
    let admin = Admin::new(&client);
    let value_of = |record: &client::consumer::ConsumerRecord| {
        record.value.as_ref().map(|value| String::from_utf8_lossy(value).into_owned())
    };

    // Each member has its own client (and connections), as separate processes would.
    let bootstrap = vec![node.address()];
    let member = |group: &str, assignor: Assignor| {
        let client = connect_any(&bootstrap);
        let group = group.to_owned();
        async move {
            let client = client.await;
            let config = GroupConfig {
                heartbeat_interval_ms: 300,
                session_timeout_ms: 6_000,
                auto_commit_interval_ms: 200,
                assignors: vec![assignor],
                ..GroupConfig::new(group.clone())
            };
            let consumer_config =
                ConsumerConfig { auto_offset_reset: OffsetReset::Latest, ..ConsumerConfig::default() };
            let mut consumer = GroupConsumer::new(client, consumer_config, config).expect("valid config");
            consumer.subscribe(vec!["native-groups".to_owned()]);
            consumer
        }
    };
    for assignor in [Assignor::Range, Assignor::RoundRobin, Assignor::Sticky, Assignor::CooperativeSticky] {
        let group = format!("native-{}", assignor.name());
        // Each member polls in its own task (as separate processes would), recording what it
        // read and, after every poll, its generation and assignment.
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeSet::<String>::new()));
        let owners = Arc::new(Mutex::new(BTreeMap::<(i32, TopicPartition), String>::new()));
        let conflicts = Arc::new(Mutex::new(Vec::<String>::new()));
        let assigned = Arc::new(Mutex::new([false; 2]));
        let mut tasks = Vec::new();
        for index in 0..2 {
            let mut consumer = member(&group, assignor).await;
            let (stop, seen, owners, conflicts, assigned) = (
                Arc::clone(&stop),
                Arc::clone(&seen),
                Arc::clone(&owners),
                Arc::clone(&conflicts),
                Arc::clone(&assigned),
            );
            tasks.push(tokio::spawn(async move {
                let mut read = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let records = consumer.poll(Duration::from_millis(100)).await.expect("poll");
                    read += records.len();
                    seen.lock().expect("lock").extend(records.iter().filter_map(value_of));
                    let (member_id, generation) = consumer.generation();
                    let assignment = consumer.assignment();
                    assigned.lock().expect("lock")[index] = !assignment.is_empty();
                    let mut owners = owners.lock().expect("lock");
                    for partition in assignment {
                        if let Some(other) = owners.insert((generation, partition.clone()), member_id.clone()) {
                            if other != member_id {
                                conflicts
                                    .lock()
                                    .expect("lock")
                                    .push(format!("{partition} in generation {generation}: {other} and {member_id}"));
                            }
                        }
                    }
                }
                consumer.close().await.expect("close");
                read
            }));
            // The second member joins a group that already has a generation.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let started = Instant::now();
        while !assigned.lock().expect("lock").iter().all(|has| *has) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{}: the members never both had partitions",
                assignor.name()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let values = produce(assignor.name().to_owned()).await;
        while !values.is_subset(&seen.lock().expect("lock")) {
            let read = seen.lock().expect("lock").intersection(&values).count();
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "{}: read {read} of {}",
                assignor.name(),
                values.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::SeqCst);
        let mut read_by = Vec::new();
        for task in tasks {
            read_by.push(task.await.expect("member task"));
        }
        assert!(read_by.iter().all(|read| *read > 0), "{}: a member read nothing: {read_by:?}", assignor.name());
        let conflicts = conflicts.lock().expect("lock").clone();
        assert!(
            conflicts.is_empty(),
            "{}: partitions with two owners in one generation: {conflicts:?}\n{}",
            assignor.name(),
            node.stderr()
        );
        let committed = admin.list_group_offsets(&group).await.expect("offsets");
        let ends = committed.values().map(|offset| offset.0).sum::<i64>();
        let end_offsets: i64 = {
            let mut sum = 0;
            for partition in 0..NATIVE_PARTITIONS {
                sum += crate::tester::log_end_offset(&client, "native-groups", partition).await;
            }
            sum
        };
        assert_eq!(ends, end_offsets, "{}: commits {committed:?} do not reach the log ends", assignor.name());
        eprintln!("groups: {} read {:?} records per member", assignor.name(), read_by);
    }

    // A librdkafka member and a native one in one group (both speak `range`).
    let stop = Arc::new(AtomicBool::new(false));
    let native_seen = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let mut native = member("mixed", Assignor::Range).await;
    let (native_stop, native_values) = (Arc::clone(&stop), Arc::clone(&native_seen));
    let native_task = tokio::spawn(async move {
        while !native_stop.load(Ordering::SeqCst) {
            let records = native.poll(Duration::from_millis(100)).await.expect("poll");
            native_values.lock().expect("lock").extend(records.iter().filter_map(value_of));
        }
        native.close().await.expect("close");
    });
    let mut python_member = Command::new(python());
    let _ = python_member
        .arg(repo_root().join("tests/python/group_member.py"))
        .args([node.address().as_str(), "mixed", "native-groups", "20"])
        .env("PYTHONUNBUFFERED", "1");
    let python_run =
        tokio::task::spawn_blocking(move || run_bounded(&mut python_member, None, Duration::from_secs(120)));
    let started = Instant::now();
    loop {
        let members = admin.describe_group("mixed").await.map(|group| group.members).unwrap_or_default();
        if members.len() == 2 && members.iter().all(|member| !member.assignment.is_empty()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the mixed group never had two assigned members: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let values = produce("mixed".to_owned()).await;
    let python_output = python_run.await.expect("joined");
    python_output.assert_success("group_member.py");
    stop.store(true, Ordering::SeqCst);
    native_task.await.expect("native member");
    let python_values: BTreeSet<String> =
        python_output.stdout.lines().filter_map(|line| line.strip_prefix("value ").map(str::to_owned)).collect();
    let native_values = native_seen.lock().expect("lock").clone();
    let union: BTreeSet<String> = native_values.union(&python_values).cloned().collect();
    assert!(
        values.is_subset(&union) && !python_values.is_disjoint(&values) && !native_values.is_disjoint(&values),
        "mixed group: native read {}, librdkafka read {} ({}), of {} new records",
        native_values.intersection(&values).count(),
        python_values.intersection(&values).count(),
        python_output.stdout.lines().next().unwrap_or_default(),
        values.len()
    );
    eprintln!(
        "groups: mixed group: native read {}, librdkafka read {}",
        native_values.intersection(&values).count(),
        python_values.intersection(&values).count()
    );
}
