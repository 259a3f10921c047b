# Versions of the control-plane binaries; the first four must agree with go.mod.
# Sourced by build.sh; harness.py reads the same assignments.
KUBERNETES_VERSION=v1.34.4
ETCD_VERSION=v3.6.4
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
CLUSTER_VERSIONS_KEY="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
