"""A librdkafka group member that reads COUNT records, commits and leaves.

Usage: commit_and_leave.py BOOTSTRAP GROUP TOPIC COUNT

Prints `PASS read N` and exits 0, or exits 1 if it cannot read COUNT records in time.
"""

import sys
import time

from confluent_kafka import Consumer


def main():
    bootstrap, group, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": "commit-and-leave",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    read = 0
    deadline = time.time() + 60
    while read < count and time.time() < deadline:
        for message in consumer.consume(num_messages=count - read, timeout=0.2):
            if not message.error():
                read += 1
    consumer.commit(asynchronous=False)
    consumer.close()
    if read < count:
        print(f"FAIL read {read} of {count}", flush=True)
        sys.exit(1)
    print(f"PASS read {read}", flush=True)


if __name__ == "__main__":
    main()
