#!/usr/bin/env bash
# Every test: unit, property and end-to-end (against a tansu broker process the tests start).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh --with-tansu
export TANSU_BIN="${TANSU_BIN:-${TANSU_CACHE_DIR:-$HOME/.cache/kev}/tansu-0.6.0/bin/tansu}"
export KUSTOMIZE_BIN="${KUSTOMIZE_BIN:-${TANSU_CACHE_DIR:-$HOME/.cache/kev}/kustomize-4.5.4/kustomize}"
# One test at a time: the end-to-end tests start brokers and producer processes and some
# measure Lease timings, which two cores shared by two such tests would blur.
exec cargo test --workspace -- --test-threads 1 "$@"
