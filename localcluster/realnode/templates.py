"""The YAML manifests shipped in manifests/ (package data), filled with a node's values.

A placeholder is ``${name}``. A string that is one placeholder and nothing else becomes
the value itself (a list stays a list); a placeholder inside a longer string is replaced
by the value's text. Values are filled into the parsed documents, never into YAML text,
so no value can change the documents' structure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from string import Template
from typing import Any

import yaml

WHOLE = re.compile(r"\$\{(\w+)\}")


class TemplateError(KeyError):
    pass


def text(name: str) -> str:
    """A manifest template as shipped, e.g. "multus.yaml" or "netshift/agent.yaml"."""
    return (
        resources.files("localcluster.realnode").joinpath("manifests", *name.split("/")).read_text()
    )


def documents(name: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every document of a template, filled with `values`."""
    return [fill(doc, values) for doc in yaml.safe_load_all(text(name)) if doc is not None]


def document(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    (doc,) = documents(name, values)
    return doc


def fill(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    if not isinstance(value, str):
        return value
    try:
        whole = WHOLE.fullmatch(value)
        if whole:
            return values[whole.group(1)]
        return Template(value).substitute(values)
    except KeyError as err:
        raise TemplateError(f"no value for ${{{err.args[0]}}} in {value!r}") from None
