#!/usr/bin/env bash
# kerntap soak, one command:  bash bench/soak.sh [--minutes 30] [--sample 10]
# Needs root, a built tree (bash scripts/dev.sh build), wrk, nginx, curl.
# Writes bench/results/soak.json, then draws bench/results/soak.png (RELIABILITY.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ulimit -n "$(ulimit -Hn)"
npx --no-install tsc -p tsconfig.json
node dist/bench/soak.js "$@"
bash bench/plot.sh soak bench/results/soak.json bench/results/soak.png
