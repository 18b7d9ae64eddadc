"""A network defined per node: the CNI conf file a NAD without ``spec.config`` names (pure).

The NPWG spec: a NetworkAttachmentDefinition whose ``spec.config`` is empty
stands for the CNI configuration of that name on the node. Multus resolves it
in its ``confDir`` (default ``/etc/cni/multus/net.d``; the thick daemon's
``confDir`` setting), and this module decides it the same way, so that a
network netshift hot-plugs is the one Multus would have given the pod at
creation (network-attachment-definition-client ``GetCNIConfigFromFile``, on
libcni ``ConfFiles``):

- one directory, not searched recursively; sub-directories are skipped;
- the files whose extension is exactly ``.conf``, ``.json`` or ``.conflist``,
  in lexical order of their names;
- a file matches when the ``name`` field of its JSON equals the NAD's name:
  the file name itself does not matter (``30-nodenet.conflist`` may hold
  ``"name": "other"``), and the first match wins;
- a ``.conflist`` is a list (``name`` and ``plugins``); a ``.conf`` / ``.json`` is
  one plugin (``type``);
- every file looked at before the match must load as libcni loads it: one that
  cannot be read or parsed ends the lookup with its error, whatever its name —
  Multus fails there too, so the pod would not get that network at creation
  either. (libcni 1.3 can also take a list's plugins from a sub-directory named
  after the network; netshift does not read those.)

The shell reads the files (:mod:`netshift.cni.confdir`) and hands them over
one by one; nothing after the match is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from netshift.cni.config import CniConfigError, ConfList, load_conflist

__all__ = [
    "CONF_EXTENSIONS",
    "DEFAULT_CONF_DIR",
    "NodeConf",
    "NodeConfError",
    "conf_file_names",
    "find_node_conf",
    "per_node_summary",
]

DEFAULT_CONF_DIR = "/etc/cni/multus/net.d"  # Multus's default confDir
CONF_EXTENSIONS = (".conf", ".json", ".conflist")
_LIST_EXTENSION = ".conflist"


class NodeConfError(ValueError):
    """No usable conf file of that name on the node; the message says where it looked."""


@dataclass(frozen=True)
class NodeConf:
    """The conf file that defines a network on one node."""

    path: str  # the file, as the shell named it
    text: str  # its content as written (what the NAD policy judges)
    conflist: ConfList


def _extension(filename: str) -> str:
    """The extension as Go's filepath.Ext sees it: from the last dot of the base name."""
    base = filename.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:] if dot >= 0 else ""


def conf_file_names(names: Iterable[str]) -> list[str]:
    """The entries of a conf dir that are looked at, in the order they are looked at."""
    return sorted(n for n in names if _extension(n) in CONF_EXTENSIONS)


def _where(node: str, conf_dir: str) -> str:
    return f"node {node}" + (f" ({conf_dir})" if conf_dir else "")


def _list_problem(obj: dict[str, Any]) -> str:
    """What keeps libcni from loading a conflist ("" when nothing)."""
    if not isinstance(obj.get("name"), str):
        return 'has no "name"'
    plugins = obj.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        # libcni would also look for plugins in a sub-directory named after the network;
        # netshift does not read those.
        return 'has no "plugins" list'
    for index, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
            return f'has a plugin {index} without "type"'
    return ""


def _conf_problem(obj: dict[str, Any]) -> str:
    """What keeps libcni from loading a single-plugin conf ("" when nothing)."""
    if not isinstance(obj.get("name", ""), str):
        return 'has a "name" that is not a string'
    if not isinstance(obj.get("type"), str) or not obj["type"]:
        return 'has no "type" (a conflist must be in a .conflist file)'
    return ""


def _check_file(path: str, content: str, where: str) -> str:
    """The network name a conf file defines; raises when libcni cannot load it (which ends
    Multus's lookup whatever name the file has)."""
    try:
        obj = json.loads(content)
    except ValueError as err:
        problem = f"is not valid JSON ({err})"
    else:
        if not isinstance(obj, dict):
            problem = "is not a JSON object"
        elif _extension(path) == _LIST_EXTENSION:
            problem = _list_problem(obj)
        else:
            problem = _conf_problem(obj)
    if problem:
        raise NodeConfError(f"conf file {path} on {where} {problem}; Multus stops at it too")
    return str(obj.get("name", ""))


def find_node_conf(
    name: str,
    files: Iterable[tuple[str, str | Exception]],
    *,
    node: str = "",
    conf_dir: str = "",
) -> NodeConf:
    """The first conf file among `files` whose ``name`` is `name`.

    `files` are (path, content) in the order of :func:`conf_file_names`; a content
    that is an exception is a file that could not be read (it ends the lookup, as
    in Multus). `node` and `conf_dir` only make the messages say where.
    """
    where = _where(node or "this node", conf_dir)
    seen = 0
    for path, content in files:
        seen += 1
        if isinstance(content, Exception):
            raise NodeConfError(
                f"conf file {path} on {where} cannot be read ({content}); Multus stops at it too"
            )
        if _check_file(path, content, where) != name:
            continue
        try:
            conflist = load_conflist(content)
        except CniConfigError as err:
            raise NodeConfError(f"conf file {path} on {where}: {err}") from None
        return NodeConf(path=path, text=content, conflist=conflist)
    looked = f"{seen} conf file(s) there" if seen else "no conf file there at all"
    raise NodeConfError(
        f'no conf file {name!r} on {where}: no .conf, .json or .conflist file has "name": '
        f'"{name}" ({looked})'
    )


def per_node_summary(name: str, extensions: Sequence[str] = CONF_EXTENSIONS) -> str:
    """How a NAD without spec.config is resolved, in one line for people."""
    return (
        f'defined per node: the CNI conf file whose "name" is {name!r} in each node\'s Multus '
        f"conf dir ({', '.join(extensions)}; default {DEFAULT_CONF_DIR})"
    )
