"""What goes wrong in the local cluster, said so that a person can act on it."""

from __future__ import annotations


class ClusterError(RuntimeError):
    """The local cluster could not do what was asked (the message says why and what to do)."""


class NodeError(ClusterError):
    """A node of the local cluster could not start, or could not be reached."""
