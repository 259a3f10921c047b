#!/usr/bin/env bash
# The real node of the test cluster (tests/realnode): containerd, runc and the CNI plugins
# from Debian's packages (kubelet is built with the control plane, dev/k8s/build.sh), and
# debootstrap for the images' Debian base. The images themselves are built on first use
# into $HEAPSNAP_CACHE/images (heapsnap.devcluster.images), keyed by what goes into them.
set -euo pipefail
packages=(containerd runc containernetworking-plugins iptables nftables conntrack socat debootstrap)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "the real node needs ${missing[*]}: run this as root, or apt-get install them" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts containerd as a service when it installs it; the tests run their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
  systemctl stop containerd && systemctl disable --quiet containerd
fi
containerd --version
runc --version | head -1
test -x /usr/lib/cni/bridge && test -x /usr/lib/cni/host-local
