#!/usr/bin/env bash
# The whole pipeline on an embedded default: no cluster, no external broker or registry.
# kev-demo replays the bundled real events (tests/data/k8s-events, one cluster id per dump)
# through the producer into an in-process Kafka (librdkafka's mock cluster) and development
# Schema Registry, runs the enricher on them, prints incidents and noisy aggregates as they
# are read back from the output topics, then a summary, and writes kev-report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh
exec cargo run -q -p kev-demo -- "$@"
