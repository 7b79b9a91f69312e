"""A librdkafka consumer group that keeps consuming while its coordinator is killed.

Usage: group_failover.py BOOTSTRAP TOPIC PARTITIONS RECORDS

Produces RECORDS values over the partitions, then two members of one group consume them
slowly (a few per poll, committing after each), long enough for the test to SIGKILL the
group's coordinator meanwhile. Passes when together they saw every record, no committed offset
went back, and the final commits cover every record. Also prints how long the first join and
a member's arrival took to give both members an assignment (the rebalance time).
"""

import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

PHASE_S = 90


def fail(reason):
    print(f"FAIL {reason}", flush=True)
    sys.exit(1)


def main():
    bootstrap, topic, partitions, records = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    values = [f"v-{i}" for i in range(records)]
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for index, value in enumerate(values):
        producer.produce(topic, value=value.encode(), partition=index % partitions)
    if producer.flush(60) != 0:
        fail("produce did not finish")

    assigned = {}

    def member(name):
        def on_assign(consumer, assignment):
            assigned[name] = (time.time(), len(assignment))

        consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "failover",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        })
        consumer.subscribe([topic], on_assign=on_assign)
        return consumer

    seen = set()
    highest = {}

    def poll_and_commit(consumer):
        got = 0
        for message in consumer.consume(num_messages=3, timeout=0.1):
            if not message.error():
                seen.add(message.value().decode())
                got += 1
        if got:
            try:
                consumer.commit(asynchronous=False)
            except KafkaException:
                return
            committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
            for tp in committed:
                if tp.offset >= 0:
                    if tp.offset < highest.get(tp.partition, -1):
                        fail(f"committed offset of {tp.partition} went back: {highest[tp.partition]} -> {tp.offset}")
                    highest[tp.partition] = tp.offset

    def poll_once(consumer):
        # Every poll may return a record once assigned: none may go unrecorded.
        message = consumer.poll(0.1)
        if message is not None and not message.error():
            seen.add(message.value().decode())

    start = time.time()
    first = member("first")
    while "first" not in assigned and time.time() < start + PHASE_S:
        poll_once(first)
    first_join_s = time.time() - start
    arrival = time.time()
    second = member("second")
    while time.time() < arrival + PHASE_S and not ("second" in assigned and assigned["first"][0] > arrival):
        poll_and_commit(first)
        poll_once(second)
    rebalance_s = time.time() - arrival
    print(f"READY first join {first_join_s * 1000:.0f} ms, rebalance on arrival {rebalance_s * 1000:.0f} ms", flush=True)

    deadline = time.time() + PHASE_S
    while time.time() < deadline and len(seen) < records:
        poll_and_commit(first)
        poll_and_commit(second)
        time.sleep(0.05)
    for consumer in (first, second):
        for _ in range(20):
            poll_once(consumer)
            try:
                consumer.commit(asynchronous=False)
                break
            except KafkaException:
                continue
    final = {tp.partition: tp.offset for tp in first.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)}
    first.close()
    second.close()
    if len(seen) != records:
        missing = [(index % partitions, index // partitions) for index, value in enumerate(values) if value not in seen]
        fail(f"the group saw {len(seen)} of {records} records; missing (partition, offset): {missing[:20]}; final commits {final}")
    if sum(max(offset, 0) for offset in final.values()) != records:
        fail(f"final commits {final} do not cover the {records} records")
    print(f"PASS saw {len(seen)} records, final commits {final}, first join {first_join_s * 1000:.0f} ms, rebalance {rebalance_s * 1000:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
