"""Real payloads from tests/fixtures (see its README for the page each one follows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def load(rel: str) -> dict[str, Any]:
    """The fixture `rel` (e.g. "gitlab/push_hook.json"): `_source`, `headers`/`status`, `body`."""
    data: dict[str, Any] = json.loads((FIXTURES / rel).read_text(encoding="utf-8"))
    assert data.get("_source"), f"{rel} does not say which published page it follows"
    return data


def delivery(rel: str, token: str | None = None, **drop: bool) -> tuple[dict[str, str], bytes]:
    """A webhook fixture as (headers, raw body); `token` adds X-Gitlab-Token.

    Keyword flags drop headers, e.g. `idempotency_key=True` drops Idempotency-Key
    (GitLab before 17.4).
    """
    data = load(rel)
    headers = dict(data["headers"])
    if drop.get("idempotency_key"):
        headers.pop("Idempotency-Key", None)
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return headers, json.dumps(data["body"]).encode()


def shape(value: Any) -> Any:
    """The JSON type skeleton of a value: dict keys kept, lists by their first item."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def missing_fields(real: Any, ours: Any, fields: list[str]) -> list[str]:
    """Dotted `fields` (`a.b`, `a[].b`) in `real` but absent or of another type in `ours`."""
    problems = []
    for dotted in fields:
        got_real, got_ours = _at(real, dotted), _at(ours, dotted)
        if got_real is _MISSING:
            problems.append(f"{dotted}: not in the real payload (fix the test)")
        elif got_ours is _MISSING:
            problems.append(f"{dotted}: missing in the double's answer")
        elif not _same_kind(got_real, got_ours):
            problems.append(f"{dotted}: {shape(got_real)} in the real, {shape(got_ours)} ours")
    return problems


def _same_kind(real: Any, ours: Any) -> bool:
    if real is None or ours is None:
        return True  # nullable fields
    if isinstance(real, dict | list):
        return isinstance(ours, type(real))
    return bool(shape(real) == shape(ours))


_MISSING = object()


def _at(value: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        many = part.endswith("[]")
        key = part.removesuffix("[]")
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
        if many:
            if not isinstance(value, list) or not value:
                return _MISSING
            value = value[0]
    return value
