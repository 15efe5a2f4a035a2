"""kafka-python's transactional KafkaProducer (its own implementation of the
protocol, not librdkafka's): commit, abort, commit; a read_committed
KafkaConsumer sees the committed records only, a read_uncommitted one sees
all. BOOTSTRAP names the server."""

import os

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

b = os.environ["BOOTSTRAP"]
KafkaAdminClient(bootstrap_servers=b).create_topics([NewTopic("kp", 2, 1)])
p = KafkaProducer(bootstrap_servers=b, transactional_id="kp-1")
p.init_transactions()
p.begin_transaction()
for i in range(5):
    p.send("kp", value=f"c{i}".encode(), partition=i % 2)
p.commit_transaction()
p.begin_transaction()
for i in range(3):
    p.send("kp", value=f"a{i}".encode(), partition=i % 2)
p.flush()
p.abort_transaction()
p.begin_transaction()
p.send("kp", value=b"c5", partition=0)
p.commit_transaction()
p.close()
for iso in ("read_committed", "read_uncommitted"):
    c = KafkaConsumer(
        bootstrap_servers=b,
        isolation_level=iso,
        consumer_timeout_ms=3000,
        enable_auto_commit=False,
    )
    c.assign([TopicPartition("kp", 0), TopicPartition("kp", 1)])
    c.seek_to_beginning()
    print(iso, " ".join(sorted(m.value.decode() for m in c)))
    c.close()
