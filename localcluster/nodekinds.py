"""The kinds of node `--node` chooses from, and how each is made."""

from __future__ import annotations

from pathlib import Path

from localcluster.node import Node, NodeFactory
from localcluster.plane import Plane
from localcluster.realnode import RealNode
from localcluster.simnode import SimNode
from localcluster.state import NodeSpec, Ports

KINDS: dict[str, NodeFactory] = {"real": RealNode, "sim": SimNode}
NAMES = tuple(KINDS)


def make(spec: NodeSpec, plane: Plane, ports: Ports, root: Path) -> Node:
    try:
        factory = KINDS[spec.kind]
    except KeyError:
        raise ValueError(f"no node kind {spec.kind!r}; one of {', '.join(NAMES)}") from None
    return factory(spec, plane, ports, root)
