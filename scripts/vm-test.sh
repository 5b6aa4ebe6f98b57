#!/usr/bin/env bash
# The kernel matrix: boots Debian's own cloud kernels (5.10 bullseye, 6.1
# bookworm, 6.12 trixie) under QEMU (TCG) with the host's root filesystem
# read-only, runs the kernel-facing checks (test/kernel/check.ts) in each, and
# on the host kernel too, then prints one table kernel x check and exits
# non-zero if any check failed anywhere. Everything it needs is installed and
# cached under .tools/vm/ (idempotent; skips what is present).
#
#   bash scripts/vm-test.sh                  the matrix, plus the memory-192 check (6.1, maxcpus=192)
#   bash scripts/vm-test.sh --update-docs    also writes docs/kernel-matrix.json and README's kernel table
#   bash scripts/vm-test.sh --cpus-sweep     instead: 6.1 with 2/16/64/192 possible CPUs -> bench/results/cpus.json
#   bash scripts/vm-test.sh --kernels "6.1 host"   a subset (names: 5.10 6.1 6.12 host memory-192)
#   bash scripts/vm-test.sh --setup          install and download only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VM=$ROOT/.tools/vm
RESULTS=$VM/results

kernels="5.10 6.1 6.12 host memory-192"
update_docs=false
sweep=false
setup_only=false
# A guest that hangs must not hang CI: TCG runs of the checks take 1-3 min.
guest_timeout=${KERNTAP_VM_TIMEOUT:-420}
while (($#)); do
  case "$1" in
    --update-docs) update_docs=true ;;
    --cpus-sweep) sweep=true ;;
    --setup) setup_only=true ;;
    --kernels) kernels=$2; shift ;;
    --timeout) guest_timeout=$2; shift ;;
    *) echo "usage: bash scripts/vm-test.sh [--update-docs] [--cpus-sweep] [--kernels LIST] [--timeout SECONDS] [--setup]" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '\033[1mkerntap vm:\033[0m %s\n' "$*" >&2; }
die() { echo "kerntap vm: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root (loads BPF programs, creates cgroups and network namespaces)"

# Debian release of each kernel series the matrix boots.
declare -A SUITE=([5.10]=bullseye [6.1]=bookworm [6.12]=trixie)
declare -A DEBIAN_VERSION=([5.10]=11 [6.1]=12 [6.12]=13)

HOST_PKGS=(qemu-system-x86 busybox-static kmod udev libseccomp-dev libcap-ng-dev python3-venv bpftool nftables iproute2 python3)
# shellcheck source=scripts/apt.sh
source scripts/apt.sh

setup_runner() {
  apt_ensure "${HOST_PKGS[@]}"
  if [[ $("$VM/venv/bin/vng" --version 2>/dev/null) != *" 1.42"* ]]; then
    say "installing virtme-ng 1.42 into $VM/venv"
    python3 -m venv "$VM/venv"
    "$VM/venv/bin/pip" install --quiet --disable-pip-version-check 'virtme-ng==1.42'
  fi
  # Debian's C virtiofsd (from qemu) does not work with vng; the Rust one does.
  if [[ ! -x $VM/virtiofsd/bin/virtiofsd ]]; then
    local cargo
    cargo=$(command -v cargo || true)
    [[ -z $cargo && -x $HOME/.cargo/bin/cargo ]] && cargo=$HOME/.cargo/bin/cargo
    if [[ -z $cargo ]] && command -v rustup >/dev/null; then
      rustup toolchain install stable --profile minimal >&2
      cargo=$(rustup which cargo)
    fi
    [[ -n $cargo ]] || die "cargo (Rust) is needed to build virtiofsd: install rustup, or put cargo on PATH"
    say "building virtiofsd with $cargo (about 2 minutes)"
    "$cargo" install --quiet --locked virtiofsd --root "$VM/virtiofsd"
  fi
}

# apt, pointed at a sources list of its own (same mirrors as the host's, other
# suites) and its own state, so the host's apt never sees those suites.
APT_OPTS=(-o "Dir::Etc::SourceList=$VM/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$VM/apt/lists" -o "Dir::Cache=$VM/apt/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)

write_sources() {
  local src=/etc/apt/sources.list.d/debian.sources
  [[ -r $src ]] || die "$src not found: it names the Debian mirrors to fetch kernels from"
  mkdir -p "$VM/apt/lists/partial" "$VM/apt/cache/archives/partial"
  # deb822 stanzas: the mirror whose suites end in -security gets the
  # security suites, the other one the releases and their updates.
  awk -v suites="${SUITE[*]}" '
    function flush() {
      if (uri != "") {
        n = split(suites, s, " ")
        for (i = 1; i <= n; i++) {
          if (security) print "deb [signed-by=" key "] " uri " " s[i] "-security main"
          else { print "deb [signed-by=" key "] " uri " " s[i] " main"; print "deb [signed-by=" key "] " uri " " s[i] "-updates main" }
        }
      }
      uri = ""; security = 0; key = "/usr/share/keyrings/debian-archive-keyring.gpg"
    }
    BEGIN { flush() }
    /^[ \t]*$/ { flush(); next }
    /^URIs:/ { uri = $2 }
    /^Suites:/ { security = ($0 ~ /-security/) }
    /^Signed-By:/ { key = $2 }
    END { flush() }' "$src" >"$VM/apt/sources.list.new"
  [[ -s $VM/apt/sources.list.new ]] || die "no URIs: lines in $src"
  mv "$VM/apt/sources.list.new" "$VM/apt/sources.list"
}

# The newest linux-image-<series>*-cloud-amd64 of the series' own release
# that can be downloaded. Names with another release's "debNN" are backports
# (6.1 for bullseye, 6.12 for bookworm) and skipped.
newest_kernel_package() {
  local series=$1 own=deb${DEBIAN_VERSION[$1]} pkg
  apt-cache "${APT_OPTS[@]}" pkgnames linux-image- |
    grep -E "^linux-image-${series//./\\.}[.-][0-9][^ ]*-cloud-amd64$" | sort -Vr |
    while read -r pkg; do
      [[ $pkg =~ deb[0-9]+ && ${BASH_REMATCH[0]} != "$own" ]] && continue
      if apt-cache "${APT_OPTS[@]}" show --no-all-versions "$pkg" 2>/dev/null | grep '^Filename:' >/dev/null; then echo "$pkg"; break; fi
    done
}

setup_kernels() {
  local need=false series
  for series in "${!SUITE[@]}"; do [[ -n $(kernel_image "$series") ]] || need=true; done
  # Lists older than a week are refreshed so that a new kernel ABI is picked up.
  if $need || [[ -z $(find "$VM/apt/lists" -maxdepth 1 -name '*Packages*' -mtime -7 2>/dev/null | head -1) ]]; then
    write_sources
    say "updating the kernel package lists (${SUITE[*]})"
    apt-get "${APT_OPTS[@]}" update -qq >&2
  fi
  for series in "${!SUITE[@]}"; do
    local pkg dir
    pkg=$(newest_kernel_package "$series")
    [[ -n $pkg ]] || die "no linux-image-$series*-cloud-amd64 package in ${SUITE[$series]}"
    dir=$VM/kernels/$series
    [[ $(cat "$dir/.package" 2>/dev/null) == "$pkg" ]] && continue
    say "downloading and unpacking $pkg"
    rm -rf "$dir" "$VM/debs/$series" && mkdir -p "$VM/debs/$series"
    (cd "$VM/debs/$series" && apt-get "${APT_OPTS[@]}" download -qq "$pkg" >&2)
    mkdir -p "$dir" && dpkg -x "$VM/debs/$series"/*.deb "$dir"
    echo "$pkg" >"$dir/.package"
  done
}

kernel_image() { compgen -G "$VM/kernels/$1/boot/vmlinuz-*" | head -1 || true; }

build_checkout() {
  # The guest runs the built checkout as it is (shared read-only).
  if [[ ! -f build/Release/kerntap_native.node || ! -f bpf/out/cgroup_cpu.bpf.o || ! -d node_modules ]]; then
    bash scripts/dev.sh build
  else
    make -s -C bpf
    npx --no-install tsc -p tsconfig.json
  fi
}

# run_guest NAME SERIES CPUS MODE: boots the kernel with the check program;
# its JSON lands in $RESULTS/NAME/. Returns the guest's exit code (124 = timeout).
run_guest() {
  local name=$1 series=$2 cpus=$3 mode=$4 out=$RESULTS/$1
  rm -rf "$out" && mkdir -p "$out"
  local image
  image=$(kernel_image "$series")
  [[ -n $image ]] || die "kernel $series not unpacked (run with --setup)"
  cat >"$out/guest.sh" <<EOF
#!/bin/bash
# In the guest: root, host root fs read-only, $out writable.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
ip link set lo up
ulimit -n 65536
cd $ROOT
exec node dist/test/kernel/check.js --mode $mode --kernel $name --out $out/result.json --host-node-ms $host_node_ms
EOF
  chmod +x "$out/guest.sh"
  local t0=$SECONDS rc=0
  # mitigations=off: the speculation workarounds (call thunks, retpolines)
  # cost several times over under TCG and change nothing kerntap depends on.
  local attempt
  for attempt in 1 2; do
    rc=0
    PATH=$VM/venv/bin:$VM/virtiofsd/bin:$PATH timeout --kill-after=10 "$guest_timeout" \
      "$VM/venv/bin/vng" --run "$image" --disable-kvm --disable-microvm --cpus "$cpus" --memory 2G --append mitigations=off \
      --rwdir "$out" --exec "$out/guest.sh" </dev/null >"$out/console.log" 2>&1 || rc=$?
    [[ $attempt -eq 1 ]] || break
    # Seen once: vng gave up within seconds, printing nothing. Boot again once.
    if [[ $rc -ne 0 && ! -s $out/console.log && $((SECONDS - t0)) -lt 20 ]]; then
      say "$name: the VM exited at once without output (exit $rc); booting it again"
      continue
    fi
    # Seen once under TCG: a guest that stopped mid-run and wrote no final
    # result. Boot it again once; the first boot's files stay beside the second's.
    if [[ ! -s $out/result.json ]] || grep -q '"incomplete": true' "$out/result.json"; then
      local running
      running=$(sed -n 's/.*"running": "\(.*\)".*/\1/p' "$out/result.json" 2>/dev/null)
      say "$name: the guest left no final result (exit $rc${running:+, during check $running}); booting it again"
      for f in console.log result.json; do [[ -e $out/$f ]] && mv "$out/$f" "$out/first-boot.$f"; done
      continue
    fi
    break
  done
  echo "$((SECONDS - t0))" >"$out/seconds"
  return $rc
}

run_host() {
  local out=$RESULTS/host t0=$SECONDS rc=0
  rm -rf "$out" && mkdir -p "$out"
  timeout --kill-after=10 "$guest_timeout" node dist/test/kernel/check.js --mode matrix --kernel host --out "$out/result.json" \
    >"$out/console.log" 2>&1 || rc=$?
  echo "$((SECONDS - t0))" >"$out/seconds"
  return $rc
}

run_one() {
  local name=$1 rc=0
  case "$name" in
    host) run_host || rc=$? ;;
    memory-192) run_guest memory-192 6.1 "2,maxcpus=192" memory192 || rc=$? ;;
    # With 1 000 cgroups and 10 000 connections to set up in TCG, 192 takes longer.
    cpus-*) guest_timeout=$((guest_timeout * 2)) run_guest "$name" 6.1 "2,maxcpus=${name#cpus-}" sweep || rc=$? ;;
    5.10 | 6.1 | 6.12) run_guest "$name" "$name" 2 matrix || rc=$? ;;
    *) die "unknown kernel \"$name\" (known: 5.10 6.1 6.12 host memory-192)" ;;
  esac
  [[ $rc -eq 124 || $rc -eq 137 ]] && echo "timeout after ${guest_timeout}s" >"$RESULTS/$name/timeout"
  say "$name: done in $(cat "$RESULTS/$name/seconds") s (exit $rc)"
}

setup_runner
setup_kernels
build_checkout
$setup_only && { say "set up"; exit 0; }

mkdir -p "$RESULTS"
# Time bounds in the guests are scaled by how much slower node runs there.
host_node_ms=$(node dist/test/kernel/check.js --mode node-start)
t_start=$SECONDS
if $sweep; then
  names=()
  for n in 2 16 64 192; do names+=("cpus-$n"); done
  for name in "${names[@]}"; do say "booting 6.1 with maxcpus=${name#cpus-}"; run_one "$name"; done
  node scripts/kernel-table.mjs sweep --results "$RESULTS" --out bench/results/cpus.json "${names[@]}"
  exit
fi
for name in $kernels; do
  say "running the checks on $name"
  run_one "$name"
done
say "matrix took $((SECONDS - t_start)) s"
args=(matrix --results "$RESULTS" --out "$RESULTS/matrix.json")
$update_docs && args+=(--docs docs/kernel-matrix.json --readme README.md)
# shellcheck disable=SC2086
exec node scripts/kernel-table.mjs "${args[@]}" $kernels
