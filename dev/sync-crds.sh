#!/usr/bin/env bash
# Copies the CRDs from crds/ (their single source of truth) into the chart's crds/ folder.
# tests/chart checks that the two are identical, so run this after every CRD change.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
sources=(crds/*.yaml)
if [ "${#sources[@]}" -eq 0 ]; then
  echo "no CRD in crds/" >&2
  exit 1
fi
rm -f helm/heapsnap/crds/*.yaml
cp "${sources[@]}" helm/heapsnap/crds/
echo "copied ${#sources[@]} CRD file(s) into helm/heapsnap/crds/"
