#!/usr/bin/env bash
# Sets up everything heapsnap's demo and tests need, idempotently:
# the Python virtualenv in .venv, and (cached per user under ~/.cache/heapsnap, keyed by
# version) the Node.js releases, the control-plane binaries, the S3 servers and the
# tools the tests compare against. Each step is a script in dev/setup.d/, run in order;
# any failure stops the set-up with a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export HEAPSNAP_CACHE="${HEAPSNAP_CACHE:-$HOME/.cache/heapsnap}"
mkdir -p "$HEAPSNAP_CACHE"
for step in dev/setup.d/*.sh; do
  echo "==> setup: ${step#dev/setup.d/}"
  start=$SECONDS
  bash "$step"
  echo "    done in $((SECONDS - start)) s"
done
