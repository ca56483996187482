#!/usr/bin/env bash
# One node at fixed rates, for one or more sockmesh binaries interleaved round by round (so that
# every binary sees the same machine state): the single-node rows of `make bench` (fan-out to
# 1,000 subscribers; 5,000 connections each on its own channel with acknowledged publications)
# at rates below the knee, where server CPU and latency compare and the ramps' run-to-run
# spread does not drown the difference. The node runs on core 0, the tool on core 1.
#
#   scripts/bench-node.sh LABEL=BIN [LABEL=BIN ...]
#   ROUNDS=3 FANOUT_RATES="1000 2000" CHANNEL_RATES="40000" (the defaults)
#
# Prints one line per run; JSON lines in $OUT/node.jsonl. Used for "before/after" tables in
# docs/benchmarks.md: build the earlier commit in a git worktree and pass both binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
FANOUT_RATES=${FANOUT_RATES:-1000 2000}
CHANNEL_RATES=${CHANNEL_RATES:-40000}
OUT=${OUT:-$(mktemp -d /tmp/sockmesh-bench-node.XXXXXX)}
RESULTS=$OUT/node.jsonl
: >"$RESULTS"
URL=ws://127.0.0.1:19400/socketcluster/
TOOL=${TOOL:-bin/sockmesh} # one load generator for every binary under test

pid=
cleanup() {
  [ -n "$pid" ] && { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  pid=
}
trap cleanup EXIT INT TERM

start() { # BIN
  taskset -c 0 "$1" serve --name b1 --ws-addr 127.0.0.1:19400 --admin-addr 127.0.0.1:19401 \
    --mesh-addr 127.0.0.1:19402 --gossip-addr 127.0.0.1:19403 --drain-duration 200ms --log-level warn \
    --handshake-rate -1 --handshake-rate-per-ip -1 --max-connections-per-ip -1 --publish-rate -1 >"$OUT/node.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 150); do
    curl -fsS http://127.0.0.1:19401/readyz >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node never became ready" >&2
  return 1
}

run() { # LABEL ARGS...
  local label=$1
  shift
  timeout 120 taskset -c 1 "$TOOL" bench -q --json --label "$label" --server-pid "$pid" --url "$URL" \
    --duration 8s --warmup 2s --drain 3s "$@" >>"$RESULTS" 2>/dev/null || echo "   ($label: bench exited with $?)"
  jq -r --arg l "$label" 'select(.label == $l) | "round '"$round"' \(.label): \(.delivered_per_s // 0 | round) delivered/s, p50 \(.lat_p50_ms * 10 | round / 10) p99 \(.lat_p99_ms * 10 | round / 10) ms, ack p99 \(.ack_p99_ms // 0 | . * 10 | round / 10) ms, lost \(.lost // 0), server CPU \(.server_cpu_pct // 0 | round) %"' "$RESULTS" | tail -1
}

for round in $(seq 1 "$ROUNDS"); do
  for arg in "$@"; do
    label=${arg%%=*} bin=${arg#*=}
    for rate in $FANOUT_RATES; do
      start "$bin"
      run "$label fanout@$rate" --scenario fanout --subscribers 1000 --rate "$rate"
      cleanup
    done
    for rate in $CHANNEL_RATES; do
      start "$bin"
      run "$label channels@$rate" --scenario channels --connections 5000 --rate "$rate"
      cleanup
    done
  done
done
echo "results: $RESULTS"
