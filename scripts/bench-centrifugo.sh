#!/usr/bin/env bash
# sockmesh and Centrifugo side by side: one server at a time on core 0, the same load generator
# (`sockmesh bench`, speaking each server's own protocol) on core 1, fan-out to 1,000
# subscribers at fixed publication rates, the two servers interleaved rate by rate and round by
# round so that both see the same machine state. Centrifugo runs with its defaults, anonymous
# connect, subscribe and publish allowed, no history or presence (what sockmesh does too).
#
#   scripts/bench-centrifugo.sh            ROUNDS=3 RATES="50 200 1000" SUBSCRIBERS=1000
#   SOCKMESH=bin/sockmesh CENTRIFUGO=path  (default: $(go env GOPATH)/bin/centrifugo, installed
#                                           from the Go module proxy at $CENTRIFUGO_VERSION)
#
# Prints one line per run; JSON lines in $OUT/side-by-side.jsonl (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
RATES=${RATES:-50 200 1000}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
SOCKMESH=${SOCKMESH:-bin/sockmesh}
CENTRIFUGO_VERSION=${CENTRIFUGO_VERSION:-v6.9.1}
CENTRIFUGO=${CENTRIFUGO:-$(go env GOPATH)/bin/centrifugo}
OUT=${OUT:-$(mktemp -d /tmp/sockmesh-vs-centrifugo.XXXXXX)}
RESULTS=$OUT/side-by-side.jsonl
: >"$RESULTS"
TOOL=${TOOL:-bin/sockmesh}

[ -x "$SOCKMESH" ] && [ -x "$TOOL" ] || make build
if [ ! -x "$CENTRIFUGO" ]; then
  echo "installing Centrifugo $CENTRIFUGO_VERSION from the Go module proxy"
  go install "github.com/centrifugal/centrifugo/v6@$CENTRIFUGO_VERSION"
fi

cat >"$OUT/centrifugo.json" <<'JSON'
{
  "http_server": {"address": "127.0.0.1", "port": 19500},
  "log": {"level": "error"},
  "health": {"enabled": true},
  "client": {"allow_anonymous_connect_without_token": true, "allowed_origins": ["*"]},
  "channel": {"without_namespace": {"allow_subscribe_for_anonymous": true, "allow_publish_for_anonymous": true,
    "allow_subscribe_for_client": true, "allow_publish_for_client": true}}
}
JSON

pid=
cleanup() {
  [ -n "$pid" ] && { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  pid=
}
trap cleanup EXIT INT TERM

wait_ready() { # URL
  for _ in $(seq 1 150); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server never became ready ($1)" >&2
  return 1
}

start_sockmesh() {
  taskset -c 0 "$SOCKMESH" serve --name b1 --ws-addr 127.0.0.1:19400 --admin-addr 127.0.0.1:19401 \
    --mesh-addr 127.0.0.1:19402 --gossip-addr 127.0.0.1:19403 --drain-duration 200ms --log-level warn \
    --handshake-rate -1 --handshake-rate-per-ip -1 --max-connections-per-ip -1 --publish-rate -1 >"$OUT/sockmesh.log" 2>&1 &
  pid=$!
  wait_ready http://127.0.0.1:19401/readyz
  url=ws://127.0.0.1:19400/socketcluster/ protocol=socketcluster
}

start_centrifugo() {
  (cd "$OUT" && exec taskset -c 0 "$CENTRIFUGO" -c "$OUT/centrifugo.json" >"$OUT/centrifugo.log" 2>&1) &
  pid=$!
  wait_ready http://127.0.0.1:19500/health
  url=ws://127.0.0.1:19500/connection/websocket protocol=centrifugo
}

run() { # LABEL ARGS...
  local label=$1
  shift
  timeout 120 taskset -c 1 "$TOOL" bench -q --json --label "$label" --protocol "$protocol" --server-pid "$pid" \
    --url "$url" --duration 8s --warmup 2s --drain 3s "$@" >>"$RESULTS" 2>/dev/null || echo "   ($label: bench exited with $?)"
  jq -r --arg l "$label" 'select(.label == $l) | "round '"$round"' \(.label): \(.delivered_per_s // 0 | round) delivered/s, p50 \(.lat_p50_ms * 10 | round / 10) p90 \(.lat_p90_ms * 10 | round / 10) p99 \(.lat_p99_ms * 10 | round / 10) ms, lost \(.lost // 0), server CPU \(.server_cpu_pct // 0 | round) %, RSS \(.server_rss_mib // 0 | round) MiB"' "$RESULTS" | tail -1
}

for round in $(seq 1 "$ROUNDS"); do
  order="sockmesh centrifugo"
  [ $((round % 2)) -eq 0 ] && order="centrifugo sockmesh"
  for rate in $RATES; do
    for server in $order; do
      "start_$server"
      run "$server fanout@$rate" --scenario fanout --subscribers "$SUBSCRIBERS" --rate "$rate"
      cleanup
    done
  done
done
echo "results: $RESULTS"
