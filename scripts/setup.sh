#!/usr/bin/env bash
# Everything netshift needs on a fresh Debian machine, as root; each step is skipped when done.
#   system packages  containernetworking-plugins (real CNI plugins), iproute2, iputils-ping;
#                    for the real node: runc, iptables, conntrack; for its images: gcc and
#                    libc6-dev (static pause), busybox-static, debootstrap
#                    wrk (the load generator of bench/admission.py); prometheus (promtool
#                    checks the alerting rules; a real Prometheus fires them in a test)
#   Python           .venv with netshift and its test tools (pip, from PyPI)
#   Kubernetes       etcd, kube-apiserver, -controller-manager, -scheduler, kubectl
#                    built from the Go module proxy once, cached in ~/.cache/netshift
#   real node        containerd, ctr, crictl, kubelet, kube-proxy, Multus (scripts/build-node.sh)
#   helm             for the chart's tests (scripts/build-helm.sh, Go module proxy, cached)
#   images           pause, busybox, netshift, multus OCI tars (scripts/build-images.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]]; then
  echo "setup: netshift's local cluster makes network namespaces: run as root" >&2
  exit 1
fi

need=()
for pkg in containernetworking-plugins iproute2 iputils-ping \
           runc iptables conntrack gcc libc6-dev busybox-static debootstrap wrk; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if (( ${#need[@]} )); then
  echo "setup: apt-get install ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Prometheus without its recommended node exporter: the tests run their own server on
# loopback, with a config of their own; the package's service is not used.
if ! dpkg -s prometheus >/dev/null 2>&1; then
  echo "setup: apt-get install prometheus" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
stamp=.venv/.netshift-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "setup: pip install -e .[test]" >&2
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi

if ! command -v go >/dev/null; then
  echo "setup: Go (1.26+) is needed to build the pinned Kubernetes binaries once" >&2
  exit 1
fi
start=$(date +%s)
bindir=$(scripts/build-kube.sh)
took=$(( $(date +%s) - start ))
(( took > 5 )) && echo "setup: Kubernetes binaries built in ${took}s into $bindir" >&2
start=$(date +%s)
nodedir=$(scripts/build-node.sh)
took=$(( $(date +%s) - start ))
(( took > 5 )) && echo "setup: node binaries built in ${took}s into $nodedir" >&2
start=$(date +%s)
helmdir=$(scripts/build-helm.sh)
took=$(( $(date +%s) - start ))
(( took > 5 )) && echo "setup: helm built in ${took}s into $helmdir" >&2
start=$(date +%s)
PYTHON=$PWD/.venv/bin/python scripts/build-images.sh >/dev/null
took=$(( $(date +%s) - start ))
(( took > 5 )) && echo "setup: images built in ${took}s into ${NETSHIFT_CACHE:-$HOME/.cache/netshift}/images" >&2
exit 0
