"""The peer of kev's side-by-side benchmark: Quix Streams counting events in 1-minute tumbling
event-time windows per fingerprint-equivalent key (cluster, namespace, kind, reason, masked
message) on kev's raw topic.

Started by `cargo run --release -p kev-tests --example side_by_side`, configured by environment:

  KEV_PEER_BROKER    bootstrap servers
  KEV_PEER_TOPIC     the topic to read (kev's raw topic, or its JSON copy)
  KEV_PEER_FORMAT    avro (Confluent wire format, schema from KEV_PEER_REGISTRY) or json
  KEV_PEER_REGISTRY  Schema Registry URL (avro only)
  KEV_PEER_RECORDS   how many records to process before stopping
  KEV_PEER_GROUP     consumer group (fresh per run: reads from the beginning)
  KEV_PEER_OUTPUT    topic the closed windows go to
  KEV_PEER_STATE     state directory

Prints one JSON line on stdout: records, seconds (from app.run to the last record), the
first-record time, windows closed.

The raw topic is keyed by cluster, so a cluster's events are in one partition: the windows are
kept per message key (the cluster) as one count per fingerprint, with no repartition topic, the
way kev's enricher keeps them (a `group_by` on the fingerprint would add a shuffle through the
broker that neither needs). The masks are kev's template masks (engine/src/template.rs), in the
same order, memoised per message as kev memoises them.
"""

import json
import os
import re
import sys
import time
from functools import lru_cache

from quixstreams import Application
from quixstreams.models.topics.manager import TopicManager

# tansu 0.6.0's DescribeConfigs leaves out retention.ms (and retention.bytes), which Quix reads
# to derive its changelog topics' settings: default them (-1, keep forever) when missing.
_derive = TopicManager.derive_topic_config.__func__


def _derive_with_defaults(cls, topics):
    for t in topics:
        extra = t.broker_config.extra_config
        extra.setdefault("retention.ms", "-1")
        extra.setdefault("retention.bytes", "-1")
    return _derive(cls, topics)


TopicManager.derive_topic_config = classmethod(_derive_with_defaults)

MASKS = [
    (re.compile(p), to)
    for p, to in [
        (r'"[^"]*"', '"<q>"'),
        (r"'[^']*'", "'<q>'"),
        (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "<uid>"),
        (r"\bsha256:[0-9a-f]{16,}\b", "<digest>"),
        (r"\b[0-9a-f]{12,}\b", "<hex>"),
        (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", "<ip>"),
        (r"\b[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{0,4}){2,7}\b", "<ip>"),
        (r"-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[bcdfghjklmnpqrstvwxz2456789]{5}([^a-z0-9-]|$)", r"-<hash>\1"),
        (r"-[bcdfghjklmnpqrstvwxz2456789]{5}([^a-z0-9-]|$)", r"-<hash>\1"),
        (r"\b\d+(?:\.\d+)?(?:h|ms|m|s|us|µs|ns)(?:\d+(?:\.\d+)?(?:h|ms|m|s|us|µs|ns))*\b", "<duration>"),
        (r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?", "<time>"),
        (r"\d+(?:\.\d+)?", "<n>"),
    ]
]


@lru_cache(maxsize=100_000)
def template(message):
    for pattern, to in MASKS:
        message = pattern.sub(to, message)
    return message


def micros(t):
    """timestamp-micros as fastavro gives it (datetime) or as JSON has it (int)."""
    if t is None:
        return None
    if isinstance(t, int):
        return t
    return int(t.timestamp() * 1_000_000)


def event_time_ms(value, headers, timestamp, timestamp_type):
    """Every record's event time: the event's, or a heartbeat's newest event time, else the
    producer's clock, else the Kafka timestamp."""
    event = value.get("event")
    if event:
        return micros(event["normalized"]["event_time"]) // 1000
    hb = value.get("heartbeat") or {}
    high = micros(hb.get("event_time_high"))
    if high is not None:
        return high // 1000
    if hb.get("producer_time") is not None:
        t = hb["producer_time"]
        return t if isinstance(t, int) else int(t.timestamp() * 1000)
    return timestamp


def fingerprint(value):
    event = value["event"]
    n = event["normalized"]
    regarding = n.get("regarding") or {}
    return "\x00".join(
        [
            value["cluster"],
            regarding.get("namespace") or event.get("namespace") or "",
            regarding.get("kind") or "",
            n.get("reason") or "",
            template(n.get("note") or ""),
        ]
    )


def count_by_fingerprint(counts, value):
    fp = fingerprint(value)
    counts[fp] = counts.get(fp, 0) + 1
    return counts


def main():
    env = os.environ
    records = int(env["KEV_PEER_RECORDS"])
    app = Application(
        broker_address=env["KEV_PEER_BROKER"],
        consumer_group=env["KEV_PEER_GROUP"],
        auto_offset_reset="earliest",
        state_dir=env["KEV_PEER_STATE"],
        loglevel=os.environ.get("KEV_PEER_LOGLEVEL", "WARNING"),
    )
    if env.get("KEV_PEER_FORMAT", "avro") == "avro":
        from quixstreams.models.serializers.avro import AvroDeserializer
        from quixstreams.models.serializers.schema_registry import SchemaRegistryClientConfig

        deserializer = AvroDeserializer(
            schema_registry_client_config=SchemaRegistryClientConfig(url=env["KEV_PEER_REGISTRY"])
        )
    else:
        deserializer = "json"
    raw = app.topic(
        env["KEV_PEER_TOPIC"],
        key_deserializer="str",
        value_deserializer=deserializer,
        timestamp_extractor=event_time_ms,
    )
    out = app.topic(env["KEV_PEER_OUTPUT"], value_serializer="json")
    state = {"seen": 0, "first": None, "windows": 0}

    def seen(value):
        state["seen"] += 1
        if state["first"] is None:
            state["first"] = time.monotonic()
        if state["seen"] >= records:
            app.stop()
        return value

    def closed(window):
        state["windows"] += len(window["value"])
        return window

    sdf = app.dataframe(raw)
    sdf = sdf.update(seen)
    sdf = sdf.filter(lambda v: v.get("kind") == "EVENT" and v.get("event") is not None)
    sdf = (
        sdf.tumbling_window(duration_ms=60_000, grace_ms=5_000)
        .reduce(count_by_fingerprint, lambda v: count_by_fingerprint({}, v))
        .final()
    )
    sdf = sdf.apply(closed)
    sdf.to_topic(out)
    started = time.monotonic()
    app.run()
    ended = time.monotonic()
    print(
        json.dumps(
            {
                "records": state["seen"],
                "seconds": ended - started,
                "first_record_after": (state["first"] or ended) - started,
                "windows_closed": state["windows"],
                "quixstreams": __import__("quixstreams").__version__,
                "python": sys.version.split()[0],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
