"""What the tests make, built one way: unique names, CNI networks, NADs, NetworkProfiles.

Pure builders, plus `create_nad` (one apiserver call). Every tier uses these instead of
writing its own copy of an object.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localcluster.topology import V4, Subnet
from netshift.kube import Kube, nad_path, profile_path

PROFILES = profile_path()


def unique(prefix: str) -> str:
    """`prefix` plus a random suffix, at most 15 bytes (an interface or netns name), so that
    parallel runs and leftovers of an interrupted one never collide."""
    suffix = secrets.token_hex(3)
    name = prefix[: 15 - len(suffix)] + suffix
    assert len(name) <= 15, name
    return name


def bridge_config(
    name: str,
    bridge: str,
    subnet: str | Subnet,
    data_dir: Path,
    *,
    default_route: bool = False,
    is_gateway: bool = False,
    plugin_type: str = "bridge",
    capabilities: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """A bridge + host-local network (a conflist of one plugin), its store in `data_dir`.

    `subnet` is an IPv4 CIDR or a `Subnet` of one or both families; `default_route` makes
    the IPAM hand out a default route for each of them. ipMasq is off: nothing of a test's
    traffic is masqueraded.
    """
    families: list[int] = [V4]
    if isinstance(subnet, str):
        ranges = [[{"subnet": subnet}]]
    else:
        ranges, families = subnet.ranges(), subnet.families
    ipam: dict[str, Any] = {"type": "host-local", "ranges": ranges, "dataDir": str(data_dir)}
    if default_route:
        ipam["routes"] = [{"dst": "0.0.0.0/0" if f == V4 else "::/0"} for f in families]
    plugin: dict[str, Any] = {
        "type": plugin_type,
        "bridge": bridge,
        "isGateway": is_gateway,
        "ipMasq": False,
        "ipam": ipam,
    }
    if capabilities:
        plugin["capabilities"] = dict(capabilities)
    return {"cniVersion": "1.0.0", "name": name, "plugins": [plugin]}


def ptp_config(name: str, subnet: str, data_dir: Path) -> dict[str, Any]:
    """A ptp + host-local IPv4 network with a default route (a veth per pod, the node's
    host route to it), its store in `data_dir`; ipMasq off."""
    ipam = {
        "type": "host-local",
        "ranges": [[{"subnet": subnet}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": str(data_dir),
    }
    plugin = {"type": "ptp", "ipMasq": False, "ipam": ipam}
    return {"cniVersion": "1.0.0", "name": name, "plugins": [plugin]}


def placeholder_config(name: str) -> dict[str, Any]:
    """A well-formed network for tests that only need the NAD to exist (the controller's,
    the webhook's): nothing attaches it. It has a default route: a profile may make it
    the pods' default, and `netshift plan` refuses a default network without one."""
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": f"nst{name[-6:]}",
        "ipam": {"type": "host-local", "subnet": "10.250.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]},
    }


def nad_object(name: str, config: Mapping[str, Any] | str) -> dict[str, Any]:
    """A NetworkAttachmentDefinition; `config` as text is sent as it is (broken on purpose)."""
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name},
        "spec": {"config": config if isinstance(config, str) else json.dumps(config)},
    }


def create_nad(
    kube: Kube, namespace: str, name: str, config: Mapping[str, Any] | str | None = None
) -> Any:
    """Create the NAD `name` in `namespace` (with `placeholder_config` unless given one)."""
    body = nad_object(name, placeholder_config(name) if config is None else config)
    return kube.create(nad_path(namespace), body)


def profile_object(
    name: str,
    *,
    labels: Mapping[str, str],
    default: str | None = None,
    networks: list[dict[str, Any]] | None = None,
    priority: int = 0,
    **rollout: Any,
) -> dict[str, Any]:
    """A NetworkProfile selecting the namespaces with `labels`; rolled out Live unless told."""
    spec: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": dict(labels)},
        "priority": priority,
        "rollout": {"existingPods": "Live", **rollout},
    }
    if default:
        spec["defaultNetwork"] = default
    if networks:
        spec["networks"] = networks
    return {
        "apiVersion": "netshift.io/v1alpha1",
        "kind": "NetworkProfile",
        "metadata": {"name": name},
        "spec": spec,
    }


def namespace_profile(name: str, namespace: str, default: str, **rollout: Any) -> dict[str, Any]:
    """A NetworkProfile of one namespace, its default network `namespace/default`; priority
    1000, so that a broad profile of another test never wins there."""
    return profile_object(
        name,
        labels={"kubernetes.io/metadata.name": namespace},
        default=f"{namespace}/{default}",
        priority=1000,
        **rollout,
    )
