"""NetworkProfile: which networks the pods of a namespace get.

Pure functions over typed values: read a NetworkProfile object, pick the
profile that governs a namespace, and compute the annotation changes that bring
a pod to its profile. The webhook (new pods) and the controller (running pods)
share this code so that both write exactly the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeVar

from netshift.annotations import (
    DNS_SUBDOMAIN_RE,
    AnnotationError,
    NetworkSelection,
    describe_value,
    format_networks,
    one_of,
    parse_default_network,
    parse_networks,
    parse_ref,
)
from netshift.keys import (
    DEFAULT_NETWORK_KEY,
    INJECTED_KEY,
    NETWORKS_KEY,
    PROFILE_GROUP,
    PROFILE_KEY,
    PROFILE_KIND,
    PROFILE_VERSION,
    SELECTED_LABEL,
    SELECTED_VALUE,
    SYSTEM_NAMESPACES,
)

MODE_DEFAULT: Final = "Default"
MODE_ENFORCE: Final = "Enforce"
MODES: Final = (MODE_DEFAULT, MODE_ENFORCE)

_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")
_SPEC_FIELDS: Final = (
    "namespaceSelector",
    "defaultNetwork",
    "networks",
    "mode",
    "priority",
    "rollout",
)
_SELECTOR_FIELDS: Final = ("matchLabels", "matchExpressions")
_REQUIREMENT_FIELDS: Final = ("key", "operator", "values")
_ROLLOUT_FIELDS: Final = (
    "existingPods",
    "maxConcurrent",
    "paused",
    "maxFailures",
    "oldDefault",
    "drainSeconds",
)

_T = TypeVar("_T")


class ProfileError(ValueError):
    """A NetworkProfile that cannot be used; the text names the profile and field."""

    def __init__(
        self, message: str, *, profile: str | None = None, field: str | None = None
    ) -> None:
        self.profile = profile
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry of a label selector."""

    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            # As in Kubernetes: a missing label is "not in" any set.
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector.

    The empty selector matches every label set. ``match_nothing`` stands for a
    selector that is absent altogether, which matches none.
    """

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()
    match_nothing: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.match_nothing:
            return False
        return all(labels.get(key) == value for key, value in self.match_labels) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )


@dataclass(frozen=True)
class Rollout:
    existing_pods: str = "Ignore"  # Ignore | Live
    max_concurrent: int = 1
    paused: bool = False
    max_failures: int = 0  # 0 = no limit
    old_default: str = "Keep"  # Keep | Remove
    drain_seconds: int = 0


@dataclass(frozen=True)
class Profile:
    name: str
    namespace_selector: LabelSelector
    default_network: str | None = None  # NAD ref text, "ns/name" or "name"
    networks: tuple[NetworkSelection, ...] = ()
    mode: str = MODE_DEFAULT  # Default | Enforce
    priority: int = 0
    rollout: Rollout = field(default_factory=Rollout)
    generation: int = 0


@dataclass(frozen=True)
class Resolution:
    """The profiles that select a namespace, ranked (see `resolve`): the winner governs it."""

    winner: Profile | None
    losers: tuple[Profile, ...]

    @property
    def ranked(self) -> tuple[Profile, ...]:
        """Every profile selecting the namespace, the winner first."""
        return () if self.winner is None else (self.winner, *self.losers)

    def why(self, loser: Profile) -> str:
        """Why the winner governs the namespace rather than `loser`, for a human."""
        assert self.winner is not None, "a namespace no profile selects has no losers"
        return why_first(self.winner, loser)


# --- reading a NetworkProfile object -----------------------------------------


@dataclass(frozen=True)
class _Reader:
    """Typed access to one profile object, with errors that name the field."""

    profile: str | None

    def error(self, path: str, problem: str, expected: str = "") -> ProfileError:
        name = f'NetworkProfile "{self.profile}"' if self.profile else "NetworkProfile"
        text = f"{name}: {path}: {problem}"
        if expected:
            text += f"; expected {expected}"
        return ProfileError(text, profile=self.profile, field=path)

    def mapping(
        self, raw: object, path: str, accepted: Sequence[str] | None = None
    ) -> Mapping[str, Any]:
        if not isinstance(raw, Mapping):
            raise self.error(path, f"is {describe_value(raw)}", "an object")
        for key in raw:
            if accepted is not None and key not in accepted:
                raise self.error(f"{path}.{key}", "is not a known field", one_of(accepted))
        return raw

    def string(self, raw: object, path: str) -> str:
        if not isinstance(raw, str):
            raise self.error(path, f"is {describe_value(raw)}", "a string")
        return raw

    def integer(self, raw: object, path: str, minimum: int | None = None) -> int:
        expected = "an integer" if minimum is None else f"an integer of at least {minimum}"
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise self.error(path, f"is {describe_value(raw)}", expected)
        if minimum is not None and raw < minimum:
            raise self.error(path, f"{raw} is too small", expected)
        return raw

    def boolean(self, raw: object, path: str) -> bool:
        if not isinstance(raw, bool):
            raise self.error(path, f"is {describe_value(raw)}", "true or false")
        return raw

    def choice(self, raw: object, path: str, choices: Sequence[str]) -> str:
        value = self.string(raw, path)
        if value not in choices:
            raise self.error(path, f"{json.dumps(value)} is not supported", one_of(choices))
        return value

    def optional(
        self, raw: Mapping[str, Any], key: str, read: Callable[[object], _T], default: _T
    ) -> _T:
        # JSON null is "not set", as the API server's defaulting treats it.
        value = raw.get(key)
        return default if value is None else read(value)


def _label_key_problem(key: str) -> str | None:
    """Kubernetes label key syntax: an optional DNS subdomain prefix and a name; and not
    netshift's own SELECTED_LABEL, which follows from the selectors (a selector on it would
    select a namespace because it is selected)."""
    if key == SELECTED_LABEL:
        return (
            f"{json.dumps(key)} is netshift's own label, set on the namespaces that some "
            "profile selects"
        )
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(prefix)):
        return f"{json.dumps(key)} has a prefix that is not a DNS subdomain"
    if not name:
        return f"{json.dumps(key)} has no name"
    return _label_value_problem(name)


def _label_value_problem(value: str) -> str | None:
    if len(value) > 63:
        return f"{json.dumps(value)} is longer than 63 characters"
    if not value:
        return None
    if not (
        value[0].isascii() and value[0].isalnum() and value[-1].isascii() and value[-1].isalnum()
    ):
        return f"{json.dumps(value)} must start and end with a letter or digit"
    if any(not (c.isascii() and (c.isalnum() or c in "-_.")) for c in value):
        return (
            f"{json.dumps(value)} contains a character other than letters, digits, '-', '_' and '.'"
        )
    return None


_LABEL_KEY_EXPECTED: Final = (
    "a label key ([prefix/]name, name at most 63 characters of letters, digits, '-', '_', '.')"
)
_LABEL_VALUE_EXPECTED: Final = (
    "a label value (at most 63 characters of letters, digits, '-', '_', '.')"
)


def _requirement(reader: _Reader, raw: object, path: str) -> Requirement:
    entry = reader.mapping(raw, path, _REQUIREMENT_FIELDS)
    if entry.get("key") is None:
        raise reader.error(f"{path}.key", "is missing", _LABEL_KEY_EXPECTED)
    key = reader.string(entry["key"], f"{path}.key")
    problem = _label_key_problem(key)
    if problem:
        raise reader.error(f"{path}.key", problem, _LABEL_KEY_EXPECTED)
    if entry.get("operator") is None:
        raise reader.error(f"{path}.operator", "is missing", one_of(_OPERATORS))
    operator = reader.choice(entry["operator"], f"{path}.operator", _OPERATORS)
    raw_values: list[str] = reader.optional(
        entry, "values", lambda v: _string_list(reader, v, f"{path}.values"), []
    )
    for position, value in enumerate(raw_values):
        problem = _label_value_problem(value)
        if problem:
            raise reader.error(f"{path}.values[{position}]", problem, _LABEL_VALUE_EXPECTED)
    if operator in ("In", "NotIn") and not raw_values:
        raise reader.error(
            f"{path}.values", f"is empty for operator {operator}", "at least one value"
        )
    if operator in ("Exists", "DoesNotExist") and raw_values:
        raise reader.error(f"{path}.values", f"is not empty for operator {operator}", "no values")
    return Requirement(key, operator, tuple(sorted(set(raw_values))))


def _string_list(reader: _Reader, raw: object, path: str) -> list[str]:
    if not isinstance(raw, list):
        raise reader.error(path, f"is {describe_value(raw)}", "a list of strings")
    return [reader.string(item, f"{path}[{position}]") for position, item in enumerate(raw)]


def _selector(reader: _Reader, raw: object, path: str) -> LabelSelector:
    if raw is None:
        return LabelSelector(match_nothing=True)
    selector = reader.mapping(raw, path, _SELECTOR_FIELDS)
    labels: Mapping[str, Any] = reader.optional(
        selector, "matchLabels", lambda v: reader.mapping(v, f"{path}.matchLabels"), {}
    )
    pairs = []
    for key, value in labels.items():
        where = f"{path}.matchLabels.{key}"
        problem = _label_key_problem(key)
        if problem:
            raise reader.error(where, problem, _LABEL_KEY_EXPECTED)
        problem = _label_value_problem(reader.string(value, where))
        if problem:
            raise reader.error(where, problem, _LABEL_VALUE_EXPECTED)
        pairs.append((key, value))
    expressions_path = f"{path}.matchExpressions"

    def expressions(value: object) -> list[object]:
        if not isinstance(value, list):
            raise reader.error(
                expressions_path, f"is {describe_value(value)}", "a list of requirements"
            )
        return value

    entries: list[object] = reader.optional(selector, "matchExpressions", expressions, [])
    requirements = tuple(
        _requirement(reader, entry, f"{expressions_path}[{position}]")
        for position, entry in enumerate(entries)
    )
    return LabelSelector(tuple(sorted(pairs)), requirements)


def _default_network(reader: _Reader, raw: object) -> str:
    path = "spec.defaultNetwork"
    text = reader.string(raw, path).strip()
    try:
        # Only the syntax is checked here; the namespace is the pod's, later.
        parse_ref(text, "default", annotation=path)
    except AnnotationError as err:
        raise reader.error(path, err.problem, err.expected) from None
    return text


def _networks(reader: _Reader, raw: object) -> tuple[NetworkSelection, ...]:
    path = "spec.networks"
    if not isinstance(raw, list):
        raise reader.error(
            path, f"is {describe_value(raw)}", "a list of network selection elements"
        )
    try:
        # The same grammar as the pod annotation, so the same parser.
        return tuple(parse_networks(json.dumps(raw)))
    except (TypeError, ValueError) as err:
        if not isinstance(err, AnnotationError):
            raise reader.error(path, f"is not JSON data ({err})") from None
        where = path if err.index is None else f"{path}[{err.index}]"
        if err.field:
            where += f".{err.field}"
        if err.element:
            where += f" (network {json.dumps(err.element)})"
        raise reader.error(where, err.problem, err.expected) from None


def _rollout(reader: _Reader, raw: object) -> Rollout:
    path = "spec.rollout"
    spec = reader.mapping(raw, path, _ROLLOUT_FIELDS)

    def at(key: str) -> str:
        return f"{path}.{key}"

    return Rollout(
        existing_pods=reader.optional(
            spec,
            "existingPods",
            lambda v: reader.choice(v, at("existingPods"), ("Ignore", "Live")),
            "Ignore",
        ),
        max_concurrent=reader.optional(
            spec, "maxConcurrent", lambda v: reader.integer(v, at("maxConcurrent"), 1), 1
        ),
        paused=reader.optional(spec, "paused", lambda v: reader.boolean(v, at("paused")), False),
        max_failures=reader.optional(
            spec, "maxFailures", lambda v: reader.integer(v, at("maxFailures"), 0), 0
        ),
        old_default=reader.optional(
            spec,
            "oldDefault",
            lambda v: reader.choice(v, at("oldDefault"), ("Keep", "Remove")),
            "Keep",
        ),
        drain_seconds=reader.optional(
            spec, "drainSeconds", lambda v: reader.integer(v, at("drainSeconds"), 0), 0
        ),
    )


def _check_type(reader: _Reader, obj: Mapping[str, Any]) -> None:
    # Items of some list responses carry no apiVersion/kind; absent is fine, wrong is not.
    api_version = obj.get("apiVersion")
    if api_version is not None and api_version != f"{PROFILE_GROUP}/{PROFILE_VERSION}":
        raise reader.error(
            "apiVersion",
            f"is {describe_value(api_version)}",
            f'"{PROFILE_GROUP}/{PROFILE_VERSION}"',
        )
    kind = obj.get("kind")
    if kind is not None and kind != PROFILE_KIND:
        raise reader.error("kind", f"is {describe_value(kind)}", f'"{PROFILE_KIND}"')


def profile_from_object(obj: Mapping[str, Any]) -> Profile:
    """Read a NetworkProfile custom object (as the API server returns it).

    ``spec.namespaceSelector: {}`` selects every namespace, as label selectors
    do in Kubernetes. A *missing* ``namespaceSelector`` selects no namespace:
    a profile that forgot its selector must not take over the whole cluster.
    """
    reader = _Reader(None)
    reader.mapping(obj, "object")
    metadata = reader.mapping(obj.get("metadata"), "metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise reader.error(
            "metadata.name",
            "is missing" if name is None else f"is {describe_value(name)}",
            "a name",
        )
    reader = _Reader(name)
    _check_type(reader, obj)
    generation = reader.optional(
        metadata, "generation", lambda v: reader.integer(v, "metadata.generation", 0), 0
    )
    if obj.get("spec") is None:
        raise reader.error("spec", "is missing", "an object with at least namespaceSelector")
    spec = reader.mapping(obj["spec"], "spec", _SPEC_FIELDS)
    return Profile(
        name=name,
        namespace_selector=_selector(
            reader, spec.get("namespaceSelector"), "spec.namespaceSelector"
        ),
        default_network=reader.optional(
            spec, "defaultNetwork", lambda v: _default_network(reader, v), None
        ),
        networks=reader.optional(spec, "networks", lambda v: _networks(reader, v), ()),
        mode=reader.optional(
            spec, "mode", lambda v: reader.choice(v, "spec.mode", MODES), MODE_DEFAULT
        ),
        priority=reader.optional(spec, "priority", lambda v: reader.integer(v, "spec.priority"), 0),
        rollout=reader.optional(spec, "rollout", lambda v: _rollout(reader, v), Rollout()),
        generation=generation,
    )


# --- choosing the profile of a namespace ---------------------------------------


def selected_label(
    namespace: str,
    namespace_labels: Mapping[str, str],
    profiles: Iterable[Profile],
    excluded: Collection[str] = SYSTEM_NAMESPACES,
) -> str | None:
    """The value SELECTED_LABEL must have on the namespace; None: it must be absent.

    Present exactly when some valid profile selects the namespace (whichever wins), so
    that the mutating webhook's namespaceSelector on it reaches those namespaces only.
    Excluded namespaces (netshift's own and kube-system) never carry it.
    """
    if namespace in excluded:
        return None
    return SELECTED_VALUE if resolve(namespace_labels, profiles).winner is not None else None


def resolve(namespace_labels: Mapping[str, str], profiles: Iterable[Profile]) -> Resolution:
    """All profiles selecting the namespace, ranked: highest priority wins, ties by name.

    The one ranking of profiles: the webhook, the controller and `netshift plan`
    all call it, and `why_first` explains it.
    """
    matching = sorted(
        (profile for profile in profiles if profile.namespace_selector.matches(namespace_labels)),
        key=_rank,
    )
    if not matching:
        return Resolution(None, ())
    return Resolution(matching[0], tuple(matching[1:]))


def _rank(profile: Profile) -> tuple[int, str]:
    return (-profile.priority, profile.name)


def why_first(winner: Profile, loser: Profile) -> str:
    """Why `resolve` ranks `winner` before `loser` (both select the namespace), for a human."""
    if winner.priority == loser.priority:
        return f"same priority {winner.priority}, ties go to the first name"
    return f"priority {winner.priority} > {loser.priority}"


# --- bringing a pod to its profile ---------------------------------------------


@dataclass(frozen=True)
class _Contribution:
    """What a profile put on a pod, as recorded under INJECTED_KEY."""

    profile: str | None = None
    default_network: str | None = None
    networks: tuple[NetworkSelection, ...] = ()

    def encode(self) -> str:
        record = {
            "profile": self.profile,
            "defaultNetwork": self.default_network,
            "networks": [selection.to_json() for selection in self.networks],
        }
        return json.dumps(record, separators=(",", ":"))


def _read_contribution(text: str | None) -> _Contribution:
    if not text:
        return _Contribution()
    try:
        record = json.loads(text)
        profile = record.get("profile")
        default_network = record.get("defaultNetwork")
        networks = record.get("networks") or []
        if not (isinstance(profile, str | None) and isinstance(default_network, str | None)):
            return _Contribution()
        if not isinstance(networks, list):
            return _Contribution()
        return _Contribution(profile, default_network, tuple(parse_networks(json.dumps(networks))))
    except (AttributeError, TypeError, ValueError):
        # A damaged record cannot say what was ours; claiming nothing means
        # nothing the user wrote is ever taken away.
        return _Contribution()


def _resolved(selection: NetworkSelection, pod_namespace: str) -> NetworkSelection:
    """The element with its namespace written out, as it is injected."""
    return replace(selection, namespace=selection.namespace or pod_namespace)


def _same_identity(
    a: NetworkSelection, b: NetworkSelection, pod_namespace: str, exact: bool
) -> bool:
    """Identity is network + interface; without ``exact``, a missing interface matches any."""
    if a.ref(pod_namespace) != b.ref(pod_namespace):
        return False
    if exact:
        return a.interface == b.interface
    return a.interface is None or b.interface is None or a.interface == b.interface


def _pair(
    wanted: Sequence[NetworkSelection],
    present: Sequence[NetworkSelection],
    pod_namespace: str,
    taken: set[int] | None = None,
) -> dict[int, int]:
    """Pair wanted elements with present elements of the same identity, first come first served.

    Exact identities are paired first so that an element without interface
    never takes the element another wanted element names exactly. ``taken``
    (present indices not to use) is updated in place.
    """
    pairs: dict[int, int] = {}
    taken = set() if taken is None else taken
    for exact in (True, False):
        for w_index, w in enumerate(wanted):
            if w_index in pairs:
                continue
            for p_index, p in enumerate(present):
                if p_index not in taken and _same_identity(w, p, pod_namespace, exact):
                    pairs[w_index] = p_index
                    taken.add(p_index)
                    break
    return pairs


def _merge(
    own: list[NetworkSelection],
    profile_networks: Sequence[NetworkSelection],
    enforce: bool,
    pod_namespace: str,
) -> tuple[list[NetworkSelection], tuple[NetworkSelection, ...]]:
    """Merge the pod's own elements with the profile's; return (all, contributed).

    Contributed elements come first and the pod's own follow, each group in
    its order, so that taking back a contribution and merging again yields
    the same list.
    """
    if enforce:
        contributed = list(profile_networks)
        # Every pod element sharing an identity with an enforced one goes, not
        # just one paired with it: a survivor would be paired on the next run.
        kept = [
            selection
            for selection in own
            if not any(_same_identity(p, selection, pod_namespace, False) for p in contributed)
        ]
        # The profile's interface names and default route win over the pod's.
        names = {selection.interface for selection in contributed if selection.interface}
        kept = [selection for selection in kept if selection.interface not in names]
        if any(selection.default_route for selection in contributed):
            kept = [replace(selection, default_route=()) for selection in kept]
    else:
        pairs = _pair(profile_networks, own, pod_namespace)
        kept = list(own)
        names = {selection.interface for selection in kept if selection.interface}
        contributed = [
            selection
            for index, selection in enumerate(profile_networks)
            if index not in pairs and selection.interface not in names
        ]
        if any(selection.default_route for selection in kept):
            contributed = [replace(selection, default_route=()) for selection in contributed]
    return contributed + kept, tuple(contributed)


def _change(
    annotations: Mapping[str, str], key: str, value: str | None, changes: dict[str, str | None]
) -> None:
    """Record a change only if it changes something."""
    if value is None:
        if key in annotations:
            changes[key] = None
    elif annotations.get(key) != value:
        changes[key] = value


def apply_profile(
    annotations: Mapping[str, str], pod_namespace: str, profile: Profile | None
) -> dict[str, str | None]:
    """The annotation changes (value None = delete) that bring a pod to ``profile``.

    First the previous contribution (INJECTED_KEY) is taken back wherever the
    pod still carries exactly that; then the profile is merged in. In Default
    mode the pod's own default network and its own elements win; in Enforce
    mode the profile's win, and the pod's values it overrides are gone (they
    are not restored when the profile goes away). ``profile=None`` only takes
    back. Raises AnnotationError when the pod's networks annotation is
    malformed. Idempotent: applying the result and calling again gives {}.
    """
    previous = _read_contribution(annotations.get(INJECTED_KEY))
    current_text = annotations.get(NETWORKS_KEY)
    current = parse_networks(current_text) if current_text is not None else []
    own = list(current)
    for selection in previous.networks:
        if selection in own:
            own.remove(selection)
    own_default = annotations.get(DEFAULT_NETWORK_KEY)
    if own_default is not None and own_default == previous.default_network:
        own_default = None

    changes: dict[str, str | None] = {}
    record: str | None = None
    if profile is None:
        merged, new_default = own, own_default
    else:
        enforce = profile.mode == MODE_ENFORCE
        profile_networks = [_resolved(selection, pod_namespace) for selection in profile.networks]
        merged, contributed = _merge(own, profile_networks, enforce, pod_namespace)
        injected_default = None
        new_default = own_default
        if profile.default_network and (enforce or not own_default):
            injected_default = str(parse_ref(profile.default_network, pod_namespace))
            new_default = injected_default
        record = _Contribution(profile.name, injected_default, contributed).encode()

    if not merged:
        _change(annotations, NETWORKS_KEY, None, changes)
    elif merged != current:
        text = format_networks(merged)
        parse_networks(text)  # never write what nobody could read back (the size caps)
        _change(annotations, NETWORKS_KEY, text, changes)
    _change(annotations, DEFAULT_NETWORK_KEY, new_default, changes)
    _change(annotations, INJECTED_KEY, record, changes)
    _change(annotations, PROFILE_KEY, profile.name if profile else None, changes)
    return changes


def enforced_violations(
    annotations: Mapping[str, str], pod_namespace: str, profile: Profile
) -> list[str]:
    """What a pod's annotations do against an Enforce profile, one message each.

    Empty exactly when applying the profile would leave the pod's networks
    (up to order) and default network as they are. Default-mode profiles
    enforce nothing. Raises AnnotationError when the networks annotation is
    malformed (a different, earlier denial).
    """
    if profile.mode != MODE_ENFORCE:
        return []
    by = f'NetworkProfile "{profile.name}" (mode Enforce)'
    messages = []
    if profile.default_network:
        wanted = str(parse_ref(profile.default_network, pod_namespace))
        text = annotations.get(DEFAULT_NETWORK_KEY)
        if not text:
            messages.append(f'{DEFAULT_NETWORK_KEY}: is missing; {by} requires "{wanted}"')
        elif _default_ref(text, pod_namespace) != wanted:
            messages.append(
                f'{DEFAULT_NETWORK_KEY}: is {json.dumps(text)}; {by} requires "{wanted}"'
            )
    messages += _network_violations(annotations, pod_namespace, profile, by)
    return messages


def _network_violations(
    annotations: Mapping[str, str], pod_namespace: str, profile: Profile, by: str
) -> list[str]:
    present = [
        _resolved(selection, pod_namespace)
        for selection in parse_networks(annotations.get(NETWORKS_KEY) or "")
    ]
    required = [_resolved(selection, pod_namespace) for selection in profile.networks]
    # Exact copies first, whatever their order; then what looks like a changed copy.
    taken: set[int] = set()
    copies: set[int] = set()
    for r_index, selection in enumerate(required):
        for p_index, candidate in enumerate(present):
            if p_index not in taken and candidate == selection:
                taken.add(p_index)
                copies.add(r_index)
                break
    unmet = [selection for index, selection in enumerate(required) if index not in copies]
    changed = _pair(unmet, present, pod_namespace, taken)
    messages = []
    for u_index, selection in enumerate(unmet):
        network = _describe_network(selection, pod_namespace)
        element = json.dumps(selection.to_json())
        if u_index in changed:
            messages.append(
                f"{NETWORKS_KEY}: element {changed[u_index]} ({network}) differs from the "
                f"enforced one; {by} requires the element {element}"
            )
        else:
            messages.append(
                f"{NETWORKS_KEY}: {network} is missing; {by} requires the element {element}"
            )
    for p_index, candidate in enumerate(present):
        if p_index in taken:
            continue
        for selection in required:
            if _same_identity(selection, candidate, pod_namespace, False):
                messages.append(
                    f"{NETWORKS_KEY}: element {p_index} ({_describe_network(candidate, pod_namespace)}) "
                    f"is another attachment of an enforced network; {by} allows only the element "
                    f"{json.dumps(selection.to_json())}"
                )
                break
    return messages


def _describe_network(selection: NetworkSelection, pod_namespace: str) -> str:
    text = f'network "{selection.ref(pod_namespace)}"'
    if selection.interface:
        text += f' on interface "{selection.interface}"'
    return text


def _default_ref(text: str, pod_namespace: str) -> str | None:
    try:
        return str(parse_default_network(text, pod_namespace))
    except AnnotationError:
        return None
