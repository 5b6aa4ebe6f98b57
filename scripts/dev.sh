#!/usr/bin/env bash
# One command to set up and run kerntap, or to set up and test it, on a
# Debian 12 host as root. Installs only what is missing, builds only what is
# out of date.
#
#   bash scripts/dev.sh run [kerntap flags…]   build, then start the exporter (default config, :10435)
#   bash scripts/dev.sh test [filters…]        build, then run the tests (npm test)
#   bash scripts/dev.sh build                  install and build only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode="${1:-}"
shift || true
case "$mode" in run|test|build) ;; *) echo "usage: bash scripts/dev.sh run|test|build [args…]" >&2; exit 2 ;; esac

say() { printf '\033[1mkerntap setup:\033[0m %s\n' "$*" >&2; }

# Debian packages: to build and run, and the extra ones the tests use.
BUILD_PKGS=(clang-19 llvm-19 libbpf-dev libelf-dev zlib1g-dev pkg-config make g++ python3 ca-certificates)
TEST_PKGS=(bpftool tmux prometheus docker-compose iproute2 nftables util-linux libcap2-bin curl wrk nginx bpftrace linux-perf python3-venv procps iputils-ping)
# Real container runtimes for test/integration/real_runtimes.test.ts and image.test.ts; the
# tests start their own daemons, so the packages' services must not start (policy-rc.d).
RUNTIME_PKGS=(docker.io podman containerd runc containernetworking-plugins busybox-static debootstrap)

# shellcheck source=scripts/apt.sh
source scripts/apt.sh

# Installs without starting the packages' services (a started dockerd would change iptables).
apt_ensure_no_services() {
  local policy=/usr/sbin/policy-rc.d added=""
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1; fi
  apt_ensure "$@" || { [[ -n $added ]] && rm -f "$policy"; return 1; }
  [[ -n $added ]] && rm -f "$policy"
  return 0
}

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

node_ensure() {
  if (($(node_major) >= 20)) && command -v npm >/dev/null; then return; fi
  # Debian 12 ships Node 18; Node 24 LTS comes from the npm registry's `node` package.
  apt_ensure nodejs npm
  say "installing Node.js 24 (npm package node@24)"
  npm install -g --no-audit --no-fund node@24 >/dev/null
  hash -r
  (($(node_major) >= 20)) || { echo "kerntap setup: Node.js >= 20 is required, found $(node -v 2>/dev/null)" >&2; exit 1; }
}

if [[ $(id -u) -ne 0 ]]; then
  echo "kerntap setup: run as root (installs packages; loading BPF programs needs CAP_BPF and CAP_PERFMON)" >&2
  exit 1
fi

apt_ensure "${BUILD_PKGS[@]}"
[[ $mode == test ]] && apt_ensure "${TEST_PKGS[@]}" && apt_ensure_no_services "${RUNTIME_PKGS[@]}"
node_ensure

# node-gyp builds against the headers of the Node.js that runs it; never downloads them.
node_prefix=$(dirname "$(dirname "$(node -p process.execPath)")")
if [[ -f $node_prefix/include/node/node_api.h ]]; then export npm_config_nodedir=$node_prefix; else export npm_config_nodedir=/usr; fi

if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  say "installing npm dependencies"
  npm ci --no-audit --no-fund >/dev/null
fi

say "building BPF objects, native addon and TypeScript"
make -s -C bpf
if [[ ! -f build/Release/kerntap_native.node ]] || [[ -n $(find native binding.gyp -newer build/Release/kerntap_native.node 2>/dev/null | head -1) ]]; then
  npx --no-install node-gyp rebuild --nodedir="$npm_config_nodedir" >/dev/null
fi
npx --no-install tsc -p tsconfig.json

if [[ $mode == test && -f scripts/test-deps.sh ]]; then
  # Test-only peers that don't come from Debian (e.g. Python OTLP protobufs).
  bash scripts/test-deps.sh
fi

# Classic tracepoints (the http collector's and top's syscall hooks) are
# found through tracefs; systemd mounts it at boot, some hosts do not.
if [[ $mode != build && -d /sys/kernel/tracing && ! -d /sys/kernel/tracing/events && ! -d /sys/kernel/debug/tracing/events ]]; then
  say "mounting tracefs at /sys/kernel/tracing (the syscall tracepoints are found there)"
  mount -t tracefs nodev /sys/kernel/tracing
fi

case "$mode" in
  build) say "built" ;;
  run) exec node bin/kerntap.js "$@" ;;
  test) exec npm test -- "$@" ;;
esac
