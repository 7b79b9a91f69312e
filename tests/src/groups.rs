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
