#!/usr/bin/env bash
# Run the peer benchmarks (Hypercore, then PouchDB) one after another, each bounded in time.
#
#   benches/peers/run.sh [--blocks N] [--docs N] [--json] [--skip-pouchdb] [--timeout-sec S]
#
# Defaults: 1,000,000 Hypercore blocks of 300 B (arrays of 1000), 100,000 PouchDB docs.
# Installs the pinned dependencies with `npm ci` when node_modules/ is missing.
# With --json, prints one JSON object per benchmark (one per line) on stdout.
set -euo pipefail
cd "$(dirname "$0")"

blocks=1000000
docs=100000
json=()
skip_pouch=0
run_timeout=900   # hard cap for each node process, seconds
while [ $# -gt 0 ]; do
  case "$1" in
    --blocks) blocks="$2"; shift 2 ;;
    --docs) docs="$2"; shift 2 ;;
    --json) json=(--json); shift ;;
    --skip-pouchdb) skip_pouch=1; shift ;;
    --timeout-sec) run_timeout="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

command -v node >/dev/null || { echo "node is not installed (e.g. apt-get install -y nodejs npm)" >&2; exit 2; }
if [ ! -d node_modules ]; then
  timeout 600 npm ci --no-audit --no-fund >&2
fi

# The inner script timeout is a little below the outer hard cap, so a slow run
# still reports what it got before `timeout` kills the process.
inner=$(( run_timeout > 60 ? run_timeout - 60 : run_timeout ))
rc=0
timeout "$run_timeout" node hypercore-bench.mjs --blocks "$blocks" --block-bytes 300 --batch 1000 \
  --timeout-sec "$inner" "${json[@]}" || rc=$?
if [ "$skip_pouch" = 0 ]; then
  timeout "$run_timeout" node pouchdb-bench.mjs --docs "$docs" --timeout-sec "$inner" "${json[@]}" || rc=$?
fi
exit "$rc"
