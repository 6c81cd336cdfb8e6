"""skaffold.yaml with profiles applied as Skaffold v2 applies them, for tests without Skaffold.

A profile's sections overlay the config field by field: maps merge, a non-empty list or a
set scalar replaces what was there. Then its JSON patches (RFC 6902 add/replace/remove,
``-`` appending to a list) apply to the result. Profiles apply in the order given.
tests/skaffold/test_skaffold_render.py checks this model against Skaffold's own
`skaffold diagnose --yaml-only`.
"""

from __future__ import annotations

import copy
from typing import Any

# What a profile may carry besides pipeline sections.
PROFILE_ONLY = frozenset({"name", "activation", "requiresAllActivations", "patches"})


def profile(config: dict[str, Any], name: str) -> dict[str, Any]:
    found = [p for p in config.get("profiles", []) if p["name"] == name]
    assert found, f"skaffold.yaml has no profile {name!r}"
    return found[0]


def _overlay(base: Any, over: Any) -> Any:
    if isinstance(over, dict):
        merged = dict(base) if isinstance(base, dict) else {}
        for key, value in over.items():
            merged[key] = _overlay(merged.get(key), value)
        return merged
    if over in (None, [], "", 0, False):
        return base
    return copy.deepcopy(over)


def _pointer(path: str) -> list[str]:
    assert path.startswith("/"), f"not a JSON pointer: {path!r}"
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _apply_patch(document: dict[str, Any], patch: dict[str, Any]) -> None:
    *parents, last = _pointer(patch["path"])
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = patch.get("op", "replace")
    value = copy.deepcopy(patch.get("value"))
    if isinstance(node, list):
        if op == "add":
            node.insert(len(node) if last == "-" else int(last), value)
        elif op == "replace":
            node[int(last)] = value
        elif op == "remove":
            del node[int(last)]
        else:
            raise ValueError(f"unsupported patch op {op!r}")
        return
    if op in ("replace", "remove") and last not in node:
        raise KeyError(f"{patch['path']}: nothing to {op}")
    if op == "remove":
        del node[last]
    elif op in ("add", "replace"):
        node[last] = value
    else:
        raise ValueError(f"unsupported patch op {op!r}")


def effective(config: dict[str, Any], *names: str) -> dict[str, Any]:
    """The pipeline (build, deploy, verify, ...) with the named profiles applied in order."""
    result = {key: copy.deepcopy(value) for key, value in config.items() if key != "profiles"}
    for name in names:
        chosen = profile(config, name)
        sections = {key: value for key, value in chosen.items() if key not in PROFILE_ONLY}
        result = _overlay(result, sections)
        for patch in chosen.get("patches", []):
            _apply_patch(result, patch)
    return result
