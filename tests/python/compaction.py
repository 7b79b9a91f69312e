"""Log compaction seen by a real client.

Usage: compaction.py BOOTSTRAP LIBRARY TOPIC

LIBRARY is `confluent` (librdkafka) or `kafka-python`. TOPIC must exist with one partition,
cleanup.policy=compact, small segments and a low min.cleanable.dirty.ratio, on a broker whose
cleaner runs often.

1. Produces ROUNDS rounds of one record per key (acks=all, one flush per round, so each round
   lands in its own batches and segments roll between rounds), remembering each record's
   offset.
2. Produces a record without a key: the broker must refuse it (INVALID_RECORD).
3. Reads the partition from offset 0 to its end again and again until compaction left at most
   two records per key (the latest of the sealed segments, and the active segment).
4. Checks what it read: every record sits at the offset it was produced at with the value
   produced there, the reader got past every gap to the end, and each key's last value is the
   latest produced.

Prints `PASS ...` and exits 0, or prints `FAIL ...` and exits 1.
"""

import sys
import time

KEYS = 40
ROUNDS = 30
DEADLINE_S = 90


def fail(message):
    print(f"FAIL {message}", flush=True)
    sys.exit(1)


def produce_confluent(bootstrap, topic):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    produced = {}
    errors = []

    def report(error, message):
        if error is not None:
            errors.append(str(error))
        else:
            produced[message.offset()] = (message.key().decode(), message.value().decode())

    for round_ in range(ROUNDS):
        for key in range(KEYS):
            producer.produce(topic, key=f"k{key}", value=f"k{key}-r{round_}", partition=0, on_delivery=report)
        producer.flush(30)
    if errors:
        fail(f"keyed produce failed: {errors[:3]}")
    refused = []
    keyless = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0})
    keyless.produce(topic, value="no key", partition=0, on_delivery=lambda error, _m: refused.append(error))
    keyless.flush(30)
    if not refused or refused[0] is None or "INVALID_RECORD" not in refused[0].name():
        fail(f"a keyless record was not refused: {refused}")
    return produced


def produce_kafka_python(bootstrap, topic):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    produced = {}
    for round_ in range(ROUNDS):
        futures = [
            (f"k{key}", f"k{key}-r{round_}",
             producer.send(topic, key=f"k{key}".encode(), value=f"k{key}-r{round_}".encode(), partition=0))
            for key in range(KEYS)
        ]
        producer.flush(30)
        for key, value, future in futures:
            produced[future.get(30).offset] = (key, value)
    try:
        producer.send(topic, value=b"no key", partition=0).get(30)
        fail("a keyless record was not refused")
    except Exception as error:  # kafka.errors.InvalidRecordError
        if "InvalidRecord" not in type(error).__name__ and "87" not in str(error):
            fail(f"a keyless record failed with {type(error).__name__}: {error}")
    producer.close()
    return produced


def read_confluent(bootstrap, topic, end):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "compaction-reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    records = []
    deadline = time.time() + 30
    position = 0
    while position < end and time.time() < deadline:
        for message in consumer.consume(num_messages=500, timeout=0.5):
            if message.error():
                continue
            records.append((message.offset(), message.key().decode(), message.value().decode()))
        position = consumer.position([TopicPartition(topic, 0)])[0].offset
    consumer.close()
    return records, position


def read_kafka_python(bootstrap, topic, end):
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek(partition, 0)
    records = []
    deadline = time.time() + 30
    position = 0
    while position < end and time.time() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            for message in batch:
                records.append((message.offset, message.key.decode(), message.value.decode()))
        position = consumer.position(partition)
    consumer.close()
    return records, position


def main():
    bootstrap, library, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    produce, read = {
        "confluent": (produce_confluent, read_confluent),
        "kafka-python": (produce_kafka_python, read_kafka_python),
    }[library]
    produced = produce(bootstrap, topic)
    if len(produced) != KEYS * ROUNDS:
        fail(f"produced {len(produced)} records, wanted {KEYS * ROUNDS}")
    end = max(produced) + 1
    latest = {}
    for offset in sorted(produced):
        key, value = produced[offset]
        latest[key] = value

    deadline = time.time() + DEADLINE_S
    passes = 0
    while True:
        records, position = read(bootstrap, topic, end)
        passes += 1
        if position < end:
            fail(f"the reader stopped at {position} of {end} (stuck at a compacted gap?)")
        for offset, key, value in records:
            if produced.get(offset) != (key, value):
                fail(f"offset {offset} holds {(key, value)}, produced {produced.get(offset)}")
        seen = {}
        for offset, key, value in sorted(records):
            seen[key] = value
        if seen != latest:
            missing = [key for key in latest if seen.get(key) != latest[key]]
            fail(f"latest values lost for {missing[:5]}")
        if len(records) <= 2 * KEYS:
            break
        if time.time() > deadline:
            fail(f"compaction did not happen: still {len(records)} records of {len(produced)}")
        time.sleep(0.5)
    print(f"PASS {library}: {len(produced)} produced, {len(records)} left after compaction, "
          f"offsets and latest values intact, {passes} reads", flush=True)


if __name__ == "__main__":
    main()
