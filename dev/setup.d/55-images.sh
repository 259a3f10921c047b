#!/usr/bin/env bash
# The real node's container images (tests/realnode, `dev/cluster up --real-node`), built
# without a registry or a container engine into $HEAPSNAP_CACHE/images, keyed by what goes
# into them: pause, the distroless-like and Debian-like Node 20 and 24 images, and the
# operator image from the Dockerfile (heapsnap.devcluster.images; about 2 minutes cold,
# mostly debootstrap; the operator image again whenever the source changes).
# Needs root (debootstrap, a private mount namespace), as the real node itself does.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" -ne 0 ]; then
  echo "the real node's images need root (debootstrap, unshare --mount): run this as root" >&2
  exit 1
fi
.venv/bin/python -m heapsnap.devcluster.images build
