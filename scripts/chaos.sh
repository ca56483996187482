#!/usr/bin/env bash
# make chaos: the full chaos suite (integration/chaos, SOCKMESH_CHAOS=full). Prints the results
# table, writes docs/chaos.md and docs/chaos.json, keeps the whole test log in bin/chaos.log.
# Usage: scripts/chaos.sh [go test -run regexp]
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
if [ "$(id -u)" = 0 ]; then
	command -v iptables >/dev/null || apt-get install -y iptables >/dev/null
else
	echo "chaos: not root — the network-namespace partition scenario will be skipped" >&2
fi
mkdir -p bin
$GO build -o bin/sockmesh ./cmd/sockmesh
export SOCKMESH_BIN=$PWD/bin/sockmesh
if [ ! -d integration/jsclient/node_modules/socketcluster-client ]; then
	(cd integration/jsclient && npm ci --no-audit --no-fund --loglevel=error)
fi
report=$(mktemp -d)
trap 'rm -rf "$report"' EXIT
log=bin/chaos.log
set +e
SOCKMESH_CHAOS=full CHAOS_REPORT_DIR=$report $GO test -count=1 -timeout 900s -v -run "${1:-.}" ./integration/chaos/... >"$log" 2>&1
rc=$?
set -e
grep -E '^\s*(--- (PASS|FAIL|SKIP)|ok |FAIL)|chaos_test.go.*(accounting failed|measured)|_test.go:[0-9]+: .*(measured|bound|known bug)' "$log" | grep -v '^\s*harness' || true
sed -n '/^chaos results/,/^\(PASS\|FAIL\|ok\)/p' "$log" | grep -E '^(chaos results|\|)' || true
if [ -f "$report/chaos.md" ]; then
	cp "$report/chaos.md" docs/chaos.md
	cp "$report/chaos.json" docs/chaos.json
	echo "wrote docs/chaos.md and docs/chaos.json (full log: $log)"
fi
exit $rc
