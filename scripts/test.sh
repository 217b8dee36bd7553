#!/usr/bin/env bash
# Every test: unit, property and end-to-end (against a tansu broker process the tests start).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh --with-tansu
export KEV_TANSU="${KEV_TANSU:-${KEV_CACHE:-$HOME/.cache/kev}/tansu-0.6.0/bin/tansu}"
exec cargo test --workspace -- --test-threads 2 "$@"
