"""The Network Plumbing WG multi-network annotations as typed values.

Pure functions only: parse and format ``k8s.v1.cni.cncf.io/networks``,
``v1.multus-cni.io/default-network`` and ``k8s.v1.cni.cncf.io/network-status``,
and decide which interface every requested network gets on a pod.

Every parse error is an :class:`AnnotationError` whose text names the
annotation, the element (0-based index and name), the field, what is wrong and
what would be accepted, because it ends up verbatim in webhook denials and pod
events that a person has to act on.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from netshift.keys import DEFAULT_NETWORK_KEY, NETWORK_STATUS_KEY, NETWORKS_KEY

# Hostile or runaway values are refused before any real work is done on them.
MAX_NETWORKS_BYTES: Final = 64 * 1024
MAX_NETWORKS_ELEMENTS: Final = 64
# network-status is written by Multus and the agent, not by users; only the
# Kubernetes limit on all annotations of an object applies.
MAX_STATUS_BYTES: Final = 256 * 1024

_LABEL_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN_RE: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_HEX_PAIRS_RE: Final = re.compile(r"[0-9A-Fa-f]{2}(?:([:-])[0-9A-Fa-f]{2})(?:\1[0-9A-Fa-f]{2})*")
_HEX_QUADS_RE: Final = re.compile(r"[0-9A-Fa-f]{4}(?:\.[0-9A-Fa-f]{4})+")

_LABEL_EXPECTED: Final = (
    "a DNS-1123 label (1-63 characters: lowercase letters, digits and '-', "
    "starting and ending with a letter or digit)"
)
_INTERFACE_EXPECTED: Final = (
    'a Linux interface name (1-15 bytes of printable characters, not "." or "..", '
    'no "/", ":" or whitespace)'
)
_COMMA_ITEM_EXPECTED: Final = (
    '"name", "namespace/name", "name@interface" or "namespace/name@interface"'
)
_REF_EXPECTED: Final = '"name" or "namespace/name" (each a DNS-1123 label)'
_COMMA_FORM_SPECIAL: Final = '[{",@'
_MAX_SHOWN: Final = 64
_MAX_INT64: Final = 2**63 - 1


class AnnotationError(ValueError):
    """A malformed multi-network annotation, described for a human.

    ``index`` is the 0-based position of the offending element (``None`` when
    the whole value is wrong), ``element`` its network name when known.
    """

    def __init__(
        self,
        annotation: str,
        index: int | None = None,
        element: str | None = None,
        field: str | None = None,
        problem: str = "is invalid",
        expected: str = "",
    ) -> None:
        self.annotation = annotation
        self.index = index
        self.element = element
        self.field = field
        self.problem = problem
        self.expected = expected
        super().__init__(self._message())

    def _message(self) -> str:
        parts = [self.annotation]
        if self.index is not None:
            where = f"element {self.index}"
            if self.element:
                where += f" ({_show(self.element)})"
            parts.append(where)
        elif self.element:
            parts.append(_show(self.element))
        if self.field:
            parts.append(f'field "{self.field}"')
        text = ": ".join(parts) + ": " + self.problem
        if self.expected:
            text += f"; expected {self.expected}"
        return text


@dataclass(frozen=True)
class NetworkRef:
    """A NetworkAttachmentDefinition reference, always with its namespace."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        }
        if self.host_ip is not None:
            out["hostIP"] = self.host_ip
        return out


@dataclass(frozen=True)
class Bandwidth:
    ingress_rate: int | None = None
    ingress_burst: int | None = None
    egress_rate: int | None = None
    egress_burst: int | None = None

    def to_json(self) -> dict[str, Any]:
        pairs = (
            ("ingressRate", self.ingress_rate),
            ("ingressBurst", self.ingress_burst),
            ("egressRate", self.egress_rate),
            ("egressBurst", self.egress_burst),
        )
        return {key: value for key, value in pairs if value is not None}


@dataclass(frozen=True)
class NetworkSelection:
    """One element of the networks annotation, validated."""

    name: str
    namespace: str | None = None
    interface: str | None = None
    ips: tuple[str, ...] = ()
    mac: str | None = None
    default_route: tuple[str, ...] = ()
    port_mappings: tuple[PortMapping, ...] = ()
    bandwidth: Bandwidth | None = None
    # Kept as canonical JSON text (sorted keys) so that the selection stays hashable.
    cni_args: str | None = None
    infiniband_guid: str | None = None
    ipam_claim_reference: str | None = None

    def ref(self, pod_namespace: str) -> NetworkRef:
        return NetworkRef(self.namespace or pod_namespace, self.name)

    def cni_args_dict(self) -> dict[str, Any]:
        if self.cni_args is None:
            return {}
        loaded: dict[str, Any] = json.loads(self.cni_args)
        return loaded

    def to_json(self) -> dict[str, Any]:
        """The selection element as JSON: every field that is set, none that is empty."""
        fields: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "interface": self.interface,
            "ips": list(self.ips) or None,
            "mac": self.mac,
            "default-route": list(self.default_route) or None,
            "portMappings": [mapping.to_json() for mapping in self.port_mappings] or None,
            "bandwidth": None if self.bandwidth is None else self.bandwidth.to_json(),
            "cni-args": None if self.cni_args is None else self.cni_args_dict(),
            "infiniband-guid": self.infiniband_guid,
            "ipam-claim-reference": self.ipam_claim_reference,
        }
        return {key: value for key, value in fields.items() if value is not None}


# --- small validators: each returns what is wrong, or None -------------------


def _show(value: str) -> str:
    """Quote a user value for a message; long or odd values stay readable."""
    if len(value) > _MAX_SHOWN:
        return json.dumps(value[:_MAX_SHOWN]) + f"... ({len(value)} characters)"
    return json.dumps(value)


def describe_value(value: object) -> str:
    """Name the JSON type of a value that had the wrong one, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if isinstance(value, list):
        return "a JSON list"
    return "a JSON object"


def _label_problem(value: str) -> str | None:
    if not value:
        return "is empty"
    if len(value) > 63:
        return f"{_show(value)} is {len(value)} characters long"
    if _LABEL_RE.fullmatch(value):
        return None
    bad = next(
        (c for c in value if not (c.isascii() and (c.islower() or c.isdigit() or c == "-"))), None
    )
    if bad is not None:
        kind = "the uppercase letter" if bad.isupper() else "the character"
        return f"{_show(value)} contains {kind} {_show(bad)}"
    return f"{_show(value)} must start and end with a letter or digit"


def _interface_problem(value: str) -> str | None:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size == 0:
        return "is empty"
    if size > 15:
        return f"{_show(value)} is {size} bytes long"
    if value in (".", ".."):
        return f"{_show(value)} is reserved"
    if any(c.isspace() for c in value):
        return f"{_show(value)} contains whitespace"
    for bad in ("/", ":"):
        if bad in value:
            return f"{_show(value)} contains {_show(bad)}"
    if not value.isprintable():
        return f"{_show(value)} contains a non-printable character"
    return None


def _ip_problem(value: str, allow_prefix: bool) -> str | None:
    address, slash, prefix = value.partition("/")
    if slash and not allow_prefix:
        return f"{_show(value)} has a prefix length"
    # ipaddress also takes a netmask after "/"; CNI wants a prefix length.
    if slash and not (prefix.isascii() and prefix.isdigit()):
        return f"{_show(value)} does not end in a prefix length"
    try:
        if slash:
            ipaddress.ip_interface(value)
        else:
            ipaddress.ip_address(address)
    except ValueError:
        return f"{_show(value)} is not an IP address"
    return None


def _hardware_address(value: str, size: int) -> str | None:
    """Lowercase colon form of a ``size``-byte address, or None if it is not one.

    Accepts ``aa:bb:..``, ``aa-bb-..`` and ``aabb.ccdd..`` like Go's net.ParseMAC.
    """
    if _HEX_PAIRS_RE.fullmatch(value):
        octets = re.split("[:-]", value)
    elif _HEX_QUADS_RE.fullmatch(value):
        octets = [quad[i : i + 2] for quad in value.split(".") for i in (0, 2)]
    else:
        return None
    if len(octets) != size:
        return None
    return ":".join(octet.lower() for octet in octets)


# --- the networks annotation -------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """Where in an annotation a parser is, so that errors can say so."""

    annotation: str
    index: int | None = None
    element: str | None = None

    def error(self, field: str | None, problem: str, expected: str = "") -> AnnotationError:
        return AnnotationError(self.annotation, self.index, self.element, field, problem, expected)


_SELECTION_FIELDS: Final = (
    "name",
    "namespace",
    "interface",
    "ips",
    "mac",
    "default-route",
    "portMappings",
    "bandwidth",
    "cni-args",
    "infiniband-guid",
    "ipam-claim-reference",
)
_PORT_MAPPING_FIELDS: Final = ("hostPort", "containerPort", "protocol", "hostIP")
_BANDWIDTH_FIELDS: Final = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
_PROTOCOLS: Final = ("tcp", "udp", "sctp")


def one_of(names: Sequence[str]) -> str:
    """'one of "a", "b"', for error messages."""
    return "one of " + ", ".join(f'"{name}"' for name in names)


def _reject_unknown(
    raw: dict[str, Any], accepted: Sequence[str], where: _Where, prefix: str
) -> None:
    for key in raw:
        if key not in accepted:
            raise where.error(prefix + key, "is not a known field", one_of(accepted))


def _string(raw: object, where: _Where, name: str, expected: str) -> str:
    if not isinstance(raw, str):
        raise where.error(name, f"is {describe_value(raw)}", expected)
    return raw


def _string_list(raw: object, where: _Where, name: str, expected: str) -> list[str]:
    if not isinstance(raw, list):
        raise where.error(name, f"is {describe_value(raw)}", f"a JSON list of {expected}")
    for position, item in enumerate(raw):
        if not isinstance(item, str):
            raise where.error(f"{name}[{position}]", f"is {describe_value(item)}", expected)
    return raw


def _integer(raw: object, where: _Where, name: str, low: int, high: int) -> int:
    expected = f"an integer from {low} to {high}"
    # bool is an int in Python but never a number in JSON.
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise where.error(name, f"is {describe_value(raw)}", expected)
    if not low <= raw <= high:
        raise where.error(name, f"{raw} is out of range", expected)
    return raw


def _label(raw: object, where: _Where, name: str) -> str:
    value = _string(raw, where, name, _LABEL_EXPECTED)
    problem = _label_problem(value)
    if problem:
        raise where.error(name, problem, _LABEL_EXPECTED)
    return value


def _interface(raw: object, where: _Where) -> str:
    value = _string(raw, where, "interface", _INTERFACE_EXPECTED)
    problem = _interface_problem(value)
    if problem:
        raise where.error("interface", problem, _INTERFACE_EXPECTED)
    return value


def _ips(raw: object, where: _Where, name: str, allow_prefix: bool) -> tuple[str, ...]:
    expected = "IP addresses or CIDRs (10.1.2.3/24)" if allow_prefix else "IP addresses"
    values = _string_list(raw, where, name, expected)
    for position, value in enumerate(values):
        problem = _ip_problem(value, allow_prefix)
        if problem:
            raise where.error(f"{name}[{position}]", problem, expected)
    return tuple(values)


def _mac(raw: object, where: _Where) -> str:
    expected = 'a unicast 6-byte MAC address such as "02:00:00:00:00:01"'
    value = _string(raw, where, "mac", expected)
    mac = _hardware_address(value, 6)
    if mac is None:
        raise where.error("mac", f"{_show(value)} is not a 6-byte MAC address", expected)
    first = int(mac[:2], 16)
    # The kernel refuses multicast and all-zero addresses on an interface.
    if first & 1:
        raise where.error("mac", f"{_show(value)} is a multicast address", expected)
    if mac == "00:00:00:00:00:00":
        raise where.error("mac", f"{_show(value)} is all zeros", expected)
    return mac


def _infiniband_guid(raw: object, where: _Where) -> str:
    expected = 'an 8-byte GUID such as "c2:11:22:33:44:55:66:77"'
    value = _string(raw, where, "infiniband-guid", expected)
    guid = _hardware_address(value, 8)
    if guid is None:
        raise where.error("infiniband-guid", f"{_show(value)} is not an 8-byte GUID", expected)
    return guid


def _claim_reference(raw: object, where: _Where) -> str:
    expected = "the name of an IPAMClaim (a DNS-1123 subdomain, at most 253 characters)"
    value = _string(raw, where, "ipam-claim-reference", expected)
    if len(value) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(value):
        raise where.error("ipam-claim-reference", f"{_show(value)} is not a valid name", expected)
    return value


def _port_mapping(raw: object, where: _Where, position: int) -> PortMapping:
    name = f"portMappings[{position}]"
    if not isinstance(raw, dict):
        raise where.error(
            name, f"is {describe_value(raw)}", 'an object with "hostPort" and "containerPort"'
        )
    _reject_unknown(raw, _PORT_MAPPING_FIELDS, where, name + ".")
    for required in ("hostPort", "containerPort"):
        if required not in raw:
            raise where.error(f"{name}.{required}", "is missing", "a port number from 1 to 65535")
    protocol = "tcp"
    if raw.get("protocol") is not None:
        text = _string(raw["protocol"], where, f"{name}.protocol", one_of(_PROTOCOLS))
        protocol = text.lower()
        if protocol not in _PROTOCOLS:
            raise where.error(
                f"{name}.protocol", f"{_show(text)} is not supported", one_of(_PROTOCOLS)
            )
    host_ip = None
    if raw.get("hostIP") is not None:
        host_ip = _string(raw["hostIP"], where, f"{name}.hostIP", "an IP address")
        problem = _ip_problem(host_ip, allow_prefix=False)
        if problem:
            raise where.error(f"{name}.hostIP", problem, "an IP address")
    return PortMapping(
        host_port=_integer(raw["hostPort"], where, f"{name}.hostPort", 1, 65535),
        container_port=_integer(raw["containerPort"], where, f"{name}.containerPort", 1, 65535),
        protocol=protocol,
        host_ip=host_ip,
    )


def _port_mappings(raw: object, where: _Where) -> tuple[PortMapping, ...]:
    if not isinstance(raw, list):
        raise where.error(
            "portMappings", f"is {describe_value(raw)}", "a JSON list of port mappings"
        )
    return tuple(_port_mapping(item, where, position) for position, item in enumerate(raw))


def _bandwidth(raw: object, where: _Where) -> Bandwidth:
    if not isinstance(raw, dict):
        raise where.error(
            "bandwidth", f"is {describe_value(raw)}", "an object with " + one_of(_BANDWIDTH_FIELDS)
        )
    _reject_unknown(raw, _BANDWIDTH_FIELDS, where, "bandwidth.")
    values = [
        None
        if raw.get(key) is None
        else _integer(raw[key], where, f"bandwidth.{key}", 0, _MAX_INT64)
        for key in _BANDWIDTH_FIELDS
    ]
    return Bandwidth(*values)


def _cni_args(raw: object, where: _Where) -> str:
    if not isinstance(raw, dict):
        raise where.error("cni-args", f"is {describe_value(raw)}", "a JSON object")
    return json.dumps(raw, sort_keys=True, separators=(",", ":"))


def _selection_from_json(raw: object, where: _Where) -> NetworkSelection:
    if not isinstance(raw, dict):
        raise where.error(None, f"is {describe_value(raw)}", 'a JSON object with at least "name"')
    if isinstance(raw.get("name"), str):
        where = _Where(where.annotation, where.index, raw["name"])
    _reject_unknown(raw, _SELECTION_FIELDS, where, "")
    if raw.get("name") is None:
        raise where.error("name", "is missing", "the name of a NetworkAttachmentDefinition")
    # A JSON null means "not set", as it does for the Go types Multus uses.
    present = {key: value for key, value in raw.items() if value is not None}
    selection = NetworkSelection(
        name=_label(present["name"], where, "name"),
        namespace=_label(present["namespace"], where, "namespace")
        if "namespace" in present
        else None,
        interface=_interface(present["interface"], where) if "interface" in present else None,
        ips=_ips(present["ips"], where, "ips", allow_prefix=True) if "ips" in present else (),
        mac=_mac(present["mac"], where) if "mac" in present else None,
        default_route=(
            _ips(present["default-route"], where, "default-route", allow_prefix=False)
            if "default-route" in present
            else ()
        ),
        port_mappings=_port_mappings(present["portMappings"], where)
        if "portMappings" in present
        else (),
        bandwidth=_bandwidth(present["bandwidth"], where) if "bandwidth" in present else None,
        cni_args=_cni_args(present["cni-args"], where) if "cni-args" in present else None,
        infiniband_guid=(
            _infiniband_guid(present["infiniband-guid"], where)
            if "infiniband-guid" in present
            else None
        ),
        ipam_claim_reference=(
            _claim_reference(present["ipam-claim-reference"], where)
            if "ipam-claim-reference" in present
            else None
        ),
    )
    if selection.ips and selection.ipam_claim_reference is not None:
        raise where.error(
            "ipam-claim-reference",
            'is set together with "ips"',
            'either "ips" or "ipam-claim-reference", not both',
        )
    return selection


def _selection_from_comma(item: str, where: _Where) -> NetworkSelection:
    reference, at, interface = item.partition("@")
    namespace, slash, name = reference.rpartition("/")
    where = _Where(where.annotation, where.index, name or None)
    if "@" in interface:
        raise where.error(
            "interface", f'{_show(item)} contains more than one "@"', _COMMA_ITEM_EXPECTED
        )
    if "/" in namespace:
        raise where.error(
            "namespace", f'{_show(item)} contains more than one "/"', _COMMA_ITEM_EXPECTED
        )
    return NetworkSelection(
        name=_label(name, where, "name"),
        namespace=_label(namespace, where, "namespace") if slash else None,
        interface=_interface(interface, where) if at else None,
    )


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKeyError(key)
        seen[key] = value
    return seen


class _DuplicateKeyError(ValueError):
    pass


class _ConstantError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    # Python's json module reads NaN and Infinity; JSON and Go do not.
    raise _ConstantError(f"{name} is not a JSON number")


def _load_json(value: str, annotation: str, expected: str) -> Any:
    """``json.loads`` that turns every failure into an AnnotationError.

    Duplicate keys are refused: which one would win differs between parsers.
    """
    try:
        return json.loads(
            value, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
        )
    except _DuplicateKeyError as err:
        raise AnnotationError(
            annotation,
            problem=f"a JSON object has the key {_show(str(err))} twice",
            expected=expected,
        ) from None
    except json.JSONDecodeError as err:
        problem = f"is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        raise AnnotationError(annotation, problem=problem, expected=expected) from None
    except RecursionError:
        raise AnnotationError(
            annotation, problem="is nested too deeply", expected=expected
        ) from None
    except _ConstantError as err:
        raise AnnotationError(
            annotation, problem=f"is not valid JSON ({err})", expected=expected
        ) from None
    except ValueError:  # Python refuses integers of thousands of digits
        problem = "contains a number with too many digits"
        raise AnnotationError(annotation, problem=problem, expected=expected) from None


def _check_size(value: str, annotation: str, limit: int) -> None:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise AnnotationError(
            annotation, problem=f"is {size} bytes long", expected=f"at most {limit} bytes"
        )


def _check_count(count: int, annotation: str, limit: int) -> None:
    if count > limit:
        raise AnnotationError(
            annotation, problem=f"has {count} elements", expected=f"at most {limit} elements"
        )


def _check_unique(selections: Sequence[NetworkSelection], annotation: str) -> None:
    """At most one default-route carrier and no interface name used twice."""
    route_owner: int | None = None
    interface_owner: dict[str, int] = {}
    for index, selection in enumerate(selections):
        where = _Where(annotation, index, selection.name)
        if selection.default_route:
            if route_owner is not None:
                first = selections[route_owner].name
                raise where.error(
                    "default-route",
                    f"element {route_owner} ({_show(first)}) already sets default-route",
                    "at most one element with default-route",
                )
            route_owner = index
        if selection.interface is not None:
            owner = interface_owner.setdefault(selection.interface, index)
            if owner != index:
                first = selections[owner].name
                raise where.error(
                    "interface",
                    f"{_show(selection.interface)} is already used by element {owner} ({_show(first)})",
                    "a different interface name for every element",
                )


def parse_networks(value: str) -> list[NetworkSelection]:
    """Parse the networks annotation, comma or JSON form.

    An empty or whitespace-only value is no networks. The value is JSON when
    it contains ``[``, ``{`` or ``"`` (as in Multus); JSON must be a list.
    """
    _check_size(value, NETWORKS_KEY, MAX_NETWORKS_BYTES)
    if not value.strip():
        return []
    if any(c in value for c in '[{"'):  # the spec's rule for telling JSON from the comma form
        expected = "a JSON list of network selection objects"
        loaded = _load_json(value, NETWORKS_KEY, expected)
        if not isinstance(loaded, list):
            raise AnnotationError(
                NETWORKS_KEY, problem=f"is {describe_value(loaded)}", expected=expected
            )
        _check_count(len(loaded), NETWORKS_KEY, MAX_NETWORKS_ELEMENTS)
        selections = [
            _selection_from_json(raw, _Where(NETWORKS_KEY, index))
            for index, raw in enumerate(loaded)
        ]
    else:
        items = value.split(",")
        _check_count(len(items), NETWORKS_KEY, MAX_NETWORKS_ELEMENTS)
        selections = []
        for index, item in enumerate(items):
            where = _Where(NETWORKS_KEY, index)
            if not item.strip():
                raise where.error(None, "is empty (a stray comma?)", _COMMA_ITEM_EXPECTED)
            selections.append(_selection_from_comma(item.strip(), where))
    _check_unique(selections, NETWORKS_KEY)
    return selections


def _is_simple(selection: NetworkSelection) -> bool:
    """True when the comma form can express this element."""
    # Linux allows "[", "{", '"', "," and "@" in an interface name; the comma form does not.
    interface = selection.interface or ""
    if any(c in interface for c in _COMMA_FORM_SPECIAL):
        return False
    return selection == NetworkSelection(selection.name, selection.namespace, selection.interface)


def _comma_item(selection: NetworkSelection) -> str:
    text = (
        selection.name if selection.namespace is None else f"{selection.namespace}/{selection.name}"
    )
    return text if selection.interface is None else f"{text}@{selection.interface}"


def format_networks(selections: Sequence[NetworkSelection]) -> str:
    """The annotation text: comma form when it can say everything, else JSON."""
    if all(_is_simple(selection) for selection in selections):
        return ", ".join(_comma_item(selection) for selection in selections)
    return json.dumps([selection.to_json() for selection in selections])


def parse_ref(
    value: str, default_namespace: str, *, annotation: str = "network reference"
) -> NetworkRef:
    """``name`` or ``namespace/name``; a bare name lives in ``default_namespace``.

    ``annotation`` names the source of the text in error messages.
    """
    text = value.strip()
    namespace, slash, name = text.rpartition("/")
    where = _Where(annotation)
    if "/" in namespace:
        raise where.error(None, f'{_show(value)} contains more than one "/"', _REF_EXPECTED)
    if "@" in text:
        raise where.error(None, f'{_show(value)} names an interface ("@")', _REF_EXPECTED)
    return NetworkRef(
        namespace=_label(namespace, where, "namespace") if slash else default_namespace,
        name=_label(name, where, "name"),
    )


def parse_default_network(value: str, pod_namespace: str) -> NetworkRef:
    """The default-network annotation; a bare name resolves in the pod's namespace."""
    return parse_ref(value, pod_namespace, annotation=DEFAULT_NETWORK_KEY)


# --- the network-status annotation -------------------------------------------


@dataclass
class NetworkStatusEntry:
    name: str
    interface: str | None = None
    ips: list[str] = field(default_factory=list)
    mac: str | None = None
    mtu: int | None = None
    default: bool = False
    dns: dict[str, Any] | None = None
    gateway: list[str] | None = None
    # Fields this model does not know (device-info, default-route, ...), kept
    # so that rewriting the annotation never drops what another writer put there.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.interface is not None:
            out["interface"] = self.interface
        if self.ips:
            out["ips"] = list(self.ips)
        if self.mac is not None:
            out["mac"] = self.mac
        if self.mtu is not None:
            out["mtu"] = self.mtu
        if self.default:
            out["default"] = True
        if self.dns is not None:
            out["dns"] = self.dns
        if self.gateway is not None:
            out["gateway"] = list(self.gateway)
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


_STATUS_FIELDS: Final = ("name", "interface", "ips", "mac", "mtu", "default", "dns", "gateway")


def _optional(raw: dict[str, Any], key: str, read: Callable[[object], Any]) -> Any:
    value = raw.get(key)
    return None if value is None else read(value)


def _status_entry(raw: object, where: _Where) -> NetworkStatusEntry:
    if not isinstance(raw, dict):
        raise where.error(None, f"is {describe_value(raw)}", 'a JSON object with at least "name"')
    if "name" not in raw:
        raise where.error("name", "is missing", 'the network as "namespace/name"')
    name = _string(raw["name"], where, "name", 'the network as "namespace/name"')
    where = _Where(where.annotation, where.index, name)

    def mtu(value: object) -> int:
        return _integer(value, where, "mtu", 0, 2**31 - 1)

    def default(value: object) -> bool:
        if not isinstance(value, bool):
            raise where.error("default", f"is {describe_value(value)}", "true or false")
        return value

    def dns(value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise where.error("dns", f"is {describe_value(value)}", "a JSON object")
        return value

    return NetworkStatusEntry(
        name=name,
        interface=_optional(
            raw, "interface", lambda v: _string(v, where, "interface", "an interface name")
        ),
        ips=_optional(raw, "ips", lambda v: list(_string_list(v, where, "ips", "IP addresses")))
        or [],
        mac=_optional(raw, "mac", lambda v: _string(v, where, "mac", "a MAC address")),
        mtu=_optional(raw, "mtu", mtu),
        default=_optional(raw, "default", default) or False,
        dns=_optional(raw, "dns", dns),
        gateway=_optional(
            raw, "gateway", lambda v: list(_string_list(v, where, "gateway", "IP addresses"))
        ),
        extra={key: value for key, value in raw.items() if key not in _STATUS_FIELDS},
    )


def parse_network_status(value: str) -> list[NetworkStatusEntry]:
    """Parse network-status; "" (or whitespace) is no entries."""
    _check_size(value, NETWORK_STATUS_KEY, MAX_STATUS_BYTES)
    if not value.strip():
        return []
    expected = "a JSON list of network status objects"
    loaded = _load_json(value, NETWORK_STATUS_KEY, expected)
    if not isinstance(loaded, list):
        raise AnnotationError(
            NETWORK_STATUS_KEY, problem=f"is {describe_value(loaded)}", expected=expected
        )
    return [
        _status_entry(raw, _Where(NETWORK_STATUS_KEY, index)) for index, raw in enumerate(loaded)
    ]


def format_network_status(entries: Sequence[NetworkStatusEntry]) -> str:
    return json.dumps([entry.to_json() for entry in entries])


# --- interface names ----------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    """The identity of one attachment on one pod."""

    ref: NetworkRef
    interface: str
    selection: NetworkSelection
    auto_named: bool


def desired_attachments(
    selections: Sequence[NetworkSelection],
    pod_namespace: str,
    current: Sequence[tuple[NetworkRef, str, bool]],
    reserved: Collection[str] = ("eth0", "lo"),
) -> list[Attachment]:
    """Give every selection an interface name.

    ``current`` holds (network, interface, auto_named) of what is attached now.
    Explicit names are kept; an unnamed selection reuses a current auto-named
    attachment of its network (first come, first served) so that its name is
    stable for the life of the attachment; otherwise it gets the lowest
    ``netN`` (N >= 1) nobody uses. Names in ``reserved`` are never chosen.
    """
    _check_unique(selections, NETWORKS_KEY)
    explicit = {s.interface for s in selections if s.interface is not None}
    # Auto-named attachments that may be handed on, per network, in order.
    reusable: dict[NetworkRef, list[str]] = {}
    for ref, interface, auto_named in current:
        if auto_named and interface not in explicit:
            reusable.setdefault(ref, []).append(interface)
    taken = explicit | {interface for _, interface, _ in current} | set(reserved)
    counter = 0

    def fresh_name() -> str:
        nonlocal counter
        while True:
            counter += 1
            name = f"net{counter}"
            if name not in taken:
                taken.add(name)
                return name

    attachments = []
    for selection in selections:
        ref = selection.ref(pod_namespace)
        if selection.interface is not None:
            attachments.append(Attachment(ref, selection.interface, selection, auto_named=False))
            continue
        candidates = reusable.get(ref)
        interface = candidates.pop(0) if candidates else fresh_name()
        attachments.append(Attachment(ref, interface, selection, auto_named=True))
    return attachments
