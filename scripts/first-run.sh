#!/usr/bin/env bash
# The whole job on an embedded default: no cluster, no external broker or registry.
# Replays the bundled real events (tests/data/k8s-events) through kev-producer into an
# in-process Kafka (librdkafka's mock cluster) and development Schema Registry, then reads the
# raw topic back and prints what was published.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh
exec cargo run -q -p kev-producer -- --embedded replay "$@"
