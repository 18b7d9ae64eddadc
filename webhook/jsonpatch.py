"""JSONPatch (RFC 6902) operations that change an object's annotations or labels."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def escape_pointer_token(token: str) -> str:
    """Escape one JSON Pointer (RFC 6901) reference token: "~" → "~0", "/" → "~1"."""
    return token.replace("~", "~0").replace("/", "~1")


def annotation_patch(
    annotations: Mapping[str, str] | None,
    changes: Mapping[str, str | None],
    *,
    has_metadata: bool = True,
) -> list[dict[str, Any]]:
    """Operations that apply `changes` (key → value, None deletes) to a pod's annotations.

    `annotations` is the pod's current map, or None when the pod has none: a JSON
    Pointer cannot add a key below a missing map, so the whole map is added then.
    """
    return metadata_map_patch("annotations", annotations, changes, has_metadata=has_metadata)


def label_patch(
    labels: Mapping[str, str] | None,
    changes: Mapping[str, str | None],
    *,
    has_metadata: bool = True,
) -> list[dict[str, Any]]:
    """`annotation_patch` for metadata.labels."""
    return metadata_map_patch("labels", labels, changes, has_metadata=has_metadata)


def metadata_map_patch(
    field: str,
    current: Mapping[str, str] | None,
    changes: Mapping[str, str | None],
    *,
    has_metadata: bool = True,
) -> list[dict[str, Any]]:
    """Operations that apply `changes` to the map metadata.<field> (None: the map is absent)."""
    if current is None:
        added = {k: v for k, v in sorted(changes.items()) if v is not None}
        if not added:
            return []
        if not has_metadata:
            return [{"op": "add", "path": "/metadata", "value": {field: added}}]
        return [{"op": "add", "path": f"/metadata/{field}", "value": added}]
    ops: list[dict[str, Any]] = []
    for key, value in sorted(changes.items()):
        path = f"/metadata/{field}/" + escape_pointer_token(key)
        if value is None:
            if key in current:
                ops.append({"op": "remove", "path": path})
        elif key not in current:
            ops.append({"op": "add", "path": path, "value": value})
        elif current[key] != value:
            ops.append({"op": "replace", "path": path, "value": value})
    return ops


def unescape_pointer_token(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(document: Any, ops: list[dict[str, Any]]) -> Any:
    """Apply add/remove/replace/test operations (what this webhook emits) to a copy.

    The apiserver applies the real thing; this lets tests and reinvocation
    checks see the pod the apiserver would see.
    """
    doc = copy.deepcopy(document)
    for op in ops:
        tokens = [unescape_pointer_token(t) for t in op["path"].split("/")[1:]]
        parent = doc
        for token in tokens[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last = tokens[-1]
        key: Any = int(last) if isinstance(parent, list) and last != "-" else last
        kind = op["op"]
        if kind == "test":
            if parent[key] != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        elif kind == "remove":
            del parent[key]
        elif kind == "replace":
            if not isinstance(parent, list) and key not in parent:
                raise KeyError(op["path"])
            parent[key] = op["value"]
        elif kind == "add":
            if isinstance(parent, list):
                parent.insert(len(parent) if key == "-" else key, op["value"])
            else:
                parent[key] = op["value"]
        else:
            raise ValueError(f"unsupported op {kind!r}")
    return doc
