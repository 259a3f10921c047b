#!/usr/bin/env bash
# What the analysis tests compare against and render with:
# - memlab (npm), the independent implementation of dominators and retained sizes,
#   installed once per version into $HEAPSNAP_CACHE/memlab/<version>;
# - Debian's chromium, to render the HTML report headless and check what it shows.
set -euo pipefail
cache="${HEAPSNAP_CACHE:-$HOME/.cache/heapsnap}/memlab"
version=2.0.5
dir="$cache/$version"
if [ ! -f "$dir/node_modules/@memlab/heap-analysis/package.json" ] \
  || ! grep -q "\"version\": \"$version\"" "$dir/node_modules/memlab/package.json"; then
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  # memlab's e2e part would fetch a browser build of its own: skip that download.
  PUPPETEER_SKIP_DOWNLOAD=1 PUPPETEER_SKIP_CHROMIUM_DOWNLOAD=1 \
    npm install --silent --no-audit --no-fund --prefix "$dir.tmp" "memlab@$version" "@memlab/heap-analysis@$version"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
node -e "require('$dir/node_modules/@memlab/heap-analysis'); require('$dir/node_modules/@memlab/core')"

if ! [ -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null | grep -q Chromium  # the Debian wrapper prints a harmless shell warning
