"""Reads kev's topics with Confluent's own Python client, as a downstream service would.

Run by tests/tests/registry_real.rs after a replay of the real dumps: every record of each
topic named is decoded by confluent-kafka's AvroDeserializer through the registry (the writer
schema fetched by the id in the record), read_committed. Prints one JSON document:

    {"topics": {topic: {"records": n, "failed": n, "errors": [...], "keys_not_text": n,
                        "samples": [{"partition", "offset", "key", "value"}...]}},
     "partitions": {key: partition}}

where `value` is the decoded record with timestamps as the integers Avro stores (micros or
millis, by the writer schema's logical type), so that kev's own reader can be compared field by
field (None for a tombstone); `samples` holds the first `--samples` records of each partition;
`partitions` is the
partition Confluent's murmur2 partitioner (librdkafka's `murmur2_random`, the Java client's)
picks for each `--key`, asked by producing it to `--probe-topic`.
"""

import argparse
import datetime
import json
import sys

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
UNITS = {"timestamp-micros": 1, "timestamp-millis": 1000}


def plain(value, schema, named):
    """`value` as JSON: logical timestamps back to integers, walking the writer schema."""
    if isinstance(schema, str):
        schema = named.get(schema, schema)
    if isinstance(schema, list):
        if value is None:
            return None
        branches = [b for b in schema if b != "null"]
        if len(branches) == 1:
            return plain(value, branches[0], named)
        return plain(value, pick(value, branches, named), named)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if schema.get("logicalType") in UNITS and isinstance(value, datetime.datetime):
            micros = (value - EPOCH) // datetime.timedelta(microseconds=1)
            return micros // UNITS[schema["logicalType"]]
        if kind == "record":
            named[schema["name"]] = schema
            if "namespace" in schema:
                named[schema["namespace"] + "." + schema["name"]] = schema
            return {f["name"]: plain(value[f["name"]], f["type"], named) for f in schema["fields"]}
        if kind == "array":
            return [plain(v, schema["items"], named) for v in value]
        if kind == "map":
            return {k: plain(v, schema["values"], named) for k, v in value.items()}
        if kind == "enum":
            named[schema["name"]] = schema
            return value
        if isinstance(kind, (dict, list)):
            return plain(value, kind, named)
    if isinstance(value, bytes):
        return list(value)
    return value


def pick(value, branches, named):
    """The union branch a decoded value came from (kev's unions have at most one of a kind)."""
    for b in branches:
        s = named.get(b, b) if isinstance(b, str) else b
        kind = s.get("type") if isinstance(s, dict) else s
        if isinstance(value, dict) and kind in ("record", "map"):
            return b
        if isinstance(value, list) and kind == "array":
            return b
        if isinstance(value, datetime.datetime) and isinstance(s, dict) and s.get("logicalType") in UNITS:
            return b
        if isinstance(value, str) and kind in ("string", "enum"):
            return b
        if isinstance(value, bool) and kind == "boolean":
            return b
        if isinstance(value, int) and not isinstance(value, bool) and kind in ("int", "long"):
            return b
        if isinstance(value, float) and kind in ("float", "double"):
            return b
    raise ValueError(f"no branch of {branches} for {value!r}")


def read_topic(args, registry, topic):
    deserializer = AvroDeserializer(registry)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "kev-confluent-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    ended, out = set(), {"records": 0, "failed": 0, "errors": [], "keys_not_text": 0, "samples": []}
    per_partition = {}
    schemas = {}
    while len(ended) < len(parts):
        m = consumer.poll(10)
        if m is None:
            raise SystemExit(f"{topic}: nothing for 10 s, partitions ended {sorted(ended)}")
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                ended.add(m.partition())
                continue
            raise SystemExit(f"{topic}: {m.error()}")
        out["records"] += 1
        try:
            key = m.key().decode("utf-8") if m.key() is not None else None
        except UnicodeDecodeError:
            out["keys_not_text"] += 1
            key = None
        if m.value() is None:  # a tombstone (an upsert topic's delete)
            n = per_partition.get(m.partition(), 0)
            per_partition[m.partition()] = n + 1
            if n < args.samples:
                out["samples"].append({"partition": m.partition(), "offset": m.offset(), "key": key, "value": None})
            continue
        try:
            value = deserializer(m.value(), SerializationContext(topic, MessageField.VALUE))
        except Exception as e:  # every failure is counted and the first ones reported
            out["failed"] += 1
            if len(out["errors"]) < 5:
                out["errors"].append(f"partition {m.partition()} offset {m.offset()}: {e}")
            continue
        n = per_partition.get(m.partition(), 0)
        per_partition[m.partition()] = n + 1
        if n < args.samples:
            schema_id = int.from_bytes(m.value()[1:5], "big")
            if schema_id not in schemas:
                schemas[schema_id] = json.loads(registry.get_schema(schema_id).schema_str)
            out["samples"].append(
                {
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "key": key,
                    "value": plain(value, schemas[schema_id], {}),
                }
            )
    consumer.close()
    return out


def partitions_for(args):
    """The partition the murmur2 partitioner picks for each key: asked of a real producer."""
    producer = Producer({"bootstrap.servers": args.bootstrap, "partitioner": "murmur2_random"})
    chosen = {}

    def delivered(err, msg):
        if err is not None:
            raise SystemExit(f"probe record not delivered: {err}")
        chosen[msg.key().decode("utf-8")] = msg.partition()

    for key in args.key:
        producer.produce(args.probe_topic, key=key.encode("utf-8"), value=b"", on_delivery=delivered)
    producer.flush(30)
    return chosen


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--topic", action="append", default=[])
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--key", action="append", default=[])
    p.add_argument("--probe-topic")
    args = p.parse_args()
    registry = SchemaRegistryClient({"url": args.registry})
    doc = {"topics": {t: read_topic(args, registry, t) for t in args.topic}}
    if args.key:
        doc["partitions"] = partitions_for(args)
    json.dump(doc, sys.stdout)


if __name__ == "__main__":
    main()
