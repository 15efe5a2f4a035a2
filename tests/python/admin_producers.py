"""kafka-python's KafkaAdminClient.describe_producers, as
`kafka-transactions.sh describe-producers` asks it: an idempotent
confluent-kafka producer writes 10 records, then the partition's producer
state is read (one producer, its epoch, its last sequence, a timestamp,
no open transaction); a plain producer leaves no state. BOOTSTRAP names
the server."""

import os

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient

bootstrap = os.environ["BOOTSTRAP"]
admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics([NewTopic("idem", 1), NewTopic("plain", 1)]).values():
    f.result()

p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
for i in range(10):
    p.produce("idem", value=f"v{i}".encode(), partition=0)
    p.flush(30)
plain = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False})
plain.produce("plain", value=b"x", partition=0)
plain.flush(30)

k = KafkaAdminClient(bootstrap_servers=bootstrap)
states = k.describe_producers([TopicPartition("idem", 0), TopicPartition("plain", 0)])
idem = states[TopicPartition("idem", 0)].active_producers
print("idem producers", len(idem))
s = idem[0]
print("producer", s.producer_id >= 0, s.producer_epoch, s.last_sequence, s.last_timestamp > 0,
      s.current_transaction_start_offset)
print("plain producers", len(states[TopicPartition("plain", 0)].active_producers))
k.close()
