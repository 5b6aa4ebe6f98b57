#!/usr/bin/env bash
# kerntap benchmarks, one command:  bash bench/run.sh [--smoke]
# Needs root, a built tree (bash scripts/dev.sh build), wrk, nginx, bpftrace, bpftool.
# --smoke runs every part for a few seconds (CI); the full run takes ~10 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ulimit -n "$(ulimit -Hn)"
npx --no-install tsc -p tsconfig.json
exec node dist/bench/bench.js "$@"
