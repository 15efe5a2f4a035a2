"""The producer and consumer scripts from seed note 003 (kafka-python),
unchanged except that the bootstrap address comes from $BOOTSTRAP (eddy's
test server on a random port) and the consumer stops when idle.

Prints "consumed N messages" and, after a restart of the consumer in the same
group, "resumed with M messages" (0: the auto-committed offsets held)."""

import os
from json import dumps, loads

from kafka import KafkaConsumer, KafkaProducer

BOOTSTRAP = os.environ.get("BOOTSTRAP", "localhost:9092")

producer = KafkaProducer(bootstrap_servers=[BOOTSTRAP],
                         value_serializer=lambda x: dumps(x).encode('utf-8'))
for n in range(100):
    producer.send('demo_1', value={'number': n})
producer.flush()
producer.close()


def consume():
    consumer = KafkaConsumer(
        'demo_1',
        bootstrap_servers=[BOOTSTRAP],
        auto_offset_reset='earliest',
        enable_auto_commit=True,
        group_id='consumer.group.id.demo.1',
        value_deserializer=lambda x: loads(x.decode('utf-8')),
        consumer_timeout_ms=4000,
    )
    values = [message.value['number'] for message in consumer]
    consumer.close()  # commits the final position (auto commit)
    return values


first = consume()
assert sorted(first) == list(range(100)), first
print(f"consumed {len(first)} messages")
again = consume()
print(f"resumed with {len(again)} messages")
