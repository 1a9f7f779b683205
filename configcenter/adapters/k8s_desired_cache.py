"""Each release's desired objects (what drift is judged against), kept on disk between runs.

Building them (`k8s_observe.build_desired`: parse the rendered manifests, build the
release's ConfigMaps and Secrets, wire the pod templates) is a pure function of the
release (`Deployable`: its rendered files' bytes, values, secret references, image,
replicas, ...) and the namespace, and it was most of a reconcile. So its answer is kept,
content-addressed: the key is a sha256 of every field of the release (each file by the
sha256 of its bytes), the namespace, and the code that builds the objects (the bytes of
the modules doing it, PyYAML's version and loader, Python's version). A change of any
input, or of that code, is a new key; the old answer is never read again.

An apply keeps the objects of the release it applied (its manifests are parsed anyway),
so the reconcile after it reads them; reconcile keeps what it had to build itself.
One file per (namespace, env, service) slot holds the last key and its objects (pickled,
so YAML's dates and non-string keys come back as they were parsed), so the cache stays as
large as the set of services; it is written whole (`cache_files.write_atomic`), so of two
processes keeping one slot at once the last complete write wins, and a writer killed
mid-write leaves the slot as it was. Each lookup unpickles a fresh copy: callers own what they
get. A cache that cannot be read or written costs a build, never a command. Nothing in
it is secret: Secrets are built with every value masked (`build_objects(..., None)`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import pickle
import sys
from collections.abc import Callable, Mapping
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from configcenter.adapters.cache_files import write_atomic
from configcenter.ports.platform import Deployable

log = logging.getLogger("configcenter.adapters.kubernetes")  # one logger name for the adapter

#: Bumped when what a cache file holds changes shape.
FORMAT = 1
#: The modules whose code decides the desired objects: their bytes are part of every key.
_CODE_MODULES = (
    "configcenter.adapters.k8s_desired_cache",
    "configcenter.adapters.k8s_observe",
    "configcenter.adapters.k8s_manifests",
    "configcenter.adapters.k8s_live",
    "configcenter.core.secretrefs",
    "configcenter.ports.platform",
)

Objects = dict[str, Mapping[str, Any]]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "configcenter" / "k8s-desired"


def code_fingerprint() -> str | None:
    """sha256 of the code that builds desired objects, as its files read now; None (no
    caching) if one cannot be read."""
    digest = hashlib.sha256(f"{FORMAT}\0{sys.version_info[:2]}\0".encode())
    # PyYAML read, not imported (a plan whose objects are all kept never parses): its
    # __init__.py, where its version is written, and whether its C loader is beside it.
    yaml = importlib.util.find_spec("yaml")
    if yaml is None or not yaml.origin or not yaml.submodule_search_locations:
        return None
    try:
        digest.update(Path(yaml.origin).read_bytes())
        libyaml = any(
            name.startswith("_yaml.") and name.endswith(tuple(EXTENSION_SUFFIXES))
            for folder in yaml.submodule_search_locations
            for name in os.listdir(folder)
        )
    except OSError:
        return None
    digest.update(f"\0libyaml={libyaml}\0".encode())
    for name in _CODE_MODULES:
        spec = importlib.util.find_spec(name)
        path = spec.origin if spec is not None else None
        if not path or not path.endswith(".py"):
            return None
        try:
            digest.update(name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
        except OSError:
            return None
    return digest.hexdigest()


#: The fingerprint of the code this process runs, taken as it is imported (alongside the
#: modules it names): files changed later (an upgrade while `serve` runs) must not lend
#: their fingerprint to what the old code builds.
LOADED_CODE = code_fingerprint()


class DesiredObjectsCache:
    """`get(deployable, namespace, build)`: the kept objects when the key matches, else
    `build()`'s, which are then kept in the release's slot."""

    def __init__(self, directory: Path | None = None, code: str | None = None) -> None:
        """`code` stands for the building code in the keys; by default the fingerprint of
        the code this process loaded (`LOADED_CODE`)."""
        self.directory = directory if directory is not None else cache_dir()
        self._code = code if code is not None else LOADED_CODE
        self._broken = False

    def key(self, deployable: Deployable, namespace: str) -> str | None:
        """The release's key, or None when it cannot be cached (unreadable code, a field
        of a type the key does not know)."""
        if self._code is None:
            return None
        try:
            fields = {
                f.name: _canonical(getattr(deployable, f.name))
                for f in dataclasses.fields(deployable)
            }
        except TypeError:
            return None
        text = json.dumps([self._code, namespace, fields], sort_keys=True, ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    def get(self, deployable: Deployable, namespace: str, build: Callable[[], Objects]) -> Objects:
        key = None if self._broken else self.key(deployable, namespace)
        if key is None:
            return build()
        path = self._slot(deployable, namespace)
        kept = self._read(path, key)
        if kept is not None:
            return kept
        objects = build()
        self._write(path, key, objects)
        return objects

    def _slot(self, deployable: Deployable, namespace: str) -> Path:
        name = f"{namespace}\0{deployable.env}\0{deployable.service}".encode()
        return self.directory / f"{hashlib.sha256(name).hexdigest()[:32]}.pickle"

    def _read(self, path: Path, key: str) -> Objects | None:
        try:
            with open(path, "rb") as handle:
                data = pickle.load(handle)
        except FileNotFoundError:
            return None
        except Exception as exc:  # a cache file cut short or garbled: build instead
            log.debug("desired-objects cache %s unreadable (%s): rebuilt", path, exc)
            return None
        if not isinstance(data, tuple) or len(data) != 3 or data[:2] != (FORMAT, key):
            return None
        objects = data[2]
        return objects if isinstance(objects, dict) else None

    def _write(self, path: Path, key: str, objects: Objects) -> None:
        try:
            data = pickle.dumps((FORMAT, key, objects), 5)
        except Exception as exc:  # not expected of parsed YAML; never fail a command over it
            log.debug("desired objects of %s not kept (%s)", path.name, exc)
            return
        try:
            write_atomic(path, data, prefix=".tmp-")
        except OSError as exc:
            self._broken = True
            log.warning(
                "desired-objects cache %s cannot be written (%s); reconcile builds the "
                "objects each time",
                self.directory,
                exc.strerror or exc,
            )


def _canonical(value: Any) -> Any:
    """A release field as JSON for its key: bytes by their sha256, sets sorted."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, bytes):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("a map with keys other than strings")
        if all(type(v) is str for v in value.values()):  # values, secrets, labels
            return sorted(value.items())
        return [[k, _canonical(v)] for k, v in sorted(value.items())]
    if isinstance(value, frozenset | set):
        return sorted(_canonical(v) for v in value)
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    raise TypeError(f"no key for {type(value).__name__}")
