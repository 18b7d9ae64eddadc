"""The real node's images: names pinned in versions.env, archives built by
scripts/build-images.sh, imported into containerd's k8s.io namespace."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localcluster import binaries
from localcluster.errors import NodeError
from localcluster.realnode.runtime import Runtime

# The keys in versions.env of every image the node runs, its sandbox (pause) image first.
IMAGES = ("PAUSE_IMAGE", "BUSYBOX_IMAGE", "NETSHIFT_IMAGE", "MULTUS_IMAGE")
# Where scripts/build-images.sh puts the Multus binaries in its image.
MULTUS_BIN = "/usr/src/multus-cni/bin"


def image_name(key: str) -> str:
    """An image reference pinned in versions.env (PAUSE_IMAGE, BUSYBOX_IMAGE, ...)."""
    try:
        return binaries.pinned_versions()[key]
    except KeyError:
        raise NodeError(
            f"{key} is not pinned in {binaries.REPO / 'versions.env'}; "
            "it names the image scripts/build-images.sh builds"
        ) from None


def images_dir() -> Path:
    return binaries.cache_dir() / "images"


def image_tar(key: str) -> Path | None:
    """The OCI archive scripts/build-images.sh last built for this checkout (build/images.env),
    else the newest it wrote for one image (``<name>-<key over its inputs>.tar``)."""
    short = image_name(key).rsplit("/", 1)[-1].split(":", 1)[0]
    with contextlib.suppress(OSError):
        for line in (binaries.REPO / "build" / "images.env").read_text().splitlines():
            name, _, value = line.partition("=")
            if name == f"{short.upper()}_TAR" and Path(value).is_file():
                return Path(value)
    found = [p for p in images_dir().glob(f"{short}-*.tar") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def missing_images() -> list[str]:
    return [
        f"no image archive for {image_name(key)} in {images_dir()}; run scripts/build-images.sh"
        for key in IMAGES
        if image_tar(key) is None
    ]


def import_images(runtime: Runtime, stamp_file: Path, say: Callable[[str], None]) -> list[str]:
    """Import the OCI archives into containerd's k8s.io namespace (only new or changed
    ones); return the keys of images that replaced an older import of the same name."""
    try:
        stamps: dict[str, list[Any]] = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        stamps = {}
    present = set(runtime.ctr("images", "ls", "-q").stdout.split())
    replaced = []
    for key in IMAGES:
        tar = image_tar(key)
        if tar is None:
            raise NodeError(f"no image archive for {image_name(key)}; run scripts/build-images.sh")
        st = tar.stat()
        stamp = [str(tar), st.st_size, st.st_mtime]
        if stamps.get(key) == stamp and image_name(key) in present:
            continue
        started = time.monotonic()
        runtime.ctr("images", "import", "--snapshotter=overlayfs", str(tar), timeout=300)
        if key in stamps:
            replaced.append(key)
        stamps[key] = stamp
        stamp_file.write_text(json.dumps(stamps))
        say(f"image {tar.name}: imported in {time.monotonic() - started:.1f}s")
    return replaced
