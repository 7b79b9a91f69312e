"""Consumer groups with a real client library against weir.

Usage: consumer_groups.py BOOTSTRAP LIBRARY   (LIBRARY: confluent | kafka-python)

1. Two groups subscribed to one topic each see every record.
2. In a third group, members are added and removed while it consumes (manual commits after
   each poll): together they see every record, and no committed offset ever goes back.
3. A consumer that joins the group afterwards resumes from the committed offsets: it reads
   exactly the records produced after the last commit.

Every loop is bounded in time. Prints `PASS ...` and exits 0, or exits 1 with the reason.
"""

import sys
import time

PARTITIONS = 4
RECORDS = 400
MORE = 40
PHASE_S = 60


def fail(reason):
    print(f"FAIL {reason}", flush=True)
    sys.exit(1)


class Confluent:
    def __init__(self, bootstrap):
        import confluent_kafka
        from confluent_kafka.admin import AdminClient, NewTopic

        self.ck = confluent_kafka
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.new_topic = NewTopic

    def create_topic(self, topic):
        self.admin.create_topics([self.new_topic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(30)

    def produce(self, topic, values):
        producer = self.ck.Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        for index, value in enumerate(values):
            producer.produce(topic, value=value.encode(), partition=index % PARTITIONS)
        if producer.flush(30) != 0:
            fail("produce did not finish")

    def consumer(self, group, topic):
        consumer = self.ck.Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        })
        consumer.subscribe([topic])
        return consumer

    def poll(self, consumer):
        out = []
        for message in consumer.consume(num_messages=50, timeout=0.2):
            if message.error():
                continue
            out.append(message.value().decode())
        return out

    def commit(self, consumer):
        try:
            consumer.commit(asynchronous=False)
        except self.ck.KafkaException as error:
            # Nothing consumed since the last commit, or a rebalance is running: retried later.
            return str(error)
        return None

    def committed(self, consumer, topic):
        partitions = [self.ck.TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}

    def close(self, consumer):
        consumer.close()


class KafkaPython:
    def __init__(self, bootstrap):
        import kafka
        from kafka.admin import KafkaAdminClient, NewTopic

        self.kafka = kafka
        self.bootstrap = bootstrap
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        self.new_topic = NewTopic

    def create_topic(self, topic):
        self.admin.create_topics([self.new_topic(topic, num_partitions=PARTITIONS, replication_factor=1)])

    def produce(self, topic, values):
        producer = self.kafka.KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        for index, value in enumerate(values):
            producer.send(topic, value=value.encode(), partition=index % PARTITIONS)
        producer.flush(30)
        producer.close()

    def consumer(self, group, topic):
        return self.kafka.KafkaConsumer(
            topic,
            bootstrap_servers=self.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )

    def poll(self, consumer):
        out = []
        for records in consumer.poll(timeout_ms=200, max_records=50).values():
            out.extend(record.value.decode() for record in records)
        return out

    def commit(self, consumer):
        try:
            consumer.commit()
        except Exception as error:  # CommitFailedError during a rebalance: retried later
            return str(error)
        return None

    def committed(self, consumer, topic):
        result = {}
        for p in range(PARTITIONS):
            offset = consumer.committed(self.kafka.TopicPartition(topic, p))
            result[p] = -1 if offset is None else offset
        return result

    def close(self, consumer):
        consumer.close()


READ_BY = {}


def consume_all(lib, consumers, wanted, topic, check_commits=None):
    """Polls `consumers` in turn (each commits after a poll) until `wanted` values were seen."""
    seen = set()
    deadline = time.time() + PHASE_S
    while time.time() < deadline and not wanted <= seen:
        for consumer in consumers:
            values = lib.poll(consumer)
            READ_BY[id(consumer)] = READ_BY.get(id(consumer), 0) + len(values)
            seen.update(values)
            if values and check_commits is not None:
                lib.commit(consumer)
                check_commits(consumer)
    return seen


def main():
    bootstrap, library = sys.argv[1], sys.argv[2]
    lib = Confluent(bootstrap) if library == "confluent" else KafkaPython(bootstrap)
    topic = f"groups-{library}"
    lib.create_topic(topic)
    values = [f"{library}-{i}" for i in range(RECORDS)]
    lib.produce(topic, values)
    wanted = set(values)

    # 1. Two groups, each sees everything.
    for group in ("first", "second"):
        consumer = lib.consumer(f"{library}-{group}", topic)
        seen = consume_all(lib, [consumer], wanted, topic)
        lib.close(consumer)
        if seen != wanted:
            fail(f"group {group} saw {len(seen & wanted)} of {len(wanted)} records")

    # 2. Members come and go; commits never go back.
    group = f"{library}-changing"
    highest = {}

    def check_commits(consumer):
        for partition, offset in lib.committed(consumer, topic).items():
            if offset is None or offset < 0:
                continue
            if offset < highest.get(partition, -1):
                fail(f"committed offset of partition {partition} went back: {highest[partition]} -> {offset}")
            highest[partition] = offset

    first = lib.consumer(group, topic)
    READ_BY.clear()
    seen = set()
    deadline = time.time() + PHASE_S
    while time.time() < deadline and len(seen) < RECORDS // 4:
        values = lib.poll(first)
        READ_BY[id(first)] = READ_BY.get(id(first), 0) + len(values)
        seen.update(values)
        if values:
            lib.commit(first)
            check_commits(first)
    second = lib.consumer(group, topic)
    third = lib.consumer(group, topic)
    deadline = time.time() + PHASE_S
    while time.time() < deadline and len(seen) < RECORDS // 2:
        for consumer in (first, second, third):
            values = lib.poll(consumer)
            READ_BY[id(consumer)] = READ_BY.get(id(consumer), 0) + len(values)
            seen.update(values)
            if values:
                lib.commit(consumer)
                check_commits(consumer)
    lib.close(first)
    seen |= consume_all(lib, [second, third], wanted - seen, topic, check_commits)
    lib.close(third)
    seen |= consume_all(lib, [second], wanted - seen, topic, check_commits)
    # Commit whatever the last member holds, then leave.
    for _ in range(20):
        seen.update(lib.poll(second))
        if lib.commit(second) is None:
            break
    check_commits(second)
    final = lib.committed(second, topic)
    lib.close(second)
    if not wanted <= seen:
        fail(f"the changing group saw {len(seen & wanted)} of {len(wanted)} records")
    readers = sum(1 for consumer in (first, second, third) if READ_BY.get(id(consumer), 0) > 0)
    if readers < 2:
        fail(f"only {readers} member(s) of the changing group read records: the rebalances gave the others nothing")
    if sum(final.values()) != RECORDS:
        fail(f"the changing group's final commits {final} do not cover the {RECORDS} records")

    # 3. A new member resumes from the committed offsets.
    more = [f"{library}-more-{i}" for i in range(MORE)]
    lib.produce(topic, more)
    resumed = lib.consumer(group, topic)
    got = []
    deadline = time.time() + PHASE_S
    while time.time() < deadline and len(got) < MORE:
        got.extend(lib.poll(resumed))
    time.sleep(1)
    got.extend(lib.poll(resumed))
    lib.close(resumed)
    if sorted(got) != sorted(more):
        old = [value for value in got if value not in more]
        fail(f"the resumed consumer read {len(got)} records ({len(old)} already committed), wanted the {MORE} new ones")
    print(f"PASS {library}: 2 groups x {RECORDS} records, changing group saw all with monotonic commits {final}, resumed {len(got)}", flush=True)


if __name__ == "__main__":
    main()
