#!/usr/bin/env bash
# Shows that a change leaves the exporter's BPF programs as they were: builds
# the collector objects of BASE (default: the merge base with main) and
# compares every section of each with the objects built here (make -C bpf),
# except the BTF ones, whose line info holds the build directory's path.
#   bash scripts/hot-path-unchanged.sh [BASE]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
base=${1:-$(git merge-base HEAD main)}
readelf=$(command -v llvm-readelf-19 || command -v llvm-readelf)
objcopy=$(command -v llvm-objcopy-19 || command -v llvm-objcopy)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$base" bpf | tar -x -C "$tmp"
status=0
for src in "$tmp"/bpf/*.bpf.c; do
  o=$(basename "$src" .c).o
  make -s -C "$tmp/bpf" "out/$o" >/dev/null
  n=0; d=0
  for s in $("$readelf" -S -W "bpf/out/$o" | sed -n 's/^ *\[ *[0-9]*\] \([^ ]*\).*/\1/p' | grep -v '^$\|BTF'); do
    n=$((n + 1))
    a=$("$objcopy" --dump-section "$s=$tmp/a" "bpf/out/$o" "$tmp/x" && sha1sum < "$tmp/a")
    b=$("$objcopy" --dump-section "$s=$tmp/b" "$tmp/bpf/out/$o" "$tmp/x" && sha1sum < "$tmp/b")
    [[ $a == "$b" ]] || { echo "  $o: section $s differs"; d=$((d + 1)); status=1; }
  done
  echo "$o: $n sections (programs, maps, relocations, rodata) compared with $(git rev-parse --short "$base"): $d differ"
done
exit $status
