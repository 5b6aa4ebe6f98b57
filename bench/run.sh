#!/usr/bin/env bash
# kerntap benchmarks, one command:  bash bench/run.sh [--smoke] [--only part,...]
# Needs root, a built tree (bash scripts/dev.sh build), wrk, nginx, bpftrace, bpftool, taskset, perf.
# --smoke runs every part for a few seconds (CI); the full run takes ~25 minutes
# and then draws bench/results/growth.png.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ulimit -n "$(ulimit -Hn)"
npx --no-install tsc -p tsconfig.json
node dist/bench/bench.js "$@"
if [[ " $* " != *" --smoke "* && " $* " != *" --only"* ]]; then
  bash bench/plot.sh growth bench/results/full.json bench/results/growth.png
fi
