#!/usr/bin/env bash
# Where the enricher's CPU goes, per raw record: the `kev-enricher run` binary (release, shipped
# defaults) on a raw topic that `side_by_side` loaded and holds, under `perf record` with DWARF
# call graphs; then the share of the main call paths.
#
#   benches/profile-enricher.sh [events]     # default 300000; needs perf (linux-perf)
#
# Prints the records, the process's CPU seconds from /proc and per record, and the report;
# /tmp/kev-profile holds perf.data and the logs for `perf report -i`.
set -euo pipefail
events=${1:-300000}
root=$(cd "$(dirname "$0")/.." && pwd)
out=/tmp/kev-profile
mkdir -p "$out"
cd "$root"
cargo build --release -p kev-enricher --bin kev-enricher -p kev-tests --example side_by_side >&2

KEV_BENCH_EVENTS=$events KEV_BENCH_PEER_PYTHON=none KEV_BENCH_STREAMS_PEER=none KEV_BENCH_SCALE_EVENTS=0 \
  KEV_BENCH_MEMORY_GROUPS=0 KEV_BENCH_LATENCY_SECONDS=0 KEV_BENCH_PRODUCER_EVENTS=0 KEV_BENCH_HOLD=load \
  KEV_BENCH_OUT="$out/side-by-side" target/release/examples/side_by_side >"$out/hold.out" 2>"$out/hold.err" &
holder=$!
trap 'kill $holder 2>/dev/null; pkill -P $holder 2>/dev/null || true' EXIT
until grep -q "holding after load" "$out/hold.err"; do
  kill -0 $holder 2>/dev/null || { echo "side_by_side ended before holding: $out/hold.err" >&2; exit 1; }
  sleep 1
done
line=$(grep "holding after load" "$out/hold.err")
broker=$(sed -E 's/.*broker ([^ ]+) registry.*/\1/' <<<"$line")
registry=$(sed -E 's/.*registry ([^ ]+).*/\1/' <<<"$line")

NO_COLOR=1 target/release/kev-enricher \
  --set kafka.bootstrap_servers="$broker" --set registry.url="$registry" \
  --set http.listen=127.0.0.1:0 --set topics.retention_ms=-1 --set group_id=kev-profile \
  run >"$out/enricher.log" 2>&1 </dev/null &
pid=$!
perf record -F 499 --call-graph dwarf,16384 -o "$out/perf.data" -p $pid 2>"$out/perf.err" &
perf_pid=$!
# Until the enricher has taken in every record (its counter on /metrics).
until addr=$(grep -oE 'addr=[0-9.:]+' "$out/enricher.log" | head -1 | cut -d= -f2) && [ -n "$addr" ]; do sleep 0.2; done
while true; do
  sleep 1
  n=$(curl -s "http://$addr/metrics" | awk '/^kev_enricher_records_in_total/ {s += $2} END {print s + 0}')
  [ "$n" -ge "$events" ] && break
done
kill -INT $perf_pid; wait $perf_pid || true
cpu_s=$(awk '{printf "%.2f", ($14+$15)/100}' /proc/$pid/stat)
kill -TERM $pid; wait $pid || true
records=$(sed -nE 's/^stopped: ([0-9]+) raw records in.*/\1/p' "$out/enricher.log")
echo "records: $records; process CPU: $cpu_s s; per raw record: $(awk -v c="$cpu_s" -v n="$records" 'BEGIN{printf "%.1f", 1e6*c/n}') us"
echo
echo "Share of the process's samples (inclusive) by call path:"
perf report -i "$out/perf.data" --children --sort sym --stdio -g none --percent-limit 3 2>/dev/null |
  grep -E '^ +[0-9]' | grep -E 'kev_|rd_kafka_(broker_thread_main|msgset_create_ProduceRequest|broker_consumer_serve|lz4)|LZ4|exc_page_fault|Arc<T,A>::drop_slow|poll' |
  awk '{printf "  %6s  %s\n", $1, substr($0, index($0, $4))}'
