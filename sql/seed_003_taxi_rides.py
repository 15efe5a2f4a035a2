"""Seed note 003's Avro producer, as the note writes it: confluent-kafka's
AvroProducer with a key schema and a value schema, registering both in the
schema registry and producing taxi rides. Run it before
seed_003_taxi_rides.sql:

    BOOTSTRAP=localhost:9092 REGISTRY=http://localhost:8081 \
        python3 sql/seed_003_taxi_rides.py
    psql -h localhost -p 6875 -U eddy -f sql/seed_003_taxi_rides.sql

The rides are generated (the note reads them from the NYC taxi CSV), 1,000
of them, the same every run."""

import json
import os
import warnings

from confluent_kafka import avro
from confluent_kafka.avro import AvroProducer

warnings.simplefilter("ignore", DeprecationWarning)

BOOTSTRAP = os.environ.get("BOOTSTRAP", "localhost:9092")
REGISTRY = os.environ.get("REGISTRY", "http://localhost:8081")
TOPIC = "datatalkclub.yellow_taxi_rides"

# The note's taxi_ride_key.avsc and taxi_ride_value.avsc.
key_schema = avro.loads(json.dumps({
    "namespace": "com.datatalksclub.taxi", "type": "record", "name": "TaxiRideKey",
    "fields": [{"name": "vendor_id", "type": "int"}]}))
value_schema = avro.loads(json.dumps({
    "namespace": "com.datatalksclub.taxi", "type": "record", "name": "TaxiRide",
    "fields": [
        {"name": "vendor_id", "type": "int"},
        {"name": "passenger_count", "type": "int"},
        {"name": "trip_distance", "type": "float"},
        {"name": "payment_type", "type": "int"},
        {"name": "total_amount", "type": "float"}]}))

producer_config = {
    "bootstrap.servers": BOOTSTRAP,
    "schema.registry.url": REGISTRY,
    "acks": "all",
}
producer = AvroProducer(producer_config, default_key_schema=key_schema,
                        default_value_schema=value_schema)
for i in range(1000):
    value = {
        "vendor_id": i % 2 + 1,
        "passenger_count": i % 4 + 1,
        "trip_distance": (i % 40) / 4.0,
        "payment_type": i % 3 + 1,
        "total_amount": 5 + (i % 100) / 4.0,
    }
    key = {"vendor_id": value["vendor_id"]}
    producer.produce(topic=TOPIC, key=key, value=value)
producer.flush()
print(f"produced 1000 rides to {TOPIC}")
