"""confluent-kafka-python (librdkafka) against a weir cluster that just lost a node.

Usage: confluent_cluster_client.py BOOTSTRAP DEAD_BROKER_ID TOPIC [TOPIC...]

Bootstraps from the given (surviving) brokers, checks the metadata lists live brokers only and
that every partition of every TOPIC has a leader among them, creates a new topic, then
produces with acks=all to every topic and partition and reads each record back by
assign + seek. Exits non-zero with a message on the first mismatch; prints a PASS line.
"""

import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 60
RECORDS_PER_PARTITION = 20

checks = 0


def check(condition, message):
    global checks
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def leaders_settled(admin, topics, dead):
    """Waits until every partition of `topics` has a live leader; returns the metadata."""
    deadline = time.time() + TIMEOUT_S
    while True:
        metadata = admin.list_topics(timeout=TIMEOUT_S)
        live = set(metadata.brokers)
        problems = []
        for topic in topics:
            described = metadata.topics.get(topic)
            if described is None or described.error is not None:
                problems.append(f"{topic}: {described.error if described else 'missing'}")
                continue
            for partition in described.partitions.values():
                if partition.leader not in live or partition.leader == dead:
                    problems.append(f"{topic}[{partition.id}] leader {partition.leader}")
        if not problems and dead not in live:
            return metadata
        if time.time() > deadline:
            check(False, f"partitions without a live leader after {TIMEOUT_S}s: {problems}; brokers {sorted(live)}")
        time.sleep(0.5)


def main():
    bootstrap, dead, topics = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    base = {"bootstrap.servers": bootstrap}
    admin = AdminClient(base)

    created = f"after-failover-python-{int(time.time() * 1000)}"
    futures = admin.create_topics([NewTopic(created, num_partitions=3, replication_factor=2)], operation_timeout=TIMEOUT_S)
    futures[created].result(TIMEOUT_S)
    topics = topics + [created]

    metadata = leaders_settled(admin, topics, dead)
    check(dead not in metadata.brokers, f"the killed broker {dead} is still listed: {sorted(metadata.brokers)}")
    check(metadata.controller_id in metadata.brokers, f"controller id {metadata.controller_id} is not a live broker")

    producer = Producer({**base, "acks": "all", "linger.ms": 5, "enable.idempotence": False})
    expected = {}
    errors = []

    def delivered(error, message):
        if error is not None:
            errors.append(str(error))
            return
        expected[(message.topic(), message.partition(), message.offset())] = message.value()

    for topic in topics:
        for partition in metadata.topics[topic].partitions:
            for index in range(RECORDS_PER_PARTITION):
                producer.produce(topic, value=f"{topic}/{partition}/{index}".encode(), partition=partition, on_delivery=delivered)
            producer.poll(0)
    remaining = producer.flush(TIMEOUT_S)
    check(remaining == 0, f"{remaining} records undelivered")
    check(not errors, f"delivery errors: {errors[:5]}")
    total = sum(len(metadata.topics[topic].partitions) for topic in topics) * RECORDS_PER_PARTITION
    check(len(expected) == total, f"{len(expected)} of {total} records acknowledged")

    consumer = Consumer({**base, "group.id": "unused", "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    first = {}
    for (topic, partition, offset) in expected:
        first[(topic, partition)] = min(offset, first.get((topic, partition), offset))
    consumer.assign([TopicPartition(topic, partition, offset) for (topic, partition), offset in first.items()])
    seen = {}
    deadline = time.time() + TIMEOUT_S
    while len(seen) < len(expected) and time.time() < deadline:
        message = consumer.poll(1.0)
        if message is None or message.error() is not None:
            continue
        key = (message.topic(), message.partition(), message.offset())
        if key in expected:
            seen[key] = message.value()
    consumer.close()
    missing = [key for key in expected if key not in seen]
    check(not missing, f"{len(missing)} acknowledged records not read back, e.g. {missing[:3]}")
    check(all(seen[key] == value for key, value in expected.items()), "a record read back differs from the one written")
    print(f"PASS: {checks} checks, {len(expected)} records over {len(topics)} topics after losing broker {dead}")


if __name__ == "__main__":
    main()
