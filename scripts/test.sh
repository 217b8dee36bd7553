#!/usr/bin/env bash
# Every test: unit, property and end-to-end (against Apache Kafka broker processes the tests
# start; scripts/prerequisites.sh fetches the pinned jars once).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh --for-tests
export KUSTOMIZE_BIN="${KUSTOMIZE_BIN:-${KEV_CACHE_DIR:-$HOME/.cache/kev}/kustomize-4.5.4/kustomize}"
# One test at a time: the end-to-end tests start brokers and producer processes and some
# measure Lease timings, which two cores shared by two such tests would blur.
exec cargo test --workspace -- --test-threads 1 "$@"
