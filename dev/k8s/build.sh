#!/usr/bin/env bash
# Builds the control-plane binaries from the Go module proxy into
# $HEAPSNAP_CACHE/cluster/<versions-key>/bin, once per machine. Prints the cache folder.
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet and etcd come from this folder's go.mod
# (k8s.io/kubernetes with its staging modules mapped to published versions); kwok and
# helm are separate modules with their own dependency graphs, installed with GOBIN.
# Each binary's cold build time goes to build-times.txt next to bin/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../../operator/heapsnap/devcluster/versions.sh
source "$here/../../operator/heapsnap/devcluster/versions.sh"
cache="${HEAPSNAP_CACHE:-$HOME/.cache/heapsnap}/cluster/$CLUSTER_VERSIONS_KEY"
bin="$cache/bin"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet etcd kwok helm)

complete() {
  local name
  for name in "${binaries[@]}"; do [ -x "$bin/$name" ] || return 1; done
}

if complete; then
  echo "$cache"
  exit 0
fi

command -v go >/dev/null || { echo "go is missing from PATH: install Go >= 1.26" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
# Without these the API server reports v0.0.0-master, which helm's kubeVersion checks
# and clients' version-skew logic reject (the variables hack/lib/version.sh sets).
minor="${KUBERNETES_VERSION#v1.}"
minor="${minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
mkdir -p "$bin"
times="$cache/build-times.txt"
touch "$times"

timed() {
  local name=$1 start=$SECONDS
  shift
  if [ -x "$bin/$name" ]; then return 0; fi
  echo "building $name" >&2
  "$@" >&2
  echo "$name $((SECONDS - start))s" | tee -a "$times" >&2
}

build_here() {
  local name=$1 pkg=$2 ldflags=${3:-"-s -w"}
  (cd "$here" && go build -trimpath "-ldflags=$ldflags" -o "$bin/$name.tmp" "$pkg") && mv "$bin/$name.tmp" "$bin/$name"
}

install_module() {
  local name=$1 pkg=$2 ldflags=${3:-"-s -w"} gobin="$cache/gobin.tmp"
  rm -rf "$gobin" && mkdir -p "$gobin"
  (cd "$cache" && GOBIN="$gobin" go install -trimpath "-ldflags=$ldflags" "$pkg") && mv "$gobin/$name" "$bin/$name"
  rm -rf "$gobin"
}

total=$SECONDS
timed kube-apiserver build_here kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
timed kube-controller-manager build_here kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
timed kube-scheduler build_here kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$k8s_ldflags"
timed kubectl build_here kubectl k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"
# The real node (tests/realnode): about 45 s once the API server's packages are in Go's build cache.
timed kubelet build_here kubelet k8s.io/kubernetes/cmd/kubelet "$k8s_ldflags"
timed etcd build_here etcd go.etcd.io/etcd/server/v3
timed kwok install_module kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
# helm's version variable defaults to the minor release only ("v3.22").
timed helm install_module helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
  "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
echo "total $((SECONDS - total))s" | tee -a "$times" >&2
complete
echo "$cache"
