"""confluent-kafka's AdminClient trimming a topic and describing the
cluster, as its users call them: delete_records (then the watermarks a
consumer sees), an offset past the end refused, describe_cluster.
BOOTSTRAP names the server."""

import os

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = os.environ["BOOTSTRAP"]
admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics([NewTopic("trim", 1)]).values():
    f.result()
p = Producer({"bootstrap.servers": bootstrap})
for i in range(30):
    p.produce("trim", value=f"v{i}".encode())
p.flush(30)

res = admin.delete_records([TopicPartition("trim", 0, 12)])
for tp, f in res.items():
    r = f.result()
    print("deleted", tp.topic, tp.partition, r.low_watermark)

c = Consumer({"bootstrap.servers": bootstrap, "group.id": "trim-check", "auto.offset.reset": "earliest"})
print("watermarks", c.get_watermark_offsets(TopicPartition("trim", 0), timeout=10))
c.subscribe(["trim"])
first = None
while first is None:
    m = c.poll(10)
    if m is not None and m.error() is None:
        first = (m.offset(), m.value().decode())
print("first", first)
c.close()

try:
    for f in admin.delete_records([TopicPartition("trim", 0, 1000)]).values():
        f.result()
    print("past the end accepted")
except Exception as e:
    print("past the end", e.args[0].name())

cluster = admin.describe_cluster().result()
print("cluster", cluster.cluster_id is not None, len(cluster.nodes), cluster.controller.id == cluster.nodes[0].id)
