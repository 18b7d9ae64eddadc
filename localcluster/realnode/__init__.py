"""The real node of the local cluster (`--node real`), one small module per job:

node.py       RealNode: the Node interface, up (in order) and its files
layout.py     where everything of one node lives under its root (pure)
config.py     containerd's, the kubelet's, kube-proxy's, the cluster network's and
              Multus's configuration, rendered from per-node values (pure)
templates.py  manifests/*.yaml (package data) filled with a node's values
deploy.py     Multus and netshift as pods: fill, apply, wait
images.py     image names (versions.env), archives, import into containerd
processes.py  containerd, kubelet, kube-proxy: argv and health
nodepki.py    the node's certificates and kubeconfigs
runtime.py    ctr and crictl against the node's containerd
hostnet.py    its bridge and the pods' path to the apiserver (DNAT)
shutdown.py   the ordered stop that releases every pod's network
tools.py      where the node's programs come from
machine.py    one real node per machine (the lock, other kubelets)
"""

from localcluster.realnode.config import CLUSTER_NETWORK
from localcluster.realnode.images import image_name
from localcluster.realnode.machine import kubelet_pids, machine_lock
from localcluster.realnode.node import RealNode, missing_prerequisites

__all__ = [
    "CLUSTER_NETWORK",
    "RealNode",
    "image_name",
    "kubelet_pids",
    "machine_lock",
    "missing_prerequisites",
]
