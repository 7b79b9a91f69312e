"""confluent-kafka-python (librdkafka) asking weir for leader elections (ElectLeaders).

Usage: confluent_elect_leaders.py BOOTSTRAP TOPIC PARTITION TYPE

TYPE is `preferred` or `unclean`. Prints `ok` if the election was done, or the Kafka error
name the broker answered for the partition (for example ELECTION_NOT_NEEDED), and exits 0;
any other failure exits 1.
"""

import sys

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka._model import ElectionType


def main():
    bootstrap, topic, partition, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    election = ElectionType.PREFERRED if kind == "preferred" else ElectionType.UNCLEAN
    future = admin.elect_leaders(election, [TopicPartition(topic, partition)])
    try:
        results = future.result()
    except Exception as error:  # the request itself failed
        error_name = getattr(getattr(error, "args", [None])[0], "name", lambda: str(error))
        print(error_name() if callable(error_name) else error_name)
        return 0
    for _, error in results.items():
        if error is not None and not hasattr(error, "name"):
            error = error.args[0]
        print("ok" if error is None else error.name())
    return 0


if __name__ == "__main__":
    sys.exit(main())
