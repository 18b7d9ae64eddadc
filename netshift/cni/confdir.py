"""Reads a node's CNI conf dir for the networks defined per node (the shell of netshift.cni.nodeconf).

Only the listing and the file reads are here; which files count, in which order,
and which one matches are :mod:`netshift.cni.nodeconf`'s rules. Files are read
lazily, one at a time, so nothing after the matching file is opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from netshift.cni.nodeconf import (
    DEFAULT_CONF_DIR,
    NodeConf,
    NodeConfError,
    conf_file_names,
    find_node_conf,
)

__all__ = ["NodeConfDir"]


@dataclass(frozen=True)
class NodeConfDir:
    """One node's Multus conf dir."""

    path: str = DEFAULT_CONF_DIR
    node: str = ""  # only for the messages

    def files(self) -> Iterator[tuple[str, str | Exception]]:
        """(path, content or the error reading it) of each conf file, in lookup order."""
        try:
            with os.scandir(self.path) as it:
                # A symlink is listed as what it is, not what it points to (Go's DirEntry):
                # one to a directory is then a file that cannot be read.
                names = [e.name for e in it if not e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return  # as libcni: no directory, no networks
        except OSError as err:
            raise NodeConfError(
                f"the conf dir {self.path} on node {self.node or '?'} cannot be read: "
                f"{err.strerror or err}"
            ) from None
        for name in conf_file_names(names):
            path = os.path.join(self.path, name)
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as err:
                yield path, err
            else:
                yield path, text

    def lookup(self, name: str) -> NodeConf:
        """The conf file that defines network `name` here (raises NodeConfError)."""
        return find_node_conf(name, self.files(), node=self.node, conf_dir=self.path)
