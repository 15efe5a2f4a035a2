"""confluent-kafka's schema registry client and Avro serializers, unchanged,
against eddy's registry ($REGISTRY, an http:// URL) and Kafka listener
($BOOTSTRAP). One phase per run, named by the first argument:

  registry           the REST API as SchemaRegistryClient uses it:
                     register, ids, versions, lookup, compatibility
                     levels and checks, soft and permanent deletes
  produce TOPIC N    N taxi rides with AvroSerializer (keys as strings);
                     prints the expected per-vendor count and fare sum
  evolve TOPIC N     N rides with a second schema version (a field
                     added with a default, one removed)
  seed TOPIC N       N rides with the seed's AvroProducer (key and value
                     schemas), as seed note 003 writes them
  consume TOPIC N    read N records with AvroDeserializer (and the older
                     AvroConsumer), print each value as JSON
  check ID           schema ID is served (after a restart)
  json_sr_produce TOPIC N / json_sr_consume TOPIC N
                     JSON values with a JSON Schema (JSONSerializer,
                     JSONDeserializer), as ksqlDB's JSON_SR
"""

import json
import os
import sys

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import (MessageField, SerializationContext,
                                           StringSerializer)

BOOTSTRAP = os.environ["BOOTSTRAP"]
REGISTRY = os.environ["REGISTRY"]

RIDE_V1 = json.dumps({
    "type": "record", "name": "TaxiRide", "namespace": "datatalks",
    "fields": [
        {"name": "vendor_id", "type": "int"},
        {"name": "passenger_count", "type": "int"},
        {"name": "trip_distance", "type": "double"},
        {"name": "payment_type", "type": "string"},
        {"name": "total_amount", "type": {"type": "bytes", "logicalType": "decimal",
                                          "precision": 10, "scale": 2}},
        {"name": "pickup", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ]})

# Version 2: `tip` added with a default, `note` removed (both backward
# compatible: a v2 reader reads v1 data).
RIDE_V2 = json.dumps({
    "type": "record", "name": "TaxiRide", "namespace": "datatalks",
    "fields": [
        {"name": "vendor_id", "type": "int"},
        {"name": "passenger_count", "type": "int"},
        {"name": "trip_distance", "type": "double"},
        {"name": "payment_type", "type": "string"},
        {"name": "total_amount", "type": {"type": "bytes", "logicalType": "decimal",
                                          "precision": 10, "scale": 2}},
        {"name": "pickup", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tip", "type": "double", "default": 0.5},
    ]})


def ride(i, v2=False):
    import datetime
    import decimal
    r = {
        "vendor_id": i % 3 + 1,
        "passenger_count": i % 5,
        "trip_distance": (i % 17) / 4.0,
        "payment_type": ["card", "cash", "other"][i % 3],
        "total_amount": decimal.Decimal(i % 1000) / 100 + 3,
        "pickup": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
        + datetime.timedelta(minutes=i),
    }
    if v2:
        r["tip"] = 1.25
    else:
        r["note"] = None if i % 2 else f"ride {i}"
    return r


def expected(rides):
    out = {}
    for r in rides:
        c, s = out.get(r["vendor_id"], (0, 0))
        out[r["vendor_id"]] = (c + 1, s + r["total_amount"])
    for v in sorted(out):
        print(f"expect {v} {out[v][0]} {out[v][1]}")


def registry():
    sr = SchemaRegistryClient({"url": REGISTRY})
    s1 = Schema(RIDE_V1, "AVRO")
    id1 = sr.register_schema("rides-value", s1)
    assert sr.register_schema("rides-value", s1) == id1, "re-registering keeps the id"
    assert sr.get_subjects() == ["rides-value"], sr.get_subjects()
    got = sr.get_schema(id1)
    assert json.loads(got.schema_str) == json.loads(RIDE_V1), got.schema_str
    latest = sr.get_latest_version("rides-value")
    assert (latest.schema_id, latest.version) == (id1, 1), latest
    # The same schema under another subject keeps its id.
    assert sr.register_schema("other-value", s1) == id1
    looked = sr.lookup_schema("other-value", s1)
    assert looked.version == 1 and looked.schema_id == id1

    # Compatibility: BACKWARD by default.
    assert sr.get_compatibility() == "BACKWARD"
    s2 = Schema(RIDE_V2, "AVRO")
    assert sr.test_compatibility("rides-value", s2)
    bad = Schema(json.dumps({"type": "record", "name": "TaxiRide", "namespace": "datatalks",
                             "fields": [{"name": "vendor_id", "type": "string"}]}), "AVRO")
    assert not sr.test_compatibility("rides-value", bad)
    try:
        sr.register_schema("rides-value", bad)
        raise AssertionError("an incompatible schema was registered")
    except SchemaRegistryError as e:
        assert e.http_status_code == 409, e
    sr.set_compatibility("other-value", "NONE")
    assert sr.get_compatibility("other-value") == "NONE"
    id_bad = sr.register_schema("other-value", bad)
    assert id_bad != id1
    assert sr.get_versions("other-value") == [1, 2]

    # Unknown things are Confluent's errors.
    for call, code in [(lambda: sr.get_schema(9999), 40403),
                       (lambda: sr.get_latest_version("nope"), 40401)]:
        try:
            call()
            raise AssertionError("no error")
        except SchemaRegistryError as e:
            assert e.error_code == code, e

    # Deletes: soft, then permanent.
    assert sr.delete_subject("other-value") == [1, 2]
    assert "other-value" not in sr.get_subjects()
    assert sr.delete_subject("other-value", permanent=True) == [1, 2]
    # A schema id stays valid while another subject holds it.
    assert json.loads(sr.get_schema(id1).schema_str) == json.loads(RIDE_V1)
    print(f"registry ok {id1}")


def produce(topic, n, v2=False):
    sr = SchemaRegistryClient({"url": REGISTRY})
    ser = AvroSerializer(sr, RIDE_V2 if v2 else RIDE_V1)
    keys = StringSerializer("utf_8")
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "linger.ms": 5})
    rides = [ride(i, v2) for i in range(n)]
    for i, r in enumerate(rides):
        p.produce(topic, key=keys(f"ride-{i}"),
                  value=ser(r, SerializationContext(topic, MessageField.VALUE)))
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    # Not Avro at all: counted as a decode error, not stopping the stream.
    p.produce(topic, key=b"junk", value=b"not avro")
    assert p.flush(60) == 0
    expected(rides)


def seed(topic, n):
    # Seed note 003's producer, as written there.
    from confluent_kafka import avro
    from confluent_kafka.avro import AvroProducer
    key_schema = avro.loads(json.dumps({"type": "record", "name": "TaxiRideKey",
                                        "fields": [{"name": "vendor_id", "type": "int"}]}))
    value_schema = avro.loads(RIDE_V1)
    producer_config = {"bootstrap.servers": BOOTSTRAP, "schema.registry.url": REGISTRY,
                       "acks": "all"}
    producer = AvroProducer(producer_config, default_key_schema=key_schema,
                            default_value_schema=value_schema)
    rides = [ride(i) for i in range(n)]
    for r in rides:
        producer.produce(topic=topic, key={"vendor_id": r["vendor_id"]}, value=r)
    producer.flush()
    expected(rides)


def default(o):
    return str(o)


def consume(topic, n):
    sr = SchemaRegistryClient({"url": REGISTRY})
    de = AvroDeserializer(sr)
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"avro-{topic}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen = []
    idle = 0
    while len(seen) < n and idle < 150:
        m = c.poll(0.2)
        if m is None:
            idle += 1
            continue
        if m.error() is not None:
            raise Exception(m.error())
        v = de(m.value(), SerializationContext(topic, MessageField.VALUE))
        k = m.key()
        if k is not None and k[:1] == b"\x00":
            # An Avro key (Materialize's Avro sinks): its record's fields.
            k = json.dumps(de(k, SerializationContext(topic, MessageField.KEY)),
                           default=default, sort_keys=True).replace(" ", "")
        elif k is not None:
            k = k.decode("utf8")
        seen.append((k, v))
    c.close()
    for k, v in seen:
        print(f"key {k} value " + json.dumps(v, default=default, sort_keys=True))
    # The seed's AvroConsumer reads the same records.
    from confluent_kafka.avro import AvroConsumer
    ac = AvroConsumer({"bootstrap.servers": BOOTSTRAP, "schema.registry.url": REGISTRY,
                       "group.id": f"avro-old-{topic}", "auto.offset.reset": "earliest"})
    ac.subscribe([topic])
    old = 0
    idle = 0
    while old < len(seen) and idle < 150:
        m = ac.poll(0.2)
        if m is None:
            idle += 1
            continue
        if m.error() is not None:
            raise Exception(m.error())
        assert isinstance(m.value(), dict), m.value()
        old += 1
    ac.close()
    print(f"consumed {len(seen)} old {old}")


READING = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Reading", "type": "object",
    "properties": {
        "sensor": {"type": "string"},
        "value": {"type": "number"},
        "count": {"type": "integer"},
    },
    "required": ["sensor", "value", "count"],
})


def json_sr_produce(topic, n):
    from confluent_kafka.schema_registry.json_schema import JSONSerializer
    sr = SchemaRegistryClient({"url": REGISTRY})
    ser = JSONSerializer(READING, sr)
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})
    sums = {}
    for i in range(n):
        r = {"sensor": f"s{i % 4}", "value": (i % 10) / 2.0, "count": i}
        c, v = sums.get(r["sensor"], (0, 0.0))
        sums[r["sensor"]] = (c + 1, v + r["value"])
        p.produce(topic, value=ser(r, SerializationContext(topic, MessageField.VALUE)))
    assert p.flush(60) == 0
    for k in sorted(sums):
        print(f"expect {k} {sums[k][0]} {sums[k][1]}")


def json_sr_consume(topic, n):
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer
    sr = SchemaRegistryClient({"url": REGISTRY})
    # The schema eddy registered for the stream, from the registry.
    schema = sr.get_latest_version(f"{topic}-value").schema
    de = JSONDeserializer(schema, schema_registry_client=sr)
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"json-{topic}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen = []
    idle = 0
    while len(seen) < n and idle < 150:
        m = c.poll(0.2)
        if m is None:
            idle += 1
            continue
        if m.error() is not None:
            raise Exception(m.error())
        seen.append(de(m.value(), SerializationContext(topic, MessageField.VALUE)))
    c.close()
    for v in seen:
        print("value " + json.dumps(v, sort_keys=True))


def check(schema_id):
    sr = SchemaRegistryClient({"url": REGISTRY})
    assert json.loads(sr.get_schema(schema_id).schema_str) == json.loads(RIDE_V1)
    assert sr.get_versions("rides-value")
    print("check ok")


if __name__ == "__main__":
    phase = sys.argv[1]
    if phase == "registry":
        registry()
    elif phase == "produce":
        produce(sys.argv[2], int(sys.argv[3]))
    elif phase == "evolve":
        produce(sys.argv[2], int(sys.argv[3]), v2=True)
    elif phase == "seed":
        seed(sys.argv[2], int(sys.argv[3]))
    elif phase == "consume":
        consume(sys.argv[2], int(sys.argv[3]))
    elif phase == "json_sr_produce":
        json_sr_produce(sys.argv[2], int(sys.argv[3]))
    elif phase == "json_sr_consume":
        json_sr_consume(sys.argv[2], int(sys.argv[3]))
    elif phase == "check":
        check(int(sys.argv[2]))
    else:
        raise SystemExit(f"unknown phase {phase}")
