"""A librdkafka group member that reads for a while, committing as it goes.

Usage: group_member.py BOOTSTRAP GROUP TOPIC SECONDS

Prints `PASS read N partitions P1,P2,...` (the values read on the following lines as
`value V`) and exits 0.
"""

import sys
import time

from confluent_kafka import Consumer, KafkaException


def main():
    bootstrap, group, topic, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": "group-member",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "heartbeat.interval.ms": 500,
        "session.timeout.ms": 6000,
    })
    consumer.subscribe([topic])
    values = []
    owned = set()
    deadline = time.time() + seconds
    while time.time() < deadline:
        got = False
        for message in consumer.consume(num_messages=100, timeout=0.2):
            if not message.error():
                values.append(message.value().decode())
                got = True
        owned.update(tp.partition for tp in consumer.assignment())
        if got:
            try:
                consumer.commit(asynchronous=False)
            except KafkaException:
                pass
    consumer.close()
    print(f"PASS read {len(values)} partitions {','.join(str(p) for p in sorted(owned))}", flush=True)
    for value in values:
        print(f"value {value}", flush=True)


if __name__ == "__main__":
    main()
