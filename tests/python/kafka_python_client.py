"""kafka-python (a pure-Python client with its own protocol code) against weir.

Usage: kafka_python_client.py HOST:PORT

Creates a topic with a config override and checks describe_configs reports it as
DYNAMIC_TOPIC_CONFIG, produces keyed records with headers uncompressed and with gzip (the
codecs kafka-python supports without optional libraries) with acks=all, reads them back by
assign + seek_to_beginning and compares them exactly, then checks offsets_for_times and the
beginning and end offsets. Exits non-zero with a message on the first mismatch; prints a PASS
line at the end.
"""

import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

TIMEOUT_S = 30
PARTITIONS = 2
RECORDS_PER_CODEC = 150
CODECS = [None, "gzip"]

checks = 0


def check(condition, message):
    global checks
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def main():
    bootstrap = sys.argv[1]
    topic = f"kafka-python-{int(time.time() * 1000)}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    created = admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs={"retention.ms": "7200000"})])
    errors = [t for t in created["topics"] if t["error_code"] != 0]
    check(not errors, f"create_topics errors: {errors}")

    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    configs = described["topic"][topic]
    check(configs["retention.ms"]["value"] == "7200000", f"retention.ms = {configs['retention.ms']}")
    check(configs["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG", f"retention.ms source = {configs['retention.ms']}")
    check(configs["cleanup.policy"]["config_source"] == "DEFAULT_CONFIG", f"cleanup.policy = {configs['cleanup.policy']}")

    now_ms = int(time.time() * 1000)
    expected = {}  # (partition, offset) -> (key, value, headers, timestamp)
    for codec_index, codec in enumerate(CODECS):
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=codec, linger_ms=10, request_timeout_ms=TIMEOUT_S * 1000)
        sent = []
        for index in range(RECORDS_PER_CODEC):
            key = f"{codec}-key-{index % 7}".encode()
            value = (f"{codec} value {index} " * (1 + index % 3)).encode() + bytes(range(index % 256))
            headers = [("codec", str(codec).encode()), ("index", str(index).encode())]
            # Distinct, increasing timestamps in the recent past, so lookups have exact answers.
            timestamp = now_ms - 600_000 + codec_index * 10_000 + index * 10
            future = producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=timestamp)
            sent.append((future, key, value, headers, timestamp))
        producer.flush(timeout=TIMEOUT_S)
        for future, key, value, headers, timestamp in sent:
            metadata = future.get(timeout=TIMEOUT_S)
            position = (metadata.partition, metadata.offset)
            check(position not in expected, f"offset {position} acknowledged twice")
            expected[position] = (key, value, headers, timestamp)
        producer.close(timeout=TIMEOUT_S)
    check(len(expected) == RECORDS_PER_CODEC * len(CODECS), f"{len(expected)} acknowledged offsets")

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, request_timeout_ms=TIMEOUT_S * 1000 + 5000)
    partitions = [TopicPartition(topic, partition) for partition in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    got = {}
    deadline = time.monotonic() + TIMEOUT_S
    while len(got) < len(expected) and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=1000).items():
            for record in records:
                position = (tp.partition, record.offset)
                check(position not in got, f"offset {position} read twice")
                got[position] = (record.key, record.value, list(record.headers), record.timestamp)
    check(sorted(got) == sorted(expected), f"offsets read differ: missing {sorted(set(expected) - set(got))[:5]}, extra {sorted(set(got) - set(expected))[:5]}")
    for position in sorted(expected):
        check(got[position] == expected[position], f"record {position}: wrote {expected[position]!r}, read {got[position]!r}")

    beginning = consumer.beginning_offsets(partitions)
    end = consumer.end_offsets(partitions)
    for tp in partitions:
        count = sum(1 for partition, _ in expected if partition == tp.partition)
        check((beginning[tp], end[tp]) == (0, count), f"{tp}: beginning/end offsets ({beginning[tp]}, {end[tp]}), expected (0, {count})")

    for tp in partitions:
        records = sorted((offset, value[3]) for (partition, offset), value in expected.items() if partition == tp.partition)
        if not records:
            continue
        target = records[len(records) // 3][1] - 5  # between two records' timestamps
        wanted = next((offset, timestamp) for offset, timestamp in records if timestamp >= target)
        found = consumer.offsets_for_times({tp: target})[tp]
        check(found is not None and (found.offset, found.timestamp) == wanted, f"{tp}: offsets_for_times({target}) = {found}, expected {wanted}")
        past = consumer.offsets_for_times({tp: records[-1][1] + 1})[tp]
        check(past is None, f"{tp}: offsets_for_times past the last record = {past}, expected None")
    consumer.close()
    admin.close()

    print(f"PASS: {checks} checks, {len(expected)} records")


if __name__ == "__main__":
    main()
