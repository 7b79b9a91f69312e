"""One queue-workload process on confluent-kafka-python (librdkafka), driven by weir-jepsen.

The harness's second client implementation: a bug that only librdkafka's producer or consumer
triggers (its batching, retries, idempotence, fetch sessions) must not go unseen because the
native client does not trigger it.

Protocol: one JSON object per line on stdin, one answer per line on stdout.

  {"op": "send", "key": K, "value": V}
      -> {"outcome": "ok", "offset": O} | {"outcome": "info", "error": "..."}
  {"op": "poll", "timeout_ms": T}
      -> {"outcome": "ok", "reads": [[K, OFFSET, VALUE], ...], "errors": ["..."]}

A send is idempotent and acks=all, sent to partition K (key K), and waits for its delivery
report: an error there is indeterminate ("info"), since librdkafka may have written the batch.
The consumer is assigned every partition from offset 0 and never commits. Every wait is
bounded, so a line always comes back.

Arguments: BOOTSTRAP TOPIC PARTITIONS CLIENT_ID
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

# A send's delivery report must come within this; librdkafka's own message timeout is shorter.
DELIVERY_WAIT_S = 25.0
MESSAGE_TIMEOUT_MS = 15000
# Records one poll may return.
POLL_RECORDS_MAX = 200


def main():
    bootstrap, topic, partitions, client_id = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "message.timeout.ms": MESSAGE_TIMEOUT_MS,
        "socket.timeout.ms": 5000,
    })
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "client.id": client_id + "-consumer",
        # Required by librdkafka even for assign(); nothing is ever committed.
        "group.id": "jepsen-" + client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "fetch.wait.max.ms": 100,
        "max.partition.fetch.bytes": 4096,
        "socket.timeout.ms": 5000,
    })
    consumer.assign([TopicPartition(topic, key, 0) for key in range(partitions)])
    answer({"ready": True})
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "send":
            answer(send(producer, topic, command["key"], command["value"]))
        elif command["op"] == "poll":
            answer(poll(consumer, command["timeout_ms"]))
        else:
            answer({"outcome": "info", "error": "unknown op " + command["op"]})
    producer.flush(5)
    consumer.close()


def answer(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def send(producer, topic, key, value):
    report = {}

    def delivered(error, message):
        if error is not None:
            report["outcome"] = {"outcome": "info", "error": str(error)}
        else:
            report["outcome"] = {"outcome": "ok", "offset": message.offset()}

    try:
        producer.produce(topic, value=str(value), key=str(key), partition=key, on_delivery=delivered)
    except (KafkaException, BufferError) as error:
        # Refused before it left the client: nothing was written.
        return {"outcome": "fail", "error": str(error)}
    deadline = time.monotonic() + DELIVERY_WAIT_S
    while "outcome" not in report and time.monotonic() < deadline:
        producer.poll(0.05)
    return report.get("outcome", {"outcome": "info", "error": "no delivery report"})


def poll(consumer, timeout_ms):
    reads, errors = [], []
    try:
        messages = consumer.consume(num_messages=POLL_RECORDS_MAX, timeout=timeout_ms / 1000.0)
    except KafkaException as error:
        return {"outcome": "info", "error": str(error)}
    for message in messages:
        if message.error() is not None:
            errors.append(str(message.error()))
            continue
        try:
            value = int(message.value())
        except (TypeError, ValueError):
            errors.append("foreign record at %d" % message.offset())
            continue
        reads.append([message.partition(), message.offset(), value])
    return {"outcome": "ok", "reads": reads, "errors": errors}


if __name__ == "__main__":
    main()
