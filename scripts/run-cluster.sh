#!/usr/bin/env bash
# Starts a local 3-node sockmesh cluster on loopback (demo application on) and stops all
# three cleanly on Ctrl-C. Ports: node N (1..3) uses 80N0 for clients, 80N1 admin, 80N2 mesh,
# 80N3 gossip — n1: 8000-8003, n2: 8010-8013, n3: 8020-8023.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SOCKMESH_BIN:-./bin/sockmesh}
KEY=${SOCKMESH_AUTH_KEY:-local-dev-key-change-me}
# The admin listeners (metrics, cluster view, status page, drain) want a token: one is made
# up for this run unless SOCKMESH_ADMIN_TOKEN is set.
TOKEN=${SOCKMESH_ADMIN_TOKEN:-$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')}
ADMINS=http://127.0.0.1:8001,http://127.0.0.1:8011,http://127.0.0.1:8021
LOGDIR=${LOGDIR:-$(mktemp -d -t sockmesh-run-XXXX)}
pids=()

stop() {
  trap - INT TERM
  echo
  echo "Stopping (SIGTERM drains each node)..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "All nodes stopped. Logs: $LOGDIR"
  exit 0
}
trap stop INT TERM

for i in 1 2 3; do
  base=$((8000 + (i - 1) * 10))
  join=()
  [ "$i" -gt 1 ] && join=(--join 127.0.0.1:8003)
  "$BIN" serve --name "n$i" --ws-addr "127.0.0.1:$base" --admin-addr "127.0.0.1:$((base + 1))" \
    --mesh-addr "127.0.0.1:$((base + 2))" --gossip-addr "127.0.0.1:$((base + 3))" \
    --auth-key "$KEY" --admin-token "$TOKEN" --admin-allow-origins "$ADMINS" \
    --demo --drain-duration 1s "${join[@]}" >"$LOGDIR/n$i.log" 2>&1 &
  pids+=($!)
done

# Wait until every node says it is ready (joined, links up).
for i in 1 2 3; do
  admin="http://127.0.0.1:$((8000 + (i - 1) * 10 + 1))"
  for _ in $(seq 1 100); do
    curl -fsS "$admin/readyz" >/dev/null 2>&1 && break
    if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
      echo "node n$i exited; its log:"; cat "$LOGDIR/n$i.log"; stop
    fi
    sleep 0.1
  done
done

echo "sockmesh: local 3-node cluster (demo application on — NOT for production)"
for i in 1 2 3; do
  base=$((8000 + (i - 1) * 10))
  printf '  n%d  clients ws://127.0.0.1:%d/socketcluster/   admin http://127.0.0.1:%d\n' "$i" "$base" "$((base + 1))"
done
echo "  status page: http://127.0.0.1:8001/ui?token=$TOKEN"
echo "  see the cluster: SOCKMESH_ADMIN_TOKEN=$TOKEN $BIN cluster --admin http://127.0.0.1:8001"
echo "  logs in $LOGDIR; Ctrl-C stops all three."
wait
