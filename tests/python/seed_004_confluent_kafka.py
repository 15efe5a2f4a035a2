"""Seed note 004's produce/consume loop with confluent-kafka (librdkafka),
which quixstreams wraps: a keyed JSON producer and a polling consumer in a
group, unchanged except for the bootstrap address ($BOOTSTRAP) and canned
weather data instead of the open-meteo HTTP call (no network in tests)."""

import json
import os

from confluent_kafka import Consumer, Producer

BOOTSTRAP = os.environ.get("BOOTSTRAP", "localhost:9092")

data = {"latitude": 51.5, "longitude": -0.11,
        "current": {"temperature_2m": 12.5}}

producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})
for i in range(20):
    data["current"]["temperature_2m"] = 10 + i
    producer.produce(topic="weather_data_demo", key="London",
                     value=json.dumps(data))
producer.flush(30)

consumer = Consumer({"bootstrap.servers": BOOTSTRAP,
                     "group.id": "weather_reader",
                     "auto.offset.reset": "earliest"})
consumer.subscribe(["weather_data_demo"])
seen = 0
idle = 0
while seen < 20 and idle < 100:
    msg = consumer.poll(0.2)
    if msg is None:
        idle += 1
        continue
    if msg.error() is not None:
        raise Exception(msg.error())
    topic = msg.topic()
    key = msg.key().decode("utf8")
    value = json.loads(msg.value())
    offset = msg.offset()
    print((topic, key, value, offset))
    seen += 1
consumer.close()
print(f"consumed {seen} messages")
