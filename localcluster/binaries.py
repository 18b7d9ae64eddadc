"""Where the Kubernetes binaries come from: $KUBEBUILDER_ASSETS, the build cache, or PATH.

The versions are pinned in `versions.env` at the top of the repository; the
build script `scripts/build-kube.sh` fills the cache that this module reads.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


def pinned_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in (REPO / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key] = value
    return versions


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "netshift"
    return Path(os.environ.get("NETSHIFT_CACHE", str(default)))


def cached_bin_dir() -> Path:
    v = pinned_versions()
    return cache_dir() / "bin" / f"kube-{v['KUBE_VERSION']}-etcd-{v['ETCD_VERSION']}"


class MissingBinary(RuntimeError):
    pass


def helm() -> str:
    """The pinned helm (HELM_VERSION in versions.env), built by scripts/build-helm.sh."""
    version = pinned_versions()["HELM_VERSION"]
    path = cache_dir() / "bin" / f"helm-{version}" / "helm"
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    raise MissingBinary(
        f"helm {version} not found at {path}; run scripts/build-helm.sh (it builds the pinned "
        "version from the Go module proxy)"
    )


def find(name: str) -> str:
    """Locate one binary; the project's own pinned build wins over whatever PATH holds."""
    candidates = []
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        candidates.append(Path(assets) / name)
    candidates.append(cached_bin_dir() / name)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    if name != "kubectl":  # a random kubectl on PATH may be any version; only ours is trusted
        found = shutil.which(name)
        if found:
            return found
    raise MissingBinary(
        f"{name} not found in $KUBEBUILDER_ASSETS, {cached_bin_dir()} or PATH; "
        f"run scripts/build-kube.sh (it builds the pinned versions from the Go module proxy)"
    )
