#!/usr/bin/env bash
# Draws a figure from bench results with matplotlib, in a venv outside the tree.
#   bash bench/plot.sh growth|soak <results.json> <out.png>
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="${XDG_CACHE_HOME:-$HOME/.cache}/kerntap-bench-venv"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements.txt
"$venv/bin/python" bench/plot.py "$@"
echo "bench: wrote $3" >&2
