#!/usr/bin/env bash
# Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl
# from the Go module proxy, once, into a cache outside the repository.
#
#   scripts/build-kube.sh            build what is missing, print the bin dir
#
# The cache lives in ${NETSHIFT_CACHE:-$HOME/.cache/netshift}/bin/<kube>-<etcd>/.
# A complete cache is reused as it is; nothing is downloaded then.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../versions.env
source "$here/versions.env"

cache=${NETSHIFT_CACHE:-$HOME/.cache/netshift}
bindir="$cache/bin/kube-${KUBE_VERSION}-etcd-${ETCD_VERSION}"
want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

complete=1
for b in "${want[@]}"; do [[ -x "$bindir/$b" ]] || complete=0; done
if [[ $complete == 1 ]]; then echo "$bindir"; exit 0; fi

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$bindir" "$cache/build"
log() { echo "build-kube: $*" >&2; }
# One build at a time per Kubernetes version (several work trees share this cache);
# build-node.sh takes the same lock to add the kubelet to the wrapper module.
exec 9>"$cache/build/kube-$KUBE_VERSION.lock"; flock 9

if [[ ! -x "$bindir/etcd" ]]; then
  log "building etcd $ETCD_VERSION"
  w="$cache/build/etcd-$ETCD_VERSION"; mkdir -p "$w"
  cat > "$w/go.mod" <<MOD
module netshift.local/etcdbuild

go 1.24
MOD
  (cd "$w" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 \
     && go build -trimpath -o "$bindir/etcd.tmp" go.etcd.io/etcd/server/v3 >&2)
  mv "$bindir/etcd.tmp" "$bindir/etcd"
fi

kminor=${KUBE_VERSION#v1.}          # 36.3
staging="v0.${kminor}"              # v0.36.3
w="$cache/build/kube-$KUBE_VERSION"; mkdir -p "$w"
if [[ ! -f "$w/go.sum" ]]; then
  log "preparing wrapper module for k8s.io/kubernetes $KUBE_VERSION (staging $staging)"
  (cd "$w" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null)
  upstream="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod"
  gover=$(awk '$1=="go"{print $2; exit}' "$upstream")
  godebug=$(grep -E '^godebug ' "$upstream" || true)
  {
    echo "module netshift.local/kubebuild"
    echo
    echo "go $gover"
    echo
    [[ -n "$godebug" ]] && { echo "$godebug"; echo; }
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    grep -E '=> \./staging/' "$upstream" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$w/go.mod"
  (cd "$w" && for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
      go get "k8s.io/kubernetes/cmd/$c@$KUBE_VERSION" >&2; done)
fi

major=1; minor=${kminor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [[ -x "$bindir/$c" ]] && continue
  log "building $c $KUBE_VERSION"
  (cd "$w" && go build -trimpath -tags selinux,notest -ldflags "$ldflags" \
      -o "$bindir/$c.tmp" "k8s.io/kubernetes/cmd/$c" >&2)
  mv "$bindir/$c.tmp" "$bindir/$c"
done
echo "$bindir"
