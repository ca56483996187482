#!/usr/bin/env bash
# The 3-node cluster fan-out of `make bench` (section 2: max of the cross scenario, 1,000
# subscribers, all three nodes on core 0, the tool on core 1) for one or more sockmesh
# binaries, interleaved round by round so that every binary sees the same machine state.
# Prints one line per ramp and the median per binary; JSON lines in $OUT/cluster.jsonl.
#
#   scripts/bench-cluster.sh LABEL=BIN [LABEL=BIN ...]     (ROUNDS=3 by default)
#   RATES="1000 2500" scripts/bench-cluster.sh ...          fixed rates instead of the ramp:
#       publications/s to the 1,000 subscribers (1000 = 1M delivered/s), 8 s each after 2 s of
#       warm-up; prints p50/p99/max latency and loss per run
#
# Used for "cluster fan-out before/after" in docs/benchmarks.md: build the earlier commit in a
# git worktree and pass both binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SERVER_CPU=${SERVER_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
OUT=${OUT:-$(mktemp -d /tmp/sockmesh-bench-cluster.XXXXXX)}
RESULTS=$OUT/cluster.jsonl
: >"$RESULTS"
SUBS=1000; FAN0=200; FACTOR=1.25; REFINE=2; STEP=2s; WARM=2s

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap cleanup EXIT INT TERM

wait_ready() {
  for _ in $(seq 1 150); do
    curl -fsS "$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 never became ready" >&2
  return 1
}

node() { # BIN NAME BASE [JOIN]
  local bin=$1 name=$2 base=$3 join=()
  [ -n "${4:-}" ] && join=(--join "$4")
  taskset -c "$SERVER_CPU" "$bin" serve --name "$name" --ws-addr "127.0.0.1:$base" \
    --admin-addr "127.0.0.1:$((base + 1))" --mesh-addr "127.0.0.1:$((base + 2))" \
    --gossip-addr "127.0.0.1:$((base + 3))" --drain-duration 200ms --log-level warn \
    --handshake-rate -1 --handshake-rate-per-ip -1 --max-connections-per-ip -1 --publish-rate -1 \
    "${join[@]}" >"$OUT/$name.log" 2>&1 &
  pids+=("$!")
}

for round in $(seq 1 "$ROUNDS"); do
  for arg in "$@"; do
    label=${arg%%=*} bin=${arg#*=}
    node "$bin" c1 19300
    node "$bin" c2 19310 127.0.0.1:19303
    node "$bin" c3 19320 127.0.0.1:19303
    for a in 19301 19311 19321; do wait_ready "http://127.0.0.1:$a"; done
    spids=$(IFS=,; echo "${pids[*]}")
    if [ -n "${RATES:-}" ]; then
      for rate in $RATES; do
        timeout 120 taskset -c "$TOOL_CPU" "$bin" bench -q --json --label "$label@$rate" --server-pid "$spids" \
          --url ws://127.0.0.1:19300/socketcluster/,ws://127.0.0.1:19310/socketcluster/,ws://127.0.0.1:19320/socketcluster/ \
          --scenario cross --subscribers "$SUBS" --rate "$rate" --duration 8s --warmup "$WARM" --drain 3s >>"$RESULTS" 2>/dev/null || echo "   ($label@$rate: bench exited with $?)"
        jq -r --arg l "$label@$rate" 'select(.label == $l) | "round '"$round"' \(.label): \(.delivered_per_s // 0 | round) delivered/s, p50 \(.lat_p50_ms * 10 | round / 10) p99 \(.lat_p99_ms * 10 | round / 10) max \(.lat_max_ms | round) ms, lost \(.lost // 0)"' "$RESULTS" | tail -1
      done
      cleanup
      continue
    fi
    timeout 240 taskset -c "$TOOL_CPU" "$bin" bench -q --json --label "$label" --server-pid "$spids" \
      --url ws://127.0.0.1:19300/socketcluster/,ws://127.0.0.1:19310/socketcluster/,ws://127.0.0.1:19320/socketcluster/ \
      --scenario max --of cross --subscribers "$SUBS" --rate "$FAN0" --step "$STEP" --step-factor "$FACTOR" \
      --refine "$REFINE" --warmup "$WARM" --drain 3s >>"$RESULTS" 2>/dev/null || echo "   ($label: bench exited with $?)"
    cleanup
    jq -r --arg l "$label" 'select(.label == $l and .summary == true) | "round '"$round"' \(.label): \(.max_delivered_per_s // 0 | round) delivered/s (\(.stop_reason // ""))"' "$RESULTS" | tail -1
  done
done
if [ -n "${RATES:-}" ]; then
  echo "results: $RESULTS"
  exit 0
fi
echo "== medians of $ROUNDS ramps (delivered/s)"
jq -rs 'map(select(.summary == true)) | group_by(.label)[] | (map(.max_delivered_per_s // 0) | sort) as $s
  | "\(.[0].label): median \($s[($s | length - 1) / 2 | floor] | round), range \($s[0] | round)-\($s[-1] | round)"' "$RESULTS"
echo "results: $RESULTS"
