#!/usr/bin/env bash
# Build netshift's container images as OCI image layout tars, without Docker or a registry,
# once, into ${NETSHIFT_CACHE:-$HOME/.cache/netshift}/images/ (as root: debootstrap, chroot).
#
#   scripts/build-images.sh [pause] [busybox] [netshift] [multus]     (default: all four)
#
# prints one KEY=VALUE line per image on stdout (logs on stderr), e.g.
#   NETSHIFT_IMAGE=docker.io/netshift/netshift:dev
#   NETSHIFT_TAR=/root/.cache/netshift/images/netshift-<key>.tar
# Import a tar with `ctr -n k8s.io images import FILE`; pods use it with imagePullPolicy: Never.
#
#   pause     the sandbox image: images/pause.c, built with gcc -static
#   busybox   a test image from Debian's busybox-static (sh, ip, ping, nc, wget, …)
#   netshift  webhook, controller and agent: a Debian root filesystem (debootstrap minbase,
#             from the mirror apt already uses) with python3, iproute2, iptables, the CNI
#             plugins, netshift's wheel (+ its deps from PyPI) in /opt/netshift, and crictl
#   multus    Multus thick: multus-daemon and multus-shim (from scripts/build-node.sh) in
#             /usr/src/multus-cni/bin on the same Debian root filesystem (the CNI plugins it
#             runs are Debian's, linked against glibc)
#
# Each tar is named by a key over its inputs (for netshift: the wheel's content, so an
# unchanged tree is not rebuilt); the debootstrap base is cached on its own, it is the slow part.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../versions.env
source "$here/versions.env"

cache=${NETSHIFT_CACHE:-$HOME/.cache/netshift}
imgs="$cache/images"
python=${PYTHON:-python3}
oci=("$python" "$here/images/oci.py")
# What the netshift image installs from Debian; images/Containerfile installs the same.
base_packages=(python3 python3-venv iproute2 iptables containernetworking-plugins)
base_recipe=1   # bump when the base's recipe below changes in a way its key does not see

log() { echo "build-images: $*" >&2; }
sha() { sha256sum "$@" | cut -c1-64; }
key() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }
# Keep the newest eight tars of one image (worktrees of one repository share this cache,
# each with its own netshift image); older ones are only disk.
prune() { ls -1t "$imgs/$1"-*.tar 2>/dev/null | tail -n +9 | xargs -r rm -f; }

if [[ $(id -u) != 0 ]]; then
  echo "build-images: run as root (debootstrap and chroot need it)" >&2
  exit 1
fi
mkdir -p "$imgs"
exec 8>"$imgs/.lock"; flock 8                       # one image build at a time on this cache
work=$(mktemp -d "$imgs/.work.XXXXXX")
mounted=()
cleanup() {
  local m
  for m in "${mounted[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
# Run a command in a root filesystem, with /proc, a clean environment and no services.
in_root() {
  local root=$1; shift
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 \
    chroot "$root" "$@"
}
mount_proc() { mount -t proc proc "$1/proc"; mounted+=("$1/proc"); }
umount_proc() { umount "$1/proc"; mounted=("${mounted[@]/"$1/proc"}"); }
self_key=$(sha "$here/images/oci.py" "$here/scripts/build-images.sh" | sha256sum | cut -c1-16)
# Directories kept empty in every layer: the runtime mounts its own, or nothing reads them.
empty=(--empty dev --empty proc --empty sys --empty run --empty tmp --empty var/tmp
       --empty var/log --empty var/cache/apt --empty var/lib/apt/lists
       --empty usr/share/doc --empty usr/share/man --empty usr/share/info)

build_pause() {
  local k tar
  k=$(key "$self_key" "$PAUSE_IMAGE" "$(sha "$here/images/pause.c")" "$(gcc --version | head -1)")
  tar="$imgs/pause-$k.tar"
  if [[ ! -f $tar ]]; then
    log "building $PAUSE_IMAGE"
    local r="$work/pause"; mkdir -p "$r"
    gcc -static -O2 -s -Wall -Wextra -o "$r/pause" "$here/images/pause.c"
    "${oci[@]}" "$r" "$tar" --name "$PAUSE_IMAGE" --entrypoint '["/pause"]' >&2
    prune pause
  fi
  echo "PAUSE_IMAGE=$PAUSE_IMAGE"; echo "PAUSE_TAR=$tar"
}

# A busybox root filesystem: the static binary, one symlink per applet, /etc/passwd.
busybox_root() {
  local r=$1 a
  mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,var,run}
  chmod 1777 "$r/tmp"
  cp /bin/busybox "$r/bin/busybox"
  for a in $(/bin/busybox --list-full); do
    [[ $a == bin/busybox || -e $r/$a ]] && continue
    ln -s /bin/busybox "$r/$a"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    > "$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"
}

build_busybox() {
  local k tar v
  v=$(dpkg-query -W -f '${Version}' busybox-static)
  k=$(key "$self_key" "$BUSYBOX_IMAGE" "$v" "$(sha /bin/busybox)")
  tar="$imgs/busybox-$k.tar"
  if [[ ! -f $tar ]]; then
    log "building $BUSYBOX_IMAGE from busybox-static $v"
    busybox_root "$work/busybox"
    "${oci[@]}" "$work/busybox" "$tar" --name "$BUSYBOX_IMAGE" --cmd '["sh"]' \
      --label "org.opencontainers.image.version=$v" >&2
    prune busybox
  fi
  echo "BUSYBOX_IMAGE=$BUSYBOX_IMAGE"; echo "BUSYBOX_TAR=$tar"
}

# The Debian base (debootstrap minbase + base_packages, upgraded from the pockets apt knows),
# cached as a directory: $base/rootfs plus $base/meta.env (its Python and glibc versions).
base=""
build_base() {
  [[ -n $base ]] && return 0
  local sources mirror k t0=$SECONDS
  sources=$("$python" "$here/images/aptsources.py" "$DEBIAN_SUITE")
  mirror=$(head -1 <<<"$sources" | cut -d' ' -f1)
  k=$(key "$base_recipe" "$DEBIAN_SUITE" "$sources" "${base_packages[@]}")
  base="$imgs/base/debian-$DEBIAN_SUITE-$k"
  [[ -f $base/meta.env ]] && return 0
  log "debootstrap --variant=minbase $DEBIAN_SUITE from $mirror (once; a few minutes)"
  local b="$base.tmp"
  rm -rf --one-file-system "$b"; mkdir -p "$b"
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$b/rootfs" "$mirror" > "$b/debootstrap.log" 2>&1 \
    || { tail -20 "$b/debootstrap.log" >&2; exit 1; }
  local r="$b/rootfs" uri suite
  while read -r uri suite; do echo "deb $uri $suite main"; done <<<"$sources" > "$r/etc/apt/sources.list"
  cp /etc/resolv.conf "$r/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"; chmod +x "$r/usr/sbin/policy-rc.d"
  # Follow this machine's apt about Release dates (a mirror may serve a dated snapshot).
  local aptopts=()
  apt-config dump | grep -q '^Acquire::Check-Valid-Until "false"' \
    && aptopts+=(-o Acquire::Check-Valid-Until=false)
  apt-config dump | grep -q '^Acquire::Check-Date "false"' && aptopts+=(-o Acquire::Check-Date=false)
  mount_proc "$r"
  {
    in_root "$r" apt-get "${aptopts[@]}" update -q
    in_root "$r" apt-get -y -q dist-upgrade
    in_root "$r" apt-get -y -q --no-install-recommends install "${base_packages[@]}"
    in_root "$r" apt-get clean
    # Hash-based .pyc files: valid whatever mtime the layer gives their sources.
    in_root "$r" sh -c 'python3 -m compileall -q -f -j0 --invalidation-mode unchecked-hash \
      /usr/lib/python3* || echo "compileall: some files did not compile (kept as they were)"'
  } > "$b/apt.log" 2>&1 || { tail -20 "$b/apt.log" >&2; exit 1; }
  umount_proc "$r"
  rm -rf "$r/var/lib/apt/lists/"* "$r/usr/sbin/policy-rc.d"
  : > "$r/etc/resolv.conf"
  {
    echo "PYTHON_VERSION=$(in_root "$r" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    echo "GLIBC_VERSION=$(in_root "$r" python3 -c 'import platform; print(platform.libc_ver()[1])')"
    echo "MIRROR=$mirror"
  } > "$b/meta.env"
  rm -rf --one-file-system "$base"; mv "$b" "$base"
  log "base ready in $(( SECONDS - t0 ))s: $base"
}

# A sha256 over a wheel's members (names and bytes), blind to zip timestamps.
wheel_hash() {
  "$python" - "$1" <<'PY'
import hashlib, sys, zipfile
h = hashlib.sha256()
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in sorted(z.namelist()):
        h.update(name.encode() + b"\0" + z.read(name) + b"\0")
print(h.hexdigest())
PY
}

build_netshift() {
  local t0=$SECONDS bindir
  bindir=$("$here/scripts/build-node.sh")   # crictl: the agent's CRI resolver runs it today
  # The wheel is built with a cached venv of pyproject's build requirements: pip's build
  # isolation would install them afresh every time (seconds on every setup).
  local req benv
  req=$("$python" -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]))' \
    "$here/pyproject.toml")
  benv="$imgs/buildenv-$(key "$req")"
  if [[ ! -x $benv/bin/python ]]; then
    log "venv for building the wheel: $(tr '\n' ' ' <<<"$req")"
    rm -rf "$benv.tmp"; "$python" -m venv "$benv.tmp"
    mapfile -t reqs <<<"$req"
    "$benv.tmp/bin/python" -m pip install -q "${reqs[@]}" wheel >&2
    mv "$benv.tmp" "$benv"
  fi
  mkdir -p "$work/wheel"
  (cd "$here" && "$benv/bin/python" -m pip wheel -q --no-deps --no-build-isolation \
      -w "$work/wheel" . >&2)
  local whl; whl=$(ls "$work/wheel"/netshift-*.whl)
  build_base
  local k tar
  k=$(key "$self_key" "$NETSHIFT_IMAGE" "$(wheel_hash "$whl")" "$base" "$(sha "$bindir/crictl")")
  tar="$imgs/netshift-$k.tar"
  if [[ ! -f $tar ]]; then
    # shellcheck disable=SC1091
    source "$base/meta.env"
    local py=${PYTHON_VERSION/./} glibc=${GLIBC_VERSION#2.} arch plat=() y
    arch=$(uname -m)
    for (( y = 17; y <= glibc; y++ )); do plat+=(--platform "manylinux_2_${y}_$arch"); done
    plat+=(--platform "manylinux2014_$arch")
    log "pip download netshift's deps for CPython $PYTHON_VERSION, glibc $GLIBC_VERSION"
    mkdir -p "$work/wheels"
    "$python" -m pip download -q --only-binary=:all: --python-version "$PYTHON_VERSION" \
      --implementation cp --abi "cp$py" --abi abi3 --abi none "${plat[@]}" \
      -d "$work/wheels" "$whl" >&2
    log "installing into a copy of the base"
    local r="$work/netshift"
    cp -a "$base/rootfs" "$r"
    mkdir -p "$r/tmp/wheels"; cp "$work/wheels/"*.whl "$r/tmp/wheels/"
    cp "$bindir/crictl" "$r/usr/local/bin/crictl"
    mount_proc "$r"
    {
      in_root "$r" python3 -m venv /opt/netshift
      in_root "$r" /opt/netshift/bin/pip install -q --no-index --no-cache-dir \
        --find-links /tmp/wheels "/tmp/wheels/$(basename "$whl")"
      in_root "$r" /opt/netshift/bin/python -m compileall -q -f -j0 \
        --invalidation-mode unchecked-hash /opt/netshift
      in_root "$r" ln -s /opt/netshift/bin/netshift /usr/local/bin/netshift
      in_root "$r" /opt/netshift/bin/python -c 'import netshift.cli, webhook.main, controller.main, agent.main'
      in_root "$r" netshift --help
    } > "$work/pip.log" 2>&1 || { tail -20 "$work/pip.log" >&2; exit 1; }
    umount_proc "$r"
    rm -rf "$r/tmp/wheels"
    log "packing $NETSHIFT_IMAGE"
    "${oci[@]}" "$r" "$tar" --name "$NETSHIFT_IMAGE" --entrypoint '["netshift"]' \
      --label "org.opencontainers.image.title=netshift" "${empty[@]}" >&2
    rm -rf --one-file-system "$r"
    prune netshift
    log "netshift image built in $(( SECONDS - t0 ))s"
  fi
  echo "NETSHIFT_IMAGE=$NETSHIFT_IMAGE"; echo "NETSHIFT_TAR=$tar"
}

build_multus() {
  local bindir k tar
  bindir=$("$here/scripts/build-node.sh")
  build_base
  k=$(key "$self_key" "$MULTUS_IMAGE" "$(sha "$bindir/multus-daemon" "$bindir/multus-shim")" "$base")
  tar="$imgs/multus-$k.tar"
  if [[ ! -f $tar ]]; then
    log "building $MULTUS_IMAGE"
    local r="$work/multus"
    cp -a "$base/rootfs" "$r"
    mkdir -p "$r/usr/src/multus-cni/bin"
    cp "$bindir/multus-daemon" "$bindir/multus-shim" "$r/usr/src/multus-cni/bin/"
    "${oci[@]}" "$r" "$tar" --name "$MULTUS_IMAGE" \
      --entrypoint '["/usr/src/multus-cni/bin/multus-daemon"]' \
      --label "org.opencontainers.image.version=$MULTUS_VERSION" "${empty[@]}" >&2
    rm -rf --one-file-system "$r"
    prune multus
  fi
  echo "MULTUS_IMAGE=$MULTUS_IMAGE"; echo "MULTUS_TAR=$tar"
}

which=("$@"); (( ${#which[@]} )) || which=(pause busybox netshift multus)
# This tree's own choice of tars (build/images.env, KEY_TAR=path), read by the local
# cluster before "the newest tar": two checkouts sharing the cache each import their own.
chosen="$here/build/images.env"
mkdir -p "$here/build"
for w in "${which[@]}"; do
  case $w in
    pause|busybox|netshift|multus)
      out=$("build_$w")
      echo "$out"
      tarline=$(grep '_TAR=' <<<"$out")
      { grep -v "^${tarline%%=*}=" "$chosen" 2>/dev/null || true; echo "$tarline"; } > "$chosen.tmp"
      mv "$chosen.tmp" "$chosen"
      ;;
    *) echo "build-images: unknown image $w (pause, busybox, netshift, multus)" >&2; exit 2 ;;
  esac
done
