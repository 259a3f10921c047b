#!/usr/bin/env bash
# S3-compatible servers the tests upload to: moto's server mode comes with the Python
# test extra (10-python.sh); versitygw (posix backend) is a second, independent
# implementation, built from the Go module proxy once per version into
# $HEAPSNAP_CACHE/versitygw/<version>/bin/versitygw.
set -euo pipefail
version=1.8.0
dir="${HEAPSNAP_CACHE:-$HOME/.cache/heapsnap}/versitygw/$version"
if [ -x "$dir/bin/versitygw" ] && "$dir/bin/versitygw" --version >/dev/null 2>&1; then
  exit 0
fi
command -v go >/dev/null || { echo "go is missing: versitygw is built with it" >&2; exit 1; }
rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/bin"
GOBIN="$dir.tmp/bin" GOFLAGS=-buildvcs=false go install "github.com/versity/versitygw/cmd/versitygw@v$version"
"$dir.tmp/bin/versitygw" --version >/dev/null
rm -rf "$dir" && mv "$dir.tmp" "$dir"
