# Real-client load generator: produce N 1 KiB records to topic "rk" (4 partitions) with
# confluent-kafka, then consume them. Usage: python confluent_kafka_bench.py BOOTSTRAP ACKS N
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition, OFFSET_BEGINNING
b, acks, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = Producer({"bootstrap.servers": b, "acks": acks, "linger.ms": 5, "batch.size": 1000000, "queue.buffering.max.messages": 1000000, "queue.buffering.max.kbytes": 2000000})
v = b"x" * 1024; done = [0]
def cb(e, m):
    if e is None: done[0] += 1
t = time.time()
for i in range(n):
    while True:
        try: p.produce("rk", v, on_delivery=cb); break
        except BufferError: p.poll(0.01)
p.flush(60); dt = time.time() - t
print(f"confluent-kafka produce acks={acks}: {done[0]} acked in {dt:.2f}s: {done[0]/dt:.0f} rec/s {done[0]*1024/dt/1e6:.1f} MB/s")
c = Consumer({"bootstrap.servers": b, "group.id": "g", "fetch.max.bytes": 52428800})
c.assign([TopicPartition("rk", p, OFFSET_BEGINNING) for p in range(4)])
got = 0; t = time.time()
while got < done[0] and time.time() - t < 60:
    ms = c.consume(10000, 1.0); got += sum(1 for m in ms if not m.error())
dt = time.time() - t
print(f"confluent-kafka consume: {got} in {dt:.2f}s: {got/dt:.0f} rec/s {got*1024/dt/1e6:.1f} MB/s")
