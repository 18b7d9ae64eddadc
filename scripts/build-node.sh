#!/usr/bin/env bash
# Build the Go pieces of a real node from the Go module proxy, once, into a cache outside
# the repository: containerd + ctr + containerd-shim-runc-v2, crictl, kubelet + kube-proxy
# (in the same wrapper module as scripts/build-kube.sh's control plane), and Multus thick
# (multus-daemon + multus-shim). runc, conntrack and iptables come from Debian (setup.sh).
#
#   scripts/build-node.sh            build what is missing, print the bin dir (logs on stderr)
#
# The cache lives in ${NETSHIFT_CACHE:-$HOME/.cache/netshift}/bin/node-<versions>/.
# A complete cache is reused as it is; nothing is downloaded then.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../versions.env
source "$here/versions.env"

cache=${NETSHIFT_CACHE:-$HOME/.cache/netshift}
bindir="$cache/bin/node-containerd-${CONTAINERD_VERSION}-kube-${KUBE_VERSION}"
bindir+="-crictl-${CRICTL_VERSION}-multus-${MULTUS_VERSION}"
containerd_cmds=(containerd ctr containerd-shim-runc-v2)
kube_cmds=(kubelet kube-proxy)
multus_cmds=(multus-daemon multus-shim)
want=("${containerd_cmds[@]}" crictl "${kube_cmds[@]}" "${multus_cmds[@]}")

missing() { local b; for b in "$@"; do [[ -x "$bindir/$b" ]] || return 0; done; return 1; }
if ! missing "${want[@]}"; then echo "$bindir"; exit 0; fi

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$bindir"
log() { echo "build-node: $*" >&2; }
took() { log "$1 done in $(( SECONDS - $2 ))s"; }
# The directory of one module version in the module cache (downloads it if needed).
moddir() { go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p'; }

# containerd: a wrapper module that requires it; its main packages are built from there.
if missing "${containerd_cmds[@]}"; then
  t0=$SECONDS
  mod=github.com/containerd/containerd/v2
  w="$cache/build/containerd-$CONTAINERD_VERSION"; mkdir -p "$w"
  if [[ ! -f "$w/go.sum" ]]; then
    log "preparing wrapper module for $mod $CONTAINERD_VERSION"
    upstream="$(moddir "$mod@$CONTAINERD_VERSION")/go.mod"
    gover=$(awk '$1=="go"{print $2; exit}' "$upstream")
    printf 'module netshift.local/containerdbuild\n\ngo %s\n\nrequire %s %s\n' \
      "$gover" "$mod" "$CONTAINERD_VERSION" > "$w/go.mod"
    (cd "$w" && for c in "${containerd_cmds[@]}"; do
        go get "$mod/cmd/$c@$CONTAINERD_VERSION" >&2; done)
  fi
  ldflags="-s -w -X $mod/version.Version=$CONTAINERD_VERSION -X $mod/version.Package=$mod"
  for c in "${containerd_cmds[@]}"; do
    [[ -x "$bindir/$c" ]] && continue
    log "building $c $CONTAINERD_VERSION"
    (cd "$w" && go build -trimpath -tags no_btrfs,no_devmapper,no_zfs,no_aufs \
        -ldflags "$ldflags" -o "$bindir/$c.tmp" "$mod/cmd/$c" >&2)
    mv "$bindir/$c.tmp" "$bindir/$c"
  done
  took containerd "$t0"
fi

# crictl: its module has no replace directives, so `go install mod@version` works.
if missing crictl; then
  t0=$SECONDS
  log "building crictl $CRICTL_VERSION"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" >&2
  mv "$tmp/crictl" "$bindir/crictl"
  took crictl "$t0"
fi

# kubelet and kube-proxy: in the wrapper module that build-kube.sh prepares for the plane, so
# they share its module graph, its staging replaces and its version stamps.
if missing "${kube_cmds[@]}"; then
  t0=$SECONDS
  "$here/scripts/build-kube.sh" >/dev/null
  w="$cache/build/kube-$KUBE_VERSION"
  exec 9>"$w.lock"; flock 9          # the same lock build-kube.sh takes on this module
  (cd "$w" && for c in "${kube_cmds[@]}"; do go get "k8s.io/kubernetes/cmd/$c@$KUBE_VERSION" >&2; done)
  kminor=${KUBE_VERSION#v1.}; major=1; minor=${kminor%%.*}
  ldflags="-s -w"                    # the same stamps as build-kube.sh
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for c in "${kube_cmds[@]}"; do
    [[ -x "$bindir/$c" ]] && continue
    log "building $c $KUBE_VERSION"
    (cd "$w" && go build -trimpath -tags selinux,notest -ldflags "$ldflags" \
        -o "$bindir/$c.tmp" "k8s.io/kubernetes/cmd/$c" >&2)
    mv "$bindir/$c.tmp" "$bindir/$c"
  done
  exec 9>&-
  took "kubelet and kube-proxy" "$t0"
fi

# Multus thick: the module proxy serves exact versions but not the version list, which
# `go install mod@version` needs; so build its commands from a writable copy of the module.
if missing "${multus_cmds[@]}"; then
  t0=$SECONDS
  mod=gopkg.in/k8snetworkplumbingwg/multus-cni.v4
  src="$cache/build/multus-$MULTUS_VERSION"
  if [[ ! -f "$src/go.mod" ]]; then
    log "copying $mod $MULTUS_VERSION out of the module cache"
    from=$(moddir "$mod@$MULTUS_VERSION")
    rm -rf "$src.tmp"; cp -r "$from" "$src.tmp"; chmod -R u+w "$src.tmp"
    rm -rf "$src"; mv "$src.tmp" "$src"
  fi
  ldflags="-s -w -X $mod/pkg/multus.version=$MULTUS_VERSION -X $mod/pkg/multus.gitTreeState=clean"
  ldflags+=" -X $mod/pkg/multus.releaseStatus=released"
  for c in "${multus_cmds[@]}"; do
    [[ -x "$bindir/$c" ]] && continue
    log "building $c $MULTUS_VERSION"
    (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$bindir/$c.tmp" "./cmd/$c" >&2)
    mv "$bindir/$c.tmp" "$bindir/$c"
  done
  took multus "$t0"
fi

echo "$bindir"
