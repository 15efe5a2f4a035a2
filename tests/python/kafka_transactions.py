"""confluent-kafka's transactional producer and read_committed consumer,
as its documentation uses them. BOOTSTRAP names the server.

1. Committed, aborted and committed transactions into a 3-partition
   topic: a read_committed consumer sees only the committed records, a
   read_uncommitted one sees every record.
2. An open transaction holds read_committed readers at its first record
   (the last stable offset) until it commits.
3. A second producer with the same transactional.id fences the first.
4. Exactly-once consume-transform-produce: a consumer's offsets committed
   inside the producer's transaction (send_offsets_to_transaction); an
   aborted round leaves neither output nor offsets, so every input record
   comes out exactly once.
5. Last, a transaction left open by a producer that dies (its timeout 3 s),
   followed by a plain record in the same partition: the engine's readers
   see neither until the coordinator aborts the transaction (the test in
   tests/kafka_wire.rs checks this over SQL).
"""

import os
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = os.environ["BOOTSTRAP"]
admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics(
    [NewTopic("tx_out", 3), NewTopic("tx_in", 1), NewTopic("tx_eos", 1)]
).values():
    try:
        f.result()
    except KafkaException as e:  # tx_out may be a stream's topic already
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def producer(tid, **extra):
    conf = {"bootstrap.servers": bootstrap, "transactional.id": tid}
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(30)
    return p


def consume_all(topic, isolation, partitions):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4()}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    c.assign([TopicPartition(topic, i, 0) for i in range(partitions)])
    out, eof = [], set()
    deadline = time.time() + 30
    while len(eof) < partitions and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
                continue
            raise KafkaException(m.error())
        eof.discard(m.partition())
        out.append(m.value().decode())
    c.close()
    return sorted(out, key=lambda v: (v[0], int(v[1:]) if v[1:].isdigit() else -1, v))


# 1. commit, abort, commit.
p = producer("tp")
p.begin_transaction()
for i in range(10):
    p.produce("tx_out", value=f"c{i}".encode(), partition=i % 3)
p.commit_transaction(30)
p.begin_transaction()
for i in range(5):
    p.produce("tx_out", value=f"a{i}".encode(), partition=i % 3)
p.flush(30)
p.abort_transaction(30)
p.begin_transaction()
for i in range(10, 13):
    p.produce("tx_out", value=f"c{i}".encode(), partition=i % 3)
p.commit_transaction(30)
committed = consume_all("tx_out", "read_committed", 3)
print("committed", len(committed), " ".join(committed))
print("uncommitted", len(consume_all("tx_out", "read_uncommitted", 3)))

# 2. An open transaction holds read_committed readers back.
p.begin_transaction()
p.produce("tx_out", value=b"c13", partition=0)
p.produce("tx_out", value=b"c14", partition=1)
p.flush(30)
print("while open", len(consume_all("tx_out", "read_committed", 3)),
      len(consume_all("tx_out", "read_uncommitted", 3)))
p.commit_transaction(30)
print("after commit", len(consume_all("tx_out", "read_committed", 3)))

# 3. Fencing.
p2 = producer("tp")
try:
    p.begin_transaction()
    p.produce("tx_out", value=b"zombie", partition=2)
    p.commit_transaction(30)
    print("fenced False")
except KafkaException as e:
    print("fenced", e.args[0].fatal())
p2.begin_transaction()
p2.produce("tx_out", value=b"c15", partition=2)
p2.commit_transaction(30)
print("new instance", len(consume_all("tx_out", "read_committed", 3)))

# 4. Exactly-once consume-transform-produce.
plain = Producer({"bootstrap.servers": bootstrap})
for i in range(20):
    plain.produce("tx_in", value=f"n{i}".encode(), partition=0)
plain.flush(30)
consumer = Consumer(
    {
        "bootstrap.servers": bootstrap,
        "group.id": "eos",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
)
consumer.assign([TopicPartition("tx_in", 0, 0)])
eos = producer("eos-1")
done, aborted_once = 0, False
deadline = time.time() + 60
while done < 20 and time.time() < deadline:
    msgs = consumer.consume(num_messages=5, timeout=1.0)
    if not msgs:
        continue
    eos.begin_transaction()
    for m in msgs:
        if m.error():
            raise KafkaException(m.error())
        eos.produce("tx_eos", value=m.value().decode().upper().encode(), partition=0)
    eos.send_offsets_to_transaction(
        consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
    )
    if not aborted_once:
        # A failed round: output and offsets both discarded; rewind.
        eos.abort_transaction(30)
        aborted_once = True
        consumer.seek(TopicPartition("tx_in", 0, 0))
        continue
    eos.commit_transaction(30)
    done += len(msgs)
consumer.close()
out = consume_all("tx_eos", "read_committed", 1)
check = Consumer({"bootstrap.servers": bootstrap, "group.id": "eos"})
offset = check.committed([TopicPartition("tx_in", 0)], 30)[0].offset
check.close()
print("eos", len(out), len(set(out)), offset, out == [f"N{i}" for i in range(20)] or out)

# 5. A producer that dies inside a transaction, then a plain record after it.
dying = producer("dying", **{"transaction.timeout.ms": 3000})
dying.begin_transaction()
for i in range(3):
    dying.produce("tx_out", value=f"h{i}".encode(), partition=0)
dying.flush(30)
plain.produce("tx_out", value=b"late", partition=0)
plain.flush(30)
print("left open")
sys.stdout.flush()
os._exit(0)
