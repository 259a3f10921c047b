#!/usr/bin/env bash
# The package stands alone: builds the wheel, installs it into a clean virtualenv outside
# the checkout, and runs `heapsnap demo` from there (CI runs this after the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d /tmp/heapsnap-wheel-demo.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
.venv/bin/pip wheel --quiet --no-deps --wheel-dir "$scratch/dist" .
python3.11 -m venv "$scratch/venv"
# Its dependencies from PyPI (pip's cache makes this quick after the first time).
wheel="$(ls "$scratch"/dist/heapsnap-*.whl)"
"$scratch/venv/bin/pip" install --quiet "$wheel[cluster]"
cd "$scratch"
"$scratch/venv/bin/heapsnap" demo --out "$scratch/out"
# The operator on the local control plane: needs the binaries dev/setup.sh built.
"$scratch/venv/bin/heapsnap" demo --cluster --out "$scratch/out-cluster"
echo "heapsnap demo ran from the wheel, outside the checkout"
