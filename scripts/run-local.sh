#!/usr/bin/env bash
# Starts one local sockmesh node with the demo application on loopback and stops it on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SOCKMESH_BIN:-./bin/sockmesh}
KEY=${SOCKMESH_AUTH_KEY:-local-dev-key-change-me}
echo "Starting sockmesh (demo application on; not for production). Ctrl-C stops it."
exec "$BIN" serve --name n1 --ws-addr 127.0.0.1:8000 --admin-addr 127.0.0.1:8001 \
  --mesh-addr 127.0.0.1:8002 --gossip-addr 127.0.0.1:8003 --auth-key "$KEY" --demo
