#!/usr/bin/env bash
# kerntap benchmarks, one command:  bash bench/run.sh [--smoke] [--only part,...]
# Needs root, a built tree (npm run build), wrk, nginx, bpftrace, bpftool, taskset.
# --smoke runs every part for a few seconds (CI); the full run takes ~12 minutes
# and then draws bench/results/growth.png (matplotlib in a venv outside the tree).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ulimit -n "$(ulimit -Hn)"
npx --no-install tsc -p tsconfig.json
node dist/bench/bench.js "$@"
if [[ " $* " != *" --smoke "* && " $* " != *" --only"* ]]; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/kerntap-bench-venv"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements.txt
  "$venv/bin/python" bench/plot.py bench/results/full.json bench/results/growth.png
  echo "bench: wrote bench/results/growth.png" >&2
fi
