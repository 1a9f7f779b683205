"""Value layering with provenance: defaults < environment < service.

Maps merge key by key; anything else (scalars, lists, secret references)
replaces what the lower layer had. Every leaf remembers where it came from and
what it overrode, so errors, plans and `explain` can say so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from configcenter.core.errors import Source
from configcenter.core.yamldoc import YamlDoc

MASK = "***"


@dataclass(frozen=True)
class SecretRef:
    """A secret, known only by reference until a platform adapter resolves it at deploy time."""

    ref: str

    def __str__(self) -> str:
        # What a template renders: the reference, never a value.
        return "${secret:" + self.ref + "}"

    @property
    def scheme(self) -> str:
        return self.ref.partition(":")[0]


@dataclass(frozen=True)
class Override:
    value: Any
    source: Source
    layer: str


@dataclass
class Entry:
    """One merged leaf value, where it came from, and what it replaced."""

    value: Any
    source: Source
    layer: str
    overrode: list[Override] = field(default_factory=list)


Key = tuple[str, ...]
Layer = tuple[str, YamlDoc, Mapping[str, Any]]


class Layered:
    """The merged result: a nested plain value tree plus per-leaf provenance.

    Merging builds the tree only; the provenance (`entries`) is merged again from the
    layers the first time it is asked for: a no-op plan, a render and a validate that
    finds nothing to say never ask. Kept loads (configcenter.core.load_trace) store
    the tree and the layers, without the provenance; the layers of a kept load are
    unpickled the first time provenance is asked for (`_layers` is then a callable), and
    each tree is unpickled the first time it is read (`_tree` is then a callable): a plan
    of unchanged services, whose digests are kept, reads none.
    """

    def __init__(self) -> None:
        self._tree: dict[str, Any] | Callable[[], dict[str, Any]] = {}
        self._entries: dict[Key, Entry] | None = {}
        self._layers: list[Layer] | Callable[[], list[Layer]] = []

    @property
    def tree(self) -> dict[str, Any]:
        """The merged values: a nested plain value tree, secrets as `SecretRef`."""
        if not isinstance(self._tree, dict):
            self._tree = self._tree()
        return self._tree

    @property
    def layers(self) -> list[Layer]:
        """What was merged, lowest first: (layer name, its document, its values)."""
        if not isinstance(self._layers, list):
            self._layers = self._layers()
        return self._layers

    @property
    def entries(self) -> dict[Key, Entry]:
        if self._entries is None:
            entries: dict[Key, Entry] = {}
            tree: dict[str, Any] = {}
            for layer, doc, values in self.layers:
                _merge(tree, entries, (), layer, doc, values)
            self._entries = entries
        return self._entries

    def merge(self, layer: str, doc: YamlDoc, values: Mapping[str, Any] | None) -> None:
        # Anything but a mapping was already reported by the schema; layer nothing from it.
        if values and isinstance(values, Mapping):
            self.layers.append((layer, doc, values))
            _merge_values(self.tree, values)
            self._entries = None

    def flat(self) -> Iterator[tuple[str, Entry]]:
        for path in sorted(self.entries):
            yield ".".join(path), self.entries[path]


def _merge(
    target: dict[str, Any],
    entries: dict[Key, Entry],
    prefix: Key,
    layer: str,
    doc: YamlDoc,
    values: Mapping[str, Any],
) -> None:
    """Tree and provenance together: every leaf's Entry, with what it overrode."""
    for raw_key, raw in values.items():
        key = str(raw_key)
        path = (*prefix, key)
        value = to_value(raw)
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], entries, path, layer, doc, raw)
            continue
        source = doc.source("values", *path)
        overrode: list[Override] = []
        # Entries below `path` exist only where the lower layer had a map there; scanning
        # every entry for every key made layering quadratic in the number of values.
        if isinstance(target.get(key), dict):
            replaced = [p for p in entries if p[: len(path)] == path]
        else:
            replaced = [path] if path in entries else []
        for old_path in replaced:
            old = entries.pop(old_path)
            overrode.extend(old.overrode)
            overrode.append(Override(old.value, old.source, old.layer))
        if isinstance(value, dict):
            target[key] = {}
            _merge(target[key], entries, path, layer, doc, raw)
            if not raw:
                entries[path] = Entry({}, source, layer, overrode)
            elif overrode:
                first = next(p for p in entries if p[: len(path)] == path)
                entries[first].overrode[:0] = overrode
        else:
            target[key] = value
            entries[path] = Entry(value, source, layer, overrode)


def _merge_values(target: dict[str, Any], values: Mapping[str, Any]) -> None:
    """The tree `_merge` builds, without provenance: maps merge key by key, anything else
    (scalars, lists, secret references) replaces."""
    for raw_key, raw in values.items():
        key = str(raw_key)
        if isinstance(raw, dict):
            if len(raw) == 1 and isinstance(raw.get("secret"), str):
                target[key] = SecretRef(raw["secret"])
                continue
            below = target.get(key)
            if not isinstance(below, dict):
                below = target[key] = {}
            _merge_values(below, raw)
        elif isinstance(raw, list):
            target[key] = to_value(raw)
        else:
            target[key] = raw  # what to_value makes of a scalar: itself


def to_value(raw: Any) -> Any:
    """Turn `{secret: ...}` maps into SecretRef, recursively."""
    if isinstance(raw, dict):
        if set(raw) == {"secret"} and isinstance(raw["secret"], str):
            return SecretRef(raw["secret"])
        return {str(k): to_value(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [to_value(v) for v in raw]
    return raw


def canonical(value: Any) -> Any:
    """A JSON-able form; secrets stay references (so a digest never depends on a secret)."""
    if isinstance(value, SecretRef):
        return {"secret": value.ref}
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def masked(value: Any) -> Any:
    """For display: secrets become ***."""
    if isinstance(value, SecretRef):
        return MASK
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def digest(value: Any) -> str:
    # The same bytes as json.dumps(canonical(value), sort_keys=True, ...), without first
    # copying the whole tree: secrets are turned into {secret: ref} as the encoder meets them.
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=_canonical_leaf)
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


def _canonical_leaf(value: Any) -> Any:
    if isinstance(value, SecretRef):
        return {"secret": value.ref}
    return str(value)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted key; secrets are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
