"""The state record in the deploy repo: what the next plan compares against.

Layout (format 2): one JSON file per service, ``<env>/.state/<service>.json``. JSON
is read by the stdlib's C parser, a plan reads only the state files (one small blob
per service), a commit rewrites only the records that changed, and history reads
one service's record across many commits without parsing the others'.

Format 1, a single ``<env>/state.yaml`` for the whole environment, is still read;
the next commit to the environment writes format 2 and deletes ``state.yaml``.

Both are checked as they are read: a truncated, hand-edited or otherwise broken
record is a ``StateError`` naming the file, the key and how to fix it, and a file
from a newer configcenter is refused with its format version.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from configcenter.core.errors import Source, UserError

STATE_VERSION = 2  # the format this configcenter writes and the newest it reads
STATE_DIR = ".state"
LEGACY_STATE_FILE = "state.yaml"  # format 1: one YAML file per environment
VERSION_KEY = "configcenter_state"
ENV_RECORD = "_env.json"

_STATE_NAME = re.compile(r"^(?P<env>[^/]+)/\.state/(?P<service>[^/]+)\.json$")


def state_dir(env: str) -> str:
    """``<env>/.state``: the directory holding one record per service."""
    return f"{env}/{STATE_DIR}"


def state_path(env: str, service: str) -> str:
    """``<env>/.state/<service>.json``."""
    return f"{env}/{STATE_DIR}/{service}.json"


def env_record_path(env: str) -> str:
    """``<env>/.state/_env.json``: the environment's own fields (no service name has a '_')."""
    return f"{env}/{STATE_DIR}/{ENV_RECORD}"


def legacy_state_path(env: str) -> str:
    """``<env>/state.yaml``, the format-1 record of a whole environment."""
    return f"{env}/{LEGACY_STATE_FILE}"


class StateError(UserError):
    """A state record that cannot be used as it is: names the file, the key and the fix."""

    def __init__(self, path: str, where: str, key: str, problem: str, fix: str = "") -> None:
        self.path = path
        self.where = where
        self.key = key
        self.problem = problem
        located = f"{path} ({where})" if where else path
        keyed = f"{located}: key '{key}'" if key else located
        self.fix = fix or (
            "this file is written by configcenter and must not be edited by hand; restore "
            "its previous version in the deploy repo (in a clone: `git log -- "
            f"{path}` to find the edit, `git revert <commit>`, push), then run the command "
            "again"
        )
        # As UserError has it (file, message, hint), with the text this record reads best in.
        self.source = Source(path)
        self.message = f"{keyed.removeprefix(path).lstrip(': ')}: {problem}".lstrip(": ")
        self.hint = self.fix
        ValueError.__init__(self, f"{keyed}: {problem}. Fix: {self.fix}")


@dataclass
class Release:
    """One service's rendered files + image at one apply, with its outcome."""

    id: str
    outcome: str  # committed | healthy | failed | rolled_back
    at: str  # ISO time, UTC
    run: str = ""
    template_tag: str = ""
    image: str = ""
    values_digest: str = ""
    rendered_digest: str = ""
    inputs_digest: str = ""
    reason: str = ""  # why it failed / was rolled back
    secrets_generation: int = 0  # which generation of the service's Secrets it ran with
    #: Only the replicas changed since the release it scales: that release's id and config
    #: digest (the first of a run of scales). A platform whose release labels are part of
    #: what restarts the workload (Marathon) keeps carrying those, so a scale restarts
    #: nothing; what runs with them at this release's count is this release.
    scale_of: str = ""
    scale_of_digest: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Release | None:
        if not data:
            return None
        return _build(cls, data, "", "", "")


@dataclass
class ServiceState:
    template_tag: str
    template_commit: str | None
    template_tree: str
    values_digest: str
    values: dict[str, Any]  # canonical: secrets as {secret: ref}
    replicas: int | None  # None: left to an autoscaler
    image: str
    image_digest: str | None
    build_key: str | None  # what the image was built from (None: given by ref)
    rendered_digest: str
    inputs_digest: str
    files: dict[str, str]  # output -> sha256
    platform: str | None = None
    env_keys: list[str] = field(default_factory=list)  # the template's ENV list
    #: The value names the template reads (["*"]: all); None in records made before this.
    consumes: list[str] | None = None
    #: Moves when the values behind the service's secrets change (never a hash of them).
    secrets_generation: int = 1
    release: Release | None = None
    last_good: Release | None = None
    last_failed: Release | None = None
    #: The config commit its current release was applied from (apply refuses older ones).
    config_commit: str | None = None
    # The release's stages (configcenter.core.stages.ReleaseStages.to_record); {}: none.
    stages: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["config_commit"] is None:
            del data["config_commit"]
        if not data["stages"]:
            del data["stages"]
        for key in ("release", "last_good", "last_failed"):
            if data[key] is None:
                del data[key]
            else:
                data[key] = {k: v for k, v in data[key].items() if v not in ("", 0)}
        if data["consumes"] is None:
            del data["consumes"]
        return data

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], path: str = "", where: str = "", prefix: str = ""
    ) -> ServiceState:
        """A record from its dict, every field checked against its type (StateError)."""
        return _build(cls, data, path, where, prefix)

    def to_json(self, service: str) -> bytes:
        """The format-2 file ``<env>/.state/<service>.json``: sorted keys, one per line."""
        data: dict[str, Any] = {VERSION_KEY: STATE_VERSION, "service": service}
        kind: type = type(self)
        for name, optional in _optional_fields(kind):  # as to_dict, without deep copies
            value = getattr(self, name)
            if isinstance(value, Release):
                data[name] = {k: v for k, v in value.__dict__.items() if v not in ("", 0)}
            elif value is not None or not optional:  # None where None is the default: left out
                data[name] = value
        return _encode_record(data)


#: The fields of a record a plan of an unchanged service does not read: a record read
#: from a cache by content (`lazy_record`) parses them from its bytes when first read.
LAZY_FIELDS = ("values", "files", "env_keys", "last_good", "stages")


def record_summary(record: ServiceState) -> tuple[Any, ...]:
    """The record's other fields, in `summary_fields()` order (a cache keeps them with the
    bytes the record was read from)."""
    return tuple(getattr(record, name) for name in summary_fields())


@functools.cache
def summary_fields() -> tuple[str, ...]:
    return tuple(f.name for f in fields(ServiceState) if f.name not in LAZY_FIELDS)


def lazy_record(
    summary: tuple[Any, ...], path: str, raw: bytes, canonical: bool = False
) -> ServiceState:
    """A record from its summary (`record_summary` of the record `raw` at `path` was read as,
    once, checked) whose other fields are parsed from `raw` when first read.

    `canonical`: `raw` is exactly what `to_json` writes for that record, so `changes`
    needs no encoding to know the record unchanged while nothing of it was changed.
    """
    record = _LazyServiceState.__new__(_LazyServiceState)
    state = record.__dict__
    names = summary_fields()
    state.update(zip(names, summary, strict=True))
    # Its own copies of what can be changed in place; `summary` stays as read.
    for index in _mutable_summary_fields():
        value = summary[index]
        if value is not None:
            copier = _SHALLOW_COPY.get(type(value))
            state[names[index]] = copier(value) if copier is not None else copy.copy(value)
    state["_source"] = (path, raw, summary, canonical)
    return record


@functools.cache
def _mutable_summary_fields() -> tuple[int, ...]:
    """Indexes in `summary_fields()` of the fields whose values can be changed in place
    (lists, dicts, releases: by their declared types)."""
    hints = typing.get_type_hints(ServiceState)
    mutable = []
    for index, name in enumerate(summary_fields()):
        kinds = typing.get_args(hints[name]) or (hints[name],)
        if any(typing.get_origin(k) in (list, dict) or k in (list, dict, Release) for k in kinds):
            mutable.append(index)
    return tuple(mutable)


def _shallow(obj: Any) -> Any:
    """`copy.copy` of a plain dataclass instance without its reduce protocol (10x faster:
    a plan copies thousands of records)."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    return new


_SHALLOW_COPY: dict[type, Any] = {list: list.copy, dict: dict.copy, Release: _shallow}


def _unchanged_since_read(record: ServiceState, stored: bytes | None) -> bool:
    """Whether `record` is a lazy record read from exactly `stored`, canonical, and nothing
    of it was set or read in a way that could have changed it (its lazy fields unread)."""
    state = record.__dict__
    source = state.get("_source")
    if source is None or stored is None:
        return False
    _path, raw, summary, canonical = source
    if not canonical or (raw is not stored and raw != stored):
        return False
    if any(name in state for name in LAZY_FIELDS):
        return False
    return all(
        state.get(name, _MISSING_FIELD) == value
        for name, value in zip(summary_fields(), summary, strict=True)
    )


_MISSING_FIELD = object()


class _LazyField:
    """A lazy field of `_LazyServiceState`: parsed from the record's bytes on first read,
    then an ordinary attribute (the instance's own value wins over this descriptor)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, record: ServiceState | None, owner: type | None = None) -> Any:
        if record is None:
            return self
        state = record.__dict__
        if self.name not in state:
            path, raw = state["_source"][0], state["_source"][1]
            match = _STATE_NAME.match(path)
            assert match is not None, path  # the record was read from this path before
            whole = _service_from_json(path, raw, "", match)
            for name in LAZY_FIELDS:
                state.setdefault(name, getattr(whole, name))
        return state[self.name]


class _LazyServiceState(ServiceState):
    """A `ServiceState` whose `LAZY_FIELDS` are read from its record's bytes on first use.

    Equal to a `ServiceState` of the same fields; copies, `dataclasses.replace` and
    `asdict` read the fields as any caller does.
    """

    values = _LazyField()
    files = _LazyField()
    env_keys = _LazyField()
    last_good = _LazyField()
    stages = _LazyField()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServiceState):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(ServiceState))

    __hash__ = None  # type: ignore[assignment]


@dataclass
class EnvState:
    env: str
    services: dict[str, ServiceState] = field(default_factory=dict)
    #: The config commit the environment was last applied from (apply refuses older ones).
    config_commit: str | None = None
    # The state files as read from the deploy repo (path -> bytes): what `changes`
    # compares against, so a commit rewrites only the records that changed.
    stored: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def copy(self) -> EnvState:
        """A copy whose services (and their records) can be changed without touching this one."""
        services = {name: _shallow(record) for name, record in self.services.items()}
        return EnvState(self.env, services, self.config_commit, dict(self.stored))

    def changes(self, base: EnvState | None = None) -> dict[str, bytes | None]:
        """The deploy-repo change set turning the files ``base`` was read from into this state.

        ``base`` defaults to this state itself (changed in place since it was read).
        Records that did not change are left alone; a record of a service no longer in
        the state is deleted; a format-1 ``state.yaml`` is replaced by format-2 files.
        """
        stored = (self if base is None else base).stored
        result: dict[str, bytes | None] = {}
        for name, record in self.services.items():
            path = state_path(self.env, name)
            if _unchanged_since_read(record, stored.get(path)):
                continue  # a lazy record untouched since read from these canonical bytes
            data = record.to_json(name)
            if stored.get(path) != data:
                result[path] = data
        for path in stored:
            match = _STATE_NAME.match(path)
            if (
                match
                and match["service"] not in self.services
                and path != env_record_path(self.env)
            ):
                result[path] = None
        env_path = env_record_path(self.env)
        env_data = self._env_record()
        if env_data is None:
            if env_path in stored:
                result[env_path] = None
        elif stored.get(env_path) != env_data:
            result[env_path] = env_data
        if legacy_state_path(self.env) in stored:
            result[legacy_state_path(self.env)] = None
        return result

    def _env_record(self) -> bytes | None:
        """``<env>/.state/_env.json``: what belongs to the environment, when there is any."""
        if not self.config_commit:
            return None
        data = {VERSION_KEY: STATE_VERSION, "env": self.env, "config_commit": self.config_commit}
        return _encode_record(data)

    def files(self) -> dict[str, bytes]:
        """Every format-2 file of this state (what a first commit writes)."""
        files = {state_path(self.env, n): s.to_json(n) for n, s in sorted(self.services.items())}
        env_data = self._env_record()
        if env_data is not None:
            files[env_record_path(self.env)] = env_data
        return files

    @classmethod
    def from_files(
        cls,
        env: str,
        files: Mapping[str, bytes],
        where: str = "",
        parsed: Mapping[str, ServiceState] | None = None,
    ) -> EnvState:
        """The state from the files under ``<env>/.state/`` and/or ``<env>/state.yaml``.

        ``where`` says where the files were read (repository and revision), for errors.
        Format-2 records win over a leftover format-1 file. ``parsed`` holds records
        already read from exactly these bytes at these paths (a cache by content), used
        as they are.
        """
        legacy = files.get(legacy_state_path(env))
        records = {p: d for p, d in files.items() if p.startswith(state_dir(env) + "/")}
        if legacy is not None and not records:
            state = cls.from_yaml(env, legacy, where)
            state.stored = {legacy_state_path(env): legacy}
            return state
        services: dict[str, ServiceState] = {}
        config_commit = None
        for path in sorted(records):
            if path == env_record_path(env):
                config_commit = _env_from_json(path, records[path], where, env)
                continue
            match = _STATE_NAME.match(path)
            if match is None or match["env"] != env:
                raise StateError(
                    path, where, "", "is not a state record (expected <env>/.state/<service>.json)",
                    f"remove {path} from the deploy repo: only configcenter writes under "
                    f"{state_dir(env)}/",
                )  # fmt: skip
            known = parsed.get(path) if parsed is not None else None
            services[match["service"]] = (
                known
                if known is not None
                else _service_from_json(path, records[path], where, match)
            )
        stored = dict(records)
        if legacy is not None:
            stored[legacy_state_path(env)] = legacy
        return cls(env, services, config_commit, stored)

    @classmethod
    def from_yaml(cls, env: str, raw: bytes | None, where: str = "") -> EnvState:
        """The state from a format-1 ``<env>/state.yaml``, checked (StateError)."""
        if not raw:
            return cls(env)
        path = legacy_state_path(env)
        import yaml  # format 1 only: today's records are JSON

        try:
            data = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f" at line {mark.line + 1}" if mark is not None else ""
            raise StateError(path, where, "", f"is not valid YAML{line} ({exc.problem})") from None
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
            raise StateError(path, where, "", f"cannot be read ({type(exc).__name__})") from None
        if data is None:
            return cls(env)
        if not isinstance(data, dict):
            raise StateError(path, where, "", f"must be a mapping, not {_kind(data)}")
        version = data.get(VERSION_KEY, 1)
        _check_version(path, where, version)
        written_for = data.get("env", env)
        if written_for != env:
            raise StateError(
                path, where, "env", f"says {written_for!r}, but the file is in {env}/",
                f"this is another environment's record; restore {path} from the commit "
                "before it was copied (git revert in a clone of the deploy repo, then push)",
            )  # fmt: skip
        raw_services = data.get("services") or {}
        if not isinstance(raw_services, dict):
            raise StateError(
                path, where, "services", f"must be a mapping, not {_kind(raw_services)}"
            )
        services = {}
        for name, item in raw_services.items():
            if not isinstance(name, str) or not name:
                raise StateError(path, where, f"services.{name}", "service names must be strings")
            if not isinstance(item, dict):
                raise StateError(
                    path, where, f"services.{name}", f"must be a mapping, not {_kind(item)}"
                )
            services[name] = ServiceState.from_dict(item, path, where, f"services.{name}.")
        commit = data.get("config_commit")
        if commit is not None and not isinstance(commit, str):
            raise StateError(path, where, "config_commit", f"must be a string, not {_kind(commit)}")
        return cls(env, services, commit or None)


# -- encoding and checking -------------------------------------------------------------


_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False)
_ENCODE = _ENCODER.encode  # what every key and value of a record is written as


# None on an interpreter without the C accelerator (then `_ENCODE` writes every value)
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_ENCODE_STRING = json.encoder.encode_basestring  # what `_ENCODE` writes a string with


def _value_writer() -> typing.Callable[[Any], str]:
    """A function writing one value exactly as `_ENCODE` does, without its Python layers.

    `_ENCODE` goes through `JSONEncoder.iterencode`, which builds a new C encoder for every
    value that is not a string; a record is ~100 keys and values, and a cold read compares
    thousands of records with their encoding. Here strings go to the C string encoder (as
    `_ENCODE` sends them), whole numbers, None and booleans are written as the C encoder
    writes them, dicts and lists go to one C encoder built as `_ENCODE` builds it (same
    separators, key sorting and errors), and anything else to `_ENCODE` itself.

    One writer per record: its circular-reference markers are its own (left over only
    after an error, when the writer is dropped).
    """
    if _C_ENCODER is None:
        return _ENCODE
    enc = _ENCODER
    nested = _C_ENCODER(
        {} if enc.check_circular else None, enc.default, _ENCODE_STRING, enc.indent,
        enc.key_separator, enc.item_separator, enc.sort_keys, enc.skipkeys, enc.allow_nan,
    )  # fmt: skip
    encode_string, write_int, encode = _ENCODE_STRING, int.__repr__, _ENCODE

    def write(value: Any) -> str:
        kind = type(value)
        if kind is str:
            return encode_string(value)
        if kind is int:
            return write_int(value)
        if value is None:
            return "null"
        if kind is bool:
            return "true" if value else "false"
        if kind is dict or kind is list:
            return "".join(nested(value, 0))
        return encode(value)

    return write


def _encode_record(data: dict[str, Any]) -> bytes:
    """Sorted keys, one top-level key (and one key of ``values``) per line.

    Git diffs of a record then show what changed line by line, and the C encoder
    does the nested parts (``json.dumps(indent=...)`` falls back to pure Python).
    Each key and value is written as `_ENCODE` writes it: strings (most of them) by the
    C string encoder here, as `_ENCODE` does, the others by `_value_writer`.
    """
    text, string = _value_writer(), _ENCODE_STRING
    lines = []
    for key in sorted(data):
        value = data[key]
        if key == "values" and isinstance(value, dict) and value:
            inner = ",\n".join(
                [
                    f"  {string(k) if type(k) is str else text(k)}: "
                    f"{string(v) if type(v) is str else text(v)}"
                    for k in sorted(value)
                    for v in (value[k],)
                ]
            )
            lines.append(f" {string(key)}: {{\n{inner}\n }}")
        else:
            key_text = string(key) if type(key) is str else text(key)
            lines.append(f" {key_text}: {string(value) if type(value) is str else text(value)}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


def _service_from_json(path: str, raw: bytes, where: str, match: re.Match[str]) -> ServiceState:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StateError(
            path,
            where,
            "",
            f"is not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})",
        ) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise StateError(path, where, "", f"cannot be read ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise StateError(path, where, "", f"must be a JSON object, not {_kind(data)}")
    if VERSION_KEY not in data:
        raise StateError(path, where, VERSION_KEY, "is missing (every record states its format)")
    _check_version(path, where, data[VERSION_KEY])
    if data.get("service") != match["service"]:
        raise StateError(
            path, where, "service",
            f"says {data.get('service')!r}, but the file is named for {match['service']!r}",
        )  # fmt: skip
    return ServiceState.from_dict(data, path, where)


def _env_from_json(path: str, raw: bytes, where: str, env: str) -> str | None:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise StateError(path, where, "", "is not valid JSON") from None
    if not isinstance(data, dict):
        raise StateError(path, where, "", f"must be a JSON object, not {_kind(data)}")
    if VERSION_KEY not in data:
        raise StateError(path, where, VERSION_KEY, "is missing (every record states its format)")
    _check_version(path, where, data[VERSION_KEY])
    if data.get("env") != env:
        raise StateError(path, where, "env", f"says {data.get('env')!r}, but the file is in {env}/")
    commit = data.get("config_commit")
    if commit is not None and not isinstance(commit, str):
        raise StateError(path, where, "config_commit", f"must be a string, not {_kind(commit)}")
    return commit or None


def _check_version(path: str, where: str, version: object) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StateError(
            path, where, VERSION_KEY, f"must be a format number such as {STATE_VERSION}, "
            f"not {version!r}",
        )  # fmt: skip
    if version > STATE_VERSION:
        raise StateError(
            path, where, VERSION_KEY,
            f"is {version}: written by a newer configcenter (this one reads formats up to "
            f"{STATE_VERSION})",
            "upgrade configcenter to the version that wrote this deploy repo; an older one "
            "must not overwrite what it cannot read",
        )  # fmt: skip


def _kind(value: object) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "empty (null)"
    for kind, name in names.items():
        if isinstance(value, kind):
            return f"{name} ({_short(value)})" if kind in (str, bool) else name
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    return f"a {type(value).__name__}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


Checker = typing.Callable[[Any, str, str, str], Any]  # (value, path, where, key) -> value
_ONLY_STR = frozenset({str})


@functools.cache
def _optional_fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, whether None is its default) for every field of dataclass ``cls``."""
    return tuple((f.name, f.default is None) for f in fields(cls))


@functools.cache
def _fields_of(cls: type) -> tuple[tuple[str, bool, frozenset[type], Checker], ...]:
    """(name, required, the types its checker returns as they are, checker) of every field
    of dataclass ``cls``, built once."""
    hints = typing.get_type_hints(cls)
    return tuple(
        (
            f.name,
            f.default is MISSING and f.default_factory is MISSING,
            _exact_types(hints[f.name]),
            _checker(hints[f.name]),
        )
        for f in fields(cls)
    )


_SCALAR_TYPES = frozenset({bool, int, float, str})


def _exact_types(hint: Any) -> frozenset[type]:
    """The types of the values `_checker(hint)` returns unchanged without a look inside them
    (scalars, None where allowed), so `_build` takes those as they are; empty: always check."""
    if hint in _SCALAR_TYPES:
        return frozenset({hint, int}) if hint is float else frozenset({hint})
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        kinds = [_exact_types(o) if o is not type(None) else frozenset({o}) for o in options]
        if all(kinds):
            return frozenset().union(*kinds)
    return frozenset()


def _build(cls: type, data: Mapping[str, Any], path: str, where: str, prefix: str) -> Any:
    """An instance of dataclass ``cls`` from ``data``, each field checked against its type.

    Fields without a default are required; unknown keys are ignored (a newer
    configcenter of the same format may add fields with defaults).
    """
    kwargs: dict[str, Any] = {}
    for name, required, exact, check in _fields_of(cls):
        if name in data:
            value = data[name]
            kwargs[name] = (
                value if type(value) in exact else check(value, path, where, prefix + name)
            )
        elif required:
            raise StateError(path, where, prefix + name, "is missing")
    return cls(**kwargs)


def _scalar(kind: type, wanted: str) -> Checker:
    def check(value: Any, path: str, where: str, key: str) -> Any:
        if type(value) is kind or (
            kind is float and type(value) is int  # a whole number is a fine float
        ):
            return value
        raise StateError(path, where, key, f"must be {wanted}, not {_kind(value)}")

    return check


@functools.cache
def _checker(hint: Any) -> Checker:
    """A function checking a value against type ``hint`` (as written on the dataclasses).

    Built once per type; containers of plain scalars are checked in one pass.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        optional = len(options) < len(typing.get_args(hint))
        inner = [_checker(o) for o in options]

        def union(value: Any, path: str, where: str, key: str) -> Any:
            if value is None and optional:
                return None
            for check in inner[:-1]:
                try:
                    return check(value, path, where, key)
                except StateError:
                    continue
            return inner[-1](value, path, where, key)

        return union
    if hint is Any:
        return lambda value, path, where, key: value
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):

        def record(value: Any, path: str, where: str, key: str) -> Any:
            if not isinstance(value, dict):
                raise StateError(path, where, key, f"must be a mapping, not {_kind(value)}")
            return _build(hint, value, path, where, key + ".")

        return record
    if origin is dict:
        key_type, value_type = typing.get_args(hint) or (Any, Any)
        check_key, check_value = _checker(key_type), _checker(value_type)
        plain = key_type is str and value_type in (str, Any)

        def mapping(value: Any, path: str, where: str, key: str) -> Any:
            if not isinstance(value, dict):
                raise StateError(path, where, key, f"must be a mapping, not {_kind(value)}")
            if (
                plain
                and _ONLY_STR.issuperset(map(type, value))  # each exactly a str, in C
                and (value_type is Any or _ONLY_STR.issuperset(map(type, value.values())))
            ):
                return value
            return {
                check_key(k, path, where, f"{key}.{k}"): check_value(v, path, where, f"{key}.{k}")
                for k, v in value.items()
            }

        return mapping
    if origin is list:
        (item_type,) = typing.get_args(hint) or (Any,)
        check_item = _checker(item_type)

        def sequence(value: Any, path: str, where: str, key: str) -> Any:
            if not isinstance(value, list):
                raise StateError(path, where, key, f"must be a list, not {_kind(value)}")
            if item_type is str and _ONLY_STR.issuperset(map(type, value)):
                return value
            return [check_item(v, path, where, f"{key}[{i}]") for i, v in enumerate(value)]

        return sequence
    wanted = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    if hint in wanted:
        return _scalar(hint, wanted[hint])
    raise TypeError(f"the state reader does not know how to check a {hint!r}")
