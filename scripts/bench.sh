#!/usr/bin/env bash
# `make bench`: builds sockmesh, runs the standard `sockmesh bench` set against
#   1. one sockmesh node pinned to core 0 (taskset -c 0), the tool on core 1;
#   2. a local 3-node sockmesh cluster, all three nodes on core 0 (cross scenario);
#   3. socketcluster-server 20 from npm (scripts/scserver), pinned to core 0;
# and writes docs/benchmarks.md (machine, versions, results). Raw JSON lines stay in
# $OUT (default bin/bench-results/<date>/, ignored by git). Takes about 13 minutes.
#
# Environment: QUICK=1 shortens every scenario (smoke test of the script itself);
# SERVER_CPU / TOOL_CPU choose the cores (default 0 and 1); DOC=path overrides the output.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${SOCKMESH_BIN:-$ROOT/bin/sockmesh}
SERVER_CPU=${SERVER_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
STAMP=$(date -u +%Y-%m-%dT%H:%M:%SZ)
OUT=${OUT:-$ROOT/bin/bench-results/$(date -u +%Y%m%d-%H%M%S)}
DOC=${DOC:-$ROOT/docs/benchmarks.md}
RESULTS=$OUT/results.jsonl
mkdir -p "$OUT"
: >"$RESULTS"

# Scenario sizes (QUICK=1: a smoke run of the whole pipeline in about a minute).
# Ramps go up by x1.25 per step, from FAN0 (fan-out) and CHAN0 (channels) publications/s;
# after the first step that fails, REFINE more steps bisect between it and the last that
# passed (so a ramp reads within x1.057 of the limit, not up to a whole x1.25 step under it).
# The idle hold is long enough for the node's post-storm memory release (--release-memory-after)
# to run: it waits for a quiet sweeper tick (0.5 s).
# The ramps that the targets are about, and the connect runs, run RUNS times each and the
# page gives their median and range, as the targets themselves are stated: one ramp ends at
# the first step whose p99 passes 100 ms, so a single stall of the host can end it early.
SUBS=1000; CHANS=5000; IDLE=10000; CONNS=15000; DUR=5s; WARM=2s; STEP=2s; HOLD=6s
FAN0=200; CHAN0=10000; FACTOR=1.25; REFINE=2; RUNS=${RUNS:-3}
if [ "${QUICK:-}" = 1 ]; then
  SUBS=100; CHANS=200; IDLE=500; CONNS=500; DUR=1s; WARM=500ms; STEP=500ms; HOLD=1s; RUNS=${RUNS_QUICK:-1}
fi

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap cleanup EXIT INT TERM

echo "== building"
go build -o "$BIN" ./cmd/sockmesh
(cd scripts/scserver && npm ci --no-audit --no-fund --loglevel=error)

wait_port() { # host:port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on $1" >&2
  return 1
}

wait_ready() { # admin URL
  for _ in $(seq 1 150); do
    curl -fsS "$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 never became ready" >&2
  return 1
}

# start_node NAME BASEPORT [JOIN [EXTRA FLAGS...]]: a sockmesh node on core(s) SERVER_CPU;
# sets NODE_PID.
start_node() {
  local name=$1 base=$2 join=()
  [ -n "${3:-}" ] && join=(--join "$3")
  shift $(( $# < 3 ? $# : 3 ))
  taskset -c "$SERVER_CPU" "$BIN" serve --name "$name" --ws-addr "127.0.0.1:$base" \
    --admin-addr "127.0.0.1:$((base + 1))" --mesh-addr "127.0.0.1:$((base + 2))" \
    --gossip-addr "127.0.0.1:$((base + 3))" --drain-duration 200ms --log-level warn \
    --handshake-rate -1 --handshake-rate-per-ip -1 --max-connections-per-ip -1 --publish-rate -1 \
    "${join[@]}" "$@" >"$OUT/$name.log" 2>&1 &
  NODE_PID=$!
  pids+=("$NODE_PID")
}

# bench LABEL PIDS URLS ARGS...: one `sockmesh bench` run on core TOOL_CPU.
bench() {
  local label=$1 spids=$2 urls=$3
  shift 3
  echo "-- $label: $*"
  timeout 240 taskset -c "$TOOL_CPU" "$BIN" bench -q --json --label "$label" --server-pid "$spids" \
    --url "$urls" "$@" >>"$RESULTS" 2>"$OUT/last-table.txt" || echo "   (bench exited with $?)"
  cat "$OUT/last-table.txt"
}

# The standard set against one server.
standard_set() { # LABEL PIDS URL
  # idle first: its memory baseline is the freshly started server.
  bench "$1" "$2" "$3" --scenario idle --connections "$IDLE" --channels 1 --duration "$HOLD"
  for _ in $(seq 1 "$RUNS"); do
    bench "$1" "$2" "$3" --scenario connect --connections "$CONNS" --concurrency 100
  done
  bench "$1" "$2" "$3" --scenario fanout --subscribers "$SUBS" --rate 100 --duration "$DUR" --warmup "$WARM"
  maxfan "$@"
  bench "$1" "$2" "$3" --scenario channels --connections "$CHANS" --rate 5000 --duration "$DUR" --warmup "$WARM"
  maxchan "$@"
}
# maxfan/maxchan LABEL PIDS URL [N]: N ramps (default RUNS), one after another.
maxfan() {
  for _ in $(seq 1 "${4:-$RUNS}"); do
    bench "$1" "$2" "$3" --scenario max --of fanout --subscribers "$SUBS" --rate "$FAN0" --step "$STEP" --step-factor "$FACTOR" --refine "$REFINE" --warmup "$WARM" --drain 3s
  done
}
maxchan() {
  for _ in $(seq 1 "${4:-$RUNS}"); do
    bench "$1" "$2" "$3" --scenario max --of channels --connections "$CHANS" --rate "$CHAN0" --step "$STEP" --step-factor "$FACTOR" --refine "$REFINE" --warmup "$WARM" --drain 3s
  done
}

echo "== 1. sockmesh, one node on core $SERVER_CPU"
start_node b1 19000
wait_ready http://127.0.0.1:19001
standard_set "sockmesh-1node" "$NODE_PID" ws://127.0.0.1:19000/socketcluster/
cleanup

echo "== 1b. sockmesh, one node on core $SERVER_CPU, --write-delay 0 (no coalescing window)"
start_node b0 19050 "" --write-delay 0
wait_ready http://127.0.0.1:19051
maxfan "sockmesh-1node-delay0" "$NODE_PID" ws://127.0.0.1:19050/socketcluster/ 1
cleanup

echo "== 2. sockmesh, 3-node cluster, all on core $SERVER_CPU"
start_node c1 19100; p1=$NODE_PID
start_node c2 19110 127.0.0.1:19103; p2=$NODE_PID
start_node c3 19120 127.0.0.1:19103; p3=$NODE_PID
for a in 19101 19111 19121; do wait_ready "http://127.0.0.1:$a"; done
CURLS=ws://127.0.0.1:19100/socketcluster/,ws://127.0.0.1:19110/socketcluster/,ws://127.0.0.1:19120/socketcluster/
bench "sockmesh-3nodes" "$p1,$p2,$p3" "$CURLS" --scenario cross --subscribers "$SUBS" --rate 100 --duration "$DUR" --warmup "$WARM"
for _ in $(seq 1 "$RUNS"); do
  bench "sockmesh-3nodes" "$p1,$p2,$p3" "$CURLS" --scenario max --of cross --subscribers "$SUBS" --rate "$FAN0" --step "$STEP" --step-factor "$FACTOR" --refine "$REFINE" --warmup "$WARM" --drain 3s
done
cleanup

# Both cores: the node may use cores 0 and 1, and so may the tool (there is no third core),
# so the tool's load competes with the node here: these rows show that the node uses both
# cores, not what two dedicated cores would give.
if [ "$(nproc)" -ge 2 ]; then
  echo "== 2b. sockmesh, one node on both cores (shared with the tool)"
  ONE_CPU=$SERVER_CPU ONE_TOOL=$TOOL_CPU
  SERVER_CPU=0,1 TOOL_CPU=0,1
  start_node d1 19150
  wait_ready http://127.0.0.1:19151
  maxfan "sockmesh-1node-2cores" "$NODE_PID" ws://127.0.0.1:19150/socketcluster/ 1
  maxchan "sockmesh-1node-2cores" "$NODE_PID" ws://127.0.0.1:19150/socketcluster/ 1
  cleanup
  SERVER_CPU=$ONE_CPU TOOL_CPU=$ONE_TOOL
fi

echo "== 3. socketcluster-server 20 on core $SERVER_CPU"
taskset -c "$SERVER_CPU" node scripts/scserver/server.js 19200 >"$OUT/scserver.log" 2>&1 &
SC_PID=$!
pids+=("$SC_PID")
wait_port 127.0.0.1:19200
FAN0=25 CHAN0=2000 standard_set "socketcluster-server" "$SC_PID" ws://127.0.0.1:19200/socketcluster/
cleanup

echo "== writing $DOC"
SC_VERSION=$(node -p 'require("./scripts/scserver/node_modules/socketcluster-server/package.json").version')
{
  cat <<EOF
# Benchmarks

Measured by \`make bench\` (\`scripts/bench.sh\`) on $STAMP. Every server runs pinned to
core $SERVER_CPU (\`taskset -c $SERVER_CPU\`; the 3-node cluster has all three nodes on that
one core) and the load tool, \`sockmesh bench\`, on core $TOOL_CPU, in the same run, except
the \`-2cores\` rows: there the node and the tool share both cores. sockmesh runs with its
defaults (\`--write-delay 20ms\`) except in the \`-delay0\` row.

> **Noisy numbers.** This machine is a 2-core virtual machine on a shared host, and its speed
> moves from run to run (the reference server's own results vary by up to 2x between runs).
> Treat the numbers as indicative; compare rows of the same run, not runs of different days.

## Machine and versions

| | |
|---|---|
| CPU | $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1) |
| cores | $(nproc) |
| RAM | $(free -h | awk '/^Mem:/ {print $2}') |
| kernel | $(uname -sr) |
| Go | $(go version | awk '{print $3}') |
| Node.js | $(node --version) |
| sockmesh | $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo " (+ local changes)") |
| socketcluster-server | $SC_VERSION (default options) |

## Results

Rates are per second. *delivered/s* counts messages received by subscribers; *loss* is
expected − delivered deliveries (sequence numbers in every payload). Latency is from the
publisher's write to the subscriber's read (one clock, same machine). *max(…)* rows give the
highest delivered rate of a ramp (×${FACTOR} per ${STEP} step, then ${REFINE} steps halving the gap
between the last rate that passed and the first that failed) whose p99 stayed ≤ 100 ms with no
loss; where a ramp ran several times (the targets' rows: ${RUNS} ramps one after another; so
did the connect runs), the row is the median run, with the others in the notes, as the
targets are stated. The reason
the ramp stopped is in the notes. Memory per connection is (server RSS
after − before) / connections, each connection subscribed to one channel, read after a
${HOLD} hold.

| system | scenario | conns | pub/s | delivered/s | loss | p50 ms | p99 ms | max ms | ack p99 ms | conn/s | KiB/conn | server CPU | server RSS | tool CPU | notes |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
EOF
  jq -rs -f scripts/bench-table.jq "$RESULTS"
  cat <<EOF

$(jq -rs -f scripts/bench-ratio.jq "$RESULTS")

Every step of the ramps (and every field) is in the JSON lines of the run
(\`$(realpath --relative-to="$ROOT" "$RESULTS")\`, not committed).

## How to reproduce

\`\`\`sh
make bench                                  # this whole page (about 13 minutes)
sockmesh bench --scenario max --of fanout --subscribers 1000 --rate 50 \\
  --url ws://127.0.0.1:8000/socketcluster/ --server-pid \$(pgrep -n sockmesh)
\`\`\`

\`sockmesh bench -h\` lists the scenarios and flags; \`--json\` prints JSON lines.

EOF
  cat "$ROOT/docs/benchmarks-log.md"
} >"$DOC.tmp"
mv "$DOC.tmp" "$DOC"
echo "wrote $DOC (raw results in $RESULTS)"
