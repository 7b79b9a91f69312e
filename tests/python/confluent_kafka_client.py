"""confluent-kafka-python (librdkafka) against weir: admin, producer and consumer.

Usage: confluent_kafka_client.py HOST:PORT

Creates a topic with a config override, checks DescribeConfigs reports it as
DYNAMIC_TOPIC_CONFIG, produces keyed records with headers under every codec (acks=all),
reads them back by assign + seek to the beginning and compares them exactly (partition,
offset, key, value, headers, timestamp), then checks offsets_for_times and the watermarks.
Exits non-zero with a message on the first mismatch; prints a PASS line at the end.
"""

import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewPartitions, NewTopic, ResourceType

TIMEOUT_S = 30
PARTITIONS = 3
RECORDS_PER_CODEC = 120
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]

checks = 0


def check(condition, message):
    global checks
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def main():
    bootstrap = sys.argv[1]
    base = {"bootstrap.servers": bootstrap}
    admin = AdminClient(base)
    topic = f"confluent-python-{int(time.time() * 1000)}"

    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1, config={"retention.ms": "3600000"})],
        operation_timeout=TIMEOUT_S,
    )
    futures[topic].result(TIMEOUT_S)
    metadata = admin.list_topics(timeout=TIMEOUT_S)
    check(topic in metadata.topics, f"list_topics lacks {topic}: {sorted(metadata.topics)}")
    check(len(metadata.topics[topic].partitions) == PARTITIONS, f"{topic} has {len(metadata.topics[topic].partitions)} partitions")

    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(TIMEOUT_S)
    retention = configs.get("retention.ms")
    check(retention is not None, f"describe_configs lacks retention.ms: {sorted(configs)}")
    check(retention.value == "3600000", f"retention.ms is {retention.value!r}")
    check(retention.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, f"retention.ms source is {retention.source!r}")
    segment = configs.get("segment.bytes")
    check(segment is not None and segment.source == ConfigSource.DEFAULT_CONFIG.value, f"segment.bytes is {segment!r}")

    # Produce: every codec, keyed, with headers (including a null header value), acks=all.
    expected = {}  # (partition, offset) -> (key, value, headers, timestamp)
    errors = []
    for codec in CODECS:
        producer = Producer({**base, "acks": "all", "compression.type": codec, "linger.ms": 20, "enable.idempotence": False})

        def delivered(error, message, codec, headers):
            if error is not None:
                errors.append(f"{codec}: {error}")
                return
            key = (message.partition(), message.offset())
            if key in expected:
                errors.append(f"{codec}: offset {key} acknowledged twice")
            # Delivery reports do not carry headers; the ones sent are expected back.
            expected[key] = (message.key(), message.value(), headers, message.timestamp()[1])

        for index in range(RECORDS_PER_CODEC):
            headers = [("codec", codec.encode()), ("index", str(index).encode()), ("null", None)]
            value = (f"{codec} value {index} " * (1 + index % 4)).encode() + bytes(range(index % 256))
            producer.produce(topic, key=f"{codec}-key-{index % 11}".encode(), value=value, headers=headers,
                             on_delivery=lambda error, message, codec=codec, headers=headers: delivered(error, message, codec, headers))
            producer.poll(0)
        remaining = producer.flush(TIMEOUT_S)
        check(remaining == 0, f"{codec}: {remaining} records still unacknowledged after {TIMEOUT_S} s")
    check(not errors, f"delivery errors: {errors[:5]}")
    check(len(expected) == RECORDS_PER_CODEC * len(CODECS), f"{len(expected)} acknowledged offsets")

    # Consume everything back by assign + seek to the beginning.
    consumer = Consumer({**base, "group.id": "confluent-python-reader", "enable.auto.commit": False, "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in range(PARTITIONS)])
    got = {}
    at_end = set()
    deadline = time.monotonic() + TIMEOUT_S
    while len(at_end) < PARTITIONS and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error() is not None:
            if message.error().code() == KafkaError._PARTITION_EOF:
                # Everything was acknowledged before reading began, so EOF is the true end.
                at_end.add(message.partition())
                continue
            check(False, f"consume error: {message.error()}")
        got[(message.partition(), message.offset())] = (message.key(), message.value(), message.headers() or [], message.timestamp()[1])
    check(len(at_end) == PARTITIONS, f"only partitions {sorted(at_end)} reached their end within {TIMEOUT_S} s")
    check(sorted(got) == sorted(expected), f"offsets read differ: missing {sorted(set(expected) - set(got))[:5]}, extra {sorted(set(got) - set(expected))[:5]}")
    for key in sorted(expected):
        check(got[key] == expected[key], f"record {key}: wrote {expected[key]!r}, read {got[key]!r}")

    # Watermarks: log start 0, high watermark = records acknowledged in the partition.
    for partition in range(PARTITIONS):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT_S)
        count = sum(1 for p, _ in expected if p == partition)
        check((low, high) == (0, count), f"partition {partition} watermarks ({low}, {high}), expected (0, {count})")

    # offsets_for_times: the first offset whose timestamp is at or after the target.
    for partition in range(PARTITIONS):
        records = sorted((offset, value[3]) for (p, offset), value in expected.items() if p == partition)
        if not records:
            continue
        target = records[len(records) // 2][1]
        wanted = next(offset for offset, timestamp in records if timestamp >= target)
        found = consumer.offsets_for_times([TopicPartition(topic, partition, target)], timeout=TIMEOUT_S)[0]
        check(found.error is None, f"offsets_for_times error {found.error}")
        check(found.offset == wanted, f"partition {partition}: offsets_for_times({target}) = {found.offset}, expected {wanted}")
        after_all = consumer.offsets_for_times([TopicPartition(topic, partition, records[-1][1] + 3_600_000)], timeout=TIMEOUT_S)[0]
        check(after_all.offset == -1, f"partition {partition}: offsets_for_times past the last record = {after_all.offset}, expected -1 (end)")

    # Grow the topic by one partition (null assignments: the broker places it) and write to it.
    admin.create_partitions([NewPartitions(topic, PARTITIONS + 1)], operation_timeout=TIMEOUT_S)[topic].result(TIMEOUT_S)
    grown = admin.list_topics(topic, timeout=TIMEOUT_S).topics[topic]
    check(len(grown.partitions) == PARTITIONS + 1, f"{topic} has {len(grown.partitions)} partitions after create_partitions")
    producer = Producer({**base, "acks": "all"})
    producer.produce(topic, value=b"in the new partition", partition=PARTITIONS)
    check(producer.flush(TIMEOUT_S) == 0, "the record to the new partition was not acknowledged")
    consumer.close()
    # A fresh consumer, whose metadata already includes the new partition.
    consumer = Consumer({**base, "group.id": "confluent-python-reader", "enable.auto.commit": False})
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, PARTITIONS), timeout=TIMEOUT_S)
    check((low, high) == (0, 1), f"new partition watermarks ({low}, {high}), expected (0, 1)")
    consumer.close()

    # Delete the topic; it disappears from the metadata.
    admin.delete_topics([topic], operation_timeout=TIMEOUT_S)[topic].result(TIMEOUT_S)
    deadline = time.monotonic() + TIMEOUT_S
    while topic in admin.list_topics(timeout=TIMEOUT_S).topics and time.monotonic() < deadline:
        time.sleep(0.2)
    check(topic not in admin.list_topics(timeout=TIMEOUT_S).topics, f"{topic} still listed after delete_topics")

    print(f"PASS: {checks} checks, {len(expected)} records over {len(CODECS)} codecs")


if __name__ == "__main__":
    main()
