"""confluent-kafka-python (librdkafka) producing with acks=all while weir nodes fail.

Usage: confluent_replicated_producer.py BOOTSTRAP TOPIC PARTITIONS DURATION_S OUTFILE [idempotent]

Sends values `py-N` round-robin over the partitions for DURATION_S seconds with acks=all, one
request in flight per connection and no retries (no idempotence: a retry could write twice),
or, with `idempotent`, as librdkafka's idempotent producer: five requests in flight and
retries, which the broker must deduplicate.
Every acknowledged record is written to OUTFILE as `partition offset value`, one per line;
failed deliveries are only counted. Prints a summary line and exits 0.
"""

import sys
import time

from confluent_kafka import Producer

def main():
    bootstrap, topic, partitions, duration_s, outfile = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    idempotent = len(sys.argv) > 6 and sys.argv[6] == "idempotent"
    config = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "message.send.max.retries": 0,
        "max.in.flight.requests.per.connection": 1,
        "message.timeout.ms": 10000,
        "request.timeout.ms": 5000,
        "linger.ms": 0,
    }
    if idempotent:
        config.update({
            "enable.idempotence": True,
            "message.send.max.retries": 1000,
            "max.in.flight.requests.per.connection": 5,
            "message.timeout.ms": 20000,
            "linger.ms": 2,
        })
    producer = Producer(config)
    acked = []
    failed = [0]

    def delivered(error, message):
        if error is None:
            # librdkafka's idempotent producer reports a batch it inferred was written (a later
            # sequence was accepted after this one's request timed out) with no offset: -1.
            offset = message.offset()
            acked.append((message.partition(), -1 if offset is None else offset, message.value().decode()))
        else:
            failed[0] += 1

    deadline = time.time() + duration_s
    sent = 0
    while time.time() < deadline:
        try:
            producer.produce(topic, value=f"py-{sent}".encode(), partition=sent % partitions, on_delivery=delivered)
            sent += 1
        except BufferError:
            pass
        producer.poll(0.02)
    producer.flush(30)
    with open(outfile, "w") as out:
        for partition, offset, value in acked:
            out.write(f"{partition} {offset} {value}\n")
    print(f"PASS sent {sent} acked {len(acked)} failed {failed[0]}")


if __name__ == "__main__":
    main()
