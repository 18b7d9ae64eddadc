#!/usr/bin/env bash
# Build helm (HELM_VERSION in versions.env) from the Go module proxy, once, into a cache
# outside the repository, for the chart's tests (helm lint, helm template, and helm
# install/upgrade/uninstall on the local cluster's real node).
#
#   scripts/build-helm.sh            build it if missing, print the bin dir (logs on stderr)
#
# The cache lives in ${NETSHIFT_CACHE:-$HOME/.cache/netshift}/bin/helm-<version>/: a new pin
# is a new directory, so the binary is rebuilt exactly when the pin changes.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../versions.env
source "$here/versions.env"

cache=${NETSHIFT_CACHE:-$HOME/.cache/netshift}
bindir="$cache/bin/helm-${HELM_VERSION}"
if [[ -x "$bindir/helm" ]]; then echo "$bindir"; exit 0; fi

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$bindir" "$cache/build"
log() { echo "build-helm: $*" >&2; }
# Several work trees share this cache: one build at a time.
exec 9>"$cache/build/helm-$HELM_VERSION.lock"; flock 9
if [[ -x "$bindir/helm" ]]; then echo "$bindir"; exit 0; fi

# helm's go.mod has no replace directives, so `go install module@version` builds it as
# released; the version goes in by -ldflags, as helm's own Makefile does for a tag.
mod=helm.sh/helm/v4
ldflags="-s -w -X $mod/internal/version.version=$HELM_VERSION"
ldflags+=" -X $mod/internal/version.gitTreeState=clean"
log "building helm $HELM_VERSION"
t0=$SECONDS
tmp=$(mktemp -d "$cache/build/helm-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "$mod/cmd/helm@$HELM_VERSION" >&2
mv "$tmp/helm" "$bindir/helm"
log "helm $HELM_VERSION built in $(( SECONDS - t0 ))s"
echo "$bindir"
