#!/usr/bin/env bash
# The local Kubernetes control plane for tests and `dev/cluster`: kube-apiserver,
# kube-scheduler and kubelet (the real node, tests/realnode),
# kube-controller-manager, kubectl, etcd, kwok and helm, built from the Go module proxy
# into $HEAPSNAP_CACHE/cluster/<versions>/bin (dev/k8s/build.sh; about 30 minutes
# cold on 2 cores, instant when cached). Needs Go >= 1.26 (kwok v0.8.0 and helm v3.22).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v go >/dev/null; then
  echo "go is missing: install Go >= 1.26 (https://go.dev/dl/) and put it on PATH" >&2
  exit 1
fi
bash dev/k8s/build.sh
