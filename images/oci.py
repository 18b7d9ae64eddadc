#!/usr/bin/env python3
"""Pack a root filesystem directory into an OCI image layout tar, without Docker.

    oci.py ROOTFS OUT.tar --name docker.io/netshift/netshift:dev \\
        [--entrypoint JSON] [--cmd JSON] [--env K=V ...] [--workdir DIR] \\
        [--label K=V ...] [--empty PATH ...] [--mtime EPOCH] [--no-gzip]

The tar holds `oci-layout`, `index.json` and `blobs/sha256/…`: one layer (the whole of
ROOTFS, gzip by default), the image config and the manifest. The manifest's descriptor in
`index.json` carries `io.containerd.image.name`, so `ctr -n k8s.io images import OUT.tar`
names the image. The same tree always gives the same bytes: entries are sorted, owners are
numeric only, every mtime is clamped to --mtime (default $SOURCE_DATE_EPOCH or 0) and the
gzip header carries no name or time. `--empty PATH` keeps directory PATH but drops what is in
it (caches, docs, /dev, /proc …). Prints `sha256:<manifest digest> <tar size>` on stdout.

Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import stat
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


class Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through it to `sink`."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.sha.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)

    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def walk(root: Path, empty: set[str]) -> Iterator[str]:
    """Relative paths under root, parents first, siblings in byte order."""

    def visit(rel: str) -> Iterator[str]:
        full = root / rel if rel else root
        if rel in empty:
            return
        for name in sorted(os.listdir(full)):
            child = f"{rel}/{name}" if rel else name
            yield child
            if stat.S_ISDIR(os.lstat(root / child).st_mode):
                yield from visit(child)

    yield from visit("")


def write_layer(
    root: Path, out: BinaryIO, empty: set[str], mtime: int, compress: bool
) -> tuple[str, str, int]:
    """Write the layer tar to out; return (diff_id, blob digest, blob size)."""
    blob = Hashing(out)
    gz = (
        gzip.GzipFile(filename="", mode="wb", fileobj=blob, compresslevel=6, mtime=0)
        if compress
        else None
    )
    plain = Hashing(gz if gz is not None else blob)  # type: ignore[arg-type]
    with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in walk(root, empty):
            info = tar.gettarinfo(str(root / rel), arcname=rel)
            if info is None:  # sockets: nothing to carry
                continue
            info.mtime = min(int(info.mtime), mtime)
            info.uname = info.gname = ""
            if info.isreg():
                with open(root / rel, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    if gz is not None:
        gz.close()
    return plain.digest(), blob.digest(), blob.size


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar: tarfile.TarFile, name: str, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mtime, info.mode = tarfile.DIRTYPE, mtime, 0o755
    tar.addfile(info)


def pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"oci.py: {what} wants KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rootfs", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--name", required=True, help="full reference, e.g. docker.io/x/y:tag")
    p.add_argument("--entrypoint", type=json.loads, default=None, help="JSON list")
    p.add_argument("--cmd", type=json.loads, default=None, help="JSON list")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--label", action="append", default=[])
    p.add_argument("--workdir", default="/")
    p.add_argument("--empty", action="append", default=[], help="keep dir, drop its content")
    p.add_argument("--mtime", type=int, default=int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    p.add_argument("--no-gzip", action="store_true")
    a = p.parse_args(argv)

    if not a.rootfs.is_dir():
        raise SystemExit(f"oci.py: {a.rootfs} is not a directory")
    tag = a.name.rsplit("/", 1)[-1].partition(":")[2]
    if not tag:
        raise SystemExit(f"oci.py: --name {a.name!r} needs a tag")
    arch = ARCH.get(platform.machine(), platform.machine())
    empty = {e.strip("/") for e in a.empty}
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(a.mtime))

    a.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=a.out.parent) as layer:
        diff_id, layer_digest, layer_size = write_layer(
            a.rootfs, layer, empty, a.mtime, compress=not a.no_gzip
        )
        cfg: dict[str, Any] = {"WorkingDir": a.workdir}
        env = pairs(a.env, "--env")
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        cfg["Env"] = [f"{k}={v}" for k, v in env.items()]
        if a.entrypoint is not None:
            cfg["Entrypoint"] = a.entrypoint
        if a.cmd is not None:
            cfg["Cmd"] = a.cmd
        if a.label:
            cfg["Labels"] = pairs(a.label, "--label")
        config = canonical(
            {
                "architecture": arch,
                "os": "linux",
                "created": created,
                "config": cfg,
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [{"created": created, "created_by": "netshift images/oci.py"}],
            }
        )
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        manifest = canonical(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [
                    {
                        "mediaType": MEDIA_LAYER + ("" if a.no_gzip else "+gzip"),
                        "digest": layer_digest,
                        "size": layer_size,
                    }
                ],
            }
        )
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        index = canonical(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_INDEX,
                "manifests": [
                    {
                        "mediaType": MEDIA_MANIFEST,
                        "digest": manifest_digest,
                        "size": len(manifest),
                        "platform": {"architecture": arch, "os": "linux"},
                        "annotations": {
                            "io.containerd.image.name": a.name,
                            "org.opencontainers.image.ref.name": tag,
                        },
                    }
                ],
            }
        )

        tmp = a.out.with_name(a.out.name + ".tmp")
        with (
            open(tmp, "wb") as f,
            tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            add_bytes(tar, "oci-layout", canonical({"imageLayoutVersion": "1.0.0"}), a.mtime)
            add_bytes(tar, "index.json", index, a.mtime)
            add_dir(tar, "blobs", a.mtime)
            add_dir(tar, "blobs/sha256", a.mtime)
            blobs = {config_digest: config, manifest_digest: manifest}
            for digest, data in sorted(blobs.items()):
                add_bytes(tar, "blobs/sha256/" + digest.split(":")[1], data, a.mtime)
            layer.seek(0)
            info = tarfile.TarInfo("blobs/sha256/" + layer_digest.split(":")[1])
            info.size, info.mtime, info.mode = layer_size, a.mtime, 0o644
            tar.addfile(info, layer)
        os.replace(tmp, a.out)
    print(manifest_digest, a.out.stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
