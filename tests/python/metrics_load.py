"""Load for tests/metrics.rs: 100 JSON plays and one record that is not
JSON into `plays` (2 partitions), then a consumer group `readers` that
reads the records of partition 0 and commits the offset of its 20th, so
the group has a lag to report. BOOTSTRAP names the server."""

import json
import os

from confluent_kafka import Consumer, Producer, TopicPartition

bootstrap = os.environ["BOOTSTRAP"]
p = Producer({"bootstrap.servers": bootstrap})
for i in range(100):
    p.produce("plays", key=str(i), value=json.dumps({"user_id": i, "game": f"g{i % 7}"}),
              partition=i % 2)
p.produce("plays", value=b"not json", partition=1)
p.flush(30)
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "readers",
              "enable.auto.commit": False})
c.assign([TopicPartition("plays", 0, 0)])
seen = 0
while seen < 20:
    m = c.poll(5)
    if m is None or m.error():
        continue
    seen += 1
c.commit(offsets=[TopicPartition("plays", 0, 20)], asynchronous=False)
c.close()
print("loaded")
