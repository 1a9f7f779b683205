"""The state record format: per-service JSON, read back exactly, checked, migrated from YAML."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import pytest

from configcenter.core.state import (
    STATE_VERSION,
    EnvState,
    Release,
    ServiceState,
    StateError,
    legacy_state_path,
    state_path,
)
from tests.support.configrepo import legacy_state_yaml

API = state_path("dev", "api")


def record(**changes: Any) -> ServiceState:
    release = Release("api-1", "healthy", "2026-11-23T04:46:00Z", run="run-1", image="api:1")
    base = ServiceState(
        template_tag="1.0.0",
        template_commit="c0ffee",
        template_tree="7ree",
        values_digest="sha256:v",
        values={"LOG_LEVEL": "info", "nested": {"n": 1, "b": True}, "pw": {"secret": "env:PW"}},
        replicas=2,
        image="registry.test/api:1",
        image_digest=None,
        build_key=None,
        rendered_digest="sha256:r",
        inputs_digest="sha256:i",
        files={"app.env": "sha256:f", "conf/app.conf": "sha256:g"},
        platform="local",
        env_keys=["LOG_LEVEL"],
        release=release,
        last_good=release,
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def env_state() -> EnvState:
    return EnvState("dev", {"api": record(), "db": record(replicas=1, platform=None)})


def test_files_read_back_to_the_same_state() -> None:
    state = env_state()
    files = state.files()
    assert set(files) == {"dev/.state/api.json", "dev/.state/db.json"}
    again = EnvState.from_files("dev", files)
    assert again == state
    assert again.stored == files
    assert again.changes() == {}  # read back unchanged: nothing to write


def test_a_record_is_sorted_json_one_key_per_line_with_its_format() -> None:
    text = env_state().files()[API].decode()
    data = json.loads(text)
    assert data["configcenter_state"] == STATE_VERSION and data["service"] == "api"
    assert list(data) == sorted(data)
    assert '\n "replicas": 2,\n' in text and '\n  "LOG_LEVEL": "info",\n' in text
    assert "last_failed" not in data  # None releases are left out, as before


def test_changes_rewrite_only_the_records_that_changed_and_delete_removed_ones() -> None:
    stored = EnvState.from_files("dev", env_state().files())
    new = EnvState("dev", dict(stored.services))
    new.services["api"] = record(replicas=5)
    del new.services["db"]
    new.services["web"] = record()
    changes = new.changes(stored)
    assert set(changes) == {API, "dev/.state/web.json", "dev/.state/db.json"}
    assert changes["dev/.state/db.json"] is None
    assert json.loads(changes[API] or b"")["replicas"] == 5


def test_a_format_1_state_yaml_is_read_and_replaced_on_the_next_commit() -> None:
    state = env_state()
    legacy = {legacy_state_path("dev"): legacy_state_yaml(state)}
    read = EnvState.from_files("dev", legacy)
    assert read.services == state.services
    changes = read.changes()  # unchanged records: still migrated, all of them
    assert changes[legacy_state_path("dev")] is None
    assert {p: d for p, d in changes.items() if d is not None} == state.files()
    # Once both exist (a commit that migrated), the records win over the old file.
    both = EnvState.from_files("dev", {**legacy, API: record(replicas=9).to_json("api")})
    assert set(both.services) == {"api"} and both.services["api"].replicas == 9


def test_an_empty_or_absent_state_is_an_empty_env() -> None:
    assert EnvState.from_files("dev", {}) == EnvState("dev")
    assert EnvState.from_files("dev", {legacy_state_path("dev"): b""}).services == {}


def edit(change: Callable[[dict[str, Any]], object]) -> bytes:
    data = json.loads(record().to_json("api"))
    change(data)
    return json.dumps(data).encode()


def _set(key: str, value: object) -> Callable[[dict[str, Any]], object]:
    return lambda data: data.__setitem__(key, value)


CORRUPT_JSON: dict[str, tuple[bytes, str, str]] = {
    # case: (file content, key named, words in the message)
    "truncated": (record().to_json("api")[:200], "", "is not valid JSON at line"),
    "garbage bytes": (b"\xff\xfe\x00binary", "", "cannot be read"),
    "a list": (b"[1, 2]", "", "must be a JSON object, not a list"),
    "replicas many": (edit(_set("replicas", "many")), "replicas", "whole number, not a string"),
    "replicas bool": (edit(_set("replicas", True)), "replicas", "whole number, not a boolean"),
    "files a list": (edit(_set("files", ["app.env"])), "files", "must be a mapping, not a list"),
    "file digest": (edit(_set("files", {"app.env": 3})), "files.app.env", "must be a string"),
    "values text": (edit(_set("values", "x")), "values", "must be a mapping"),
    "missing key": (edit(lambda d: d.pop("template_tag")), "template_tag", "is missing"),
    "no version": (edit(lambda d: d.pop("configcenter_state")), "configcenter_state", "missing"),
    "version text": (edit(_set("configcenter_state", "two")), "configcenter_state", "'two'"),
    "other service": (edit(_set("service", "db")), "service", "named for 'api'"),
    "release text": (edit(_set("release", "yesterday")), "release", "must be a mapping"),
    "release no id": (
        edit(lambda d: d["release"].pop("id")),
        "release.id",
        "is missing",
    ),
    "env keys": (edit(_set("env_keys", [1])), "env_keys[0]", "must be a string"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_JSON))
def test_a_corrupt_record_names_the_file_the_key_and_the_fix(case: str) -> None:
    raw, key, words = CORRUPT_JSON[case]
    with pytest.raises(StateError) as caught:
        EnvState.from_files("dev", {API: raw, "dev/.state/db.json": record().to_json("db")}, "rev")
    message = str(caught.value)
    assert message.startswith(f"{API} (rev)"), message
    assert (f"key '{key}'" in message) if key else ("key '" not in message), message
    assert words in message, message
    assert "Fix: " in message and "git revert" in message, message
    assert caught.value.path == API and caught.value.key == key


def test_a_record_from_a_newer_configcenter_is_refused_with_its_version() -> None:
    raw = edit(_set("configcenter_state", STATE_VERSION + 1))
    with pytest.raises(StateError) as caught:
        EnvState.from_files("dev", {API: raw})
    message = str(caught.value)
    assert f"is {STATE_VERSION + 1}: written by a newer configcenter" in message
    assert f"reads formats up to {STATE_VERSION}" in message and "upgrade configcenter" in message


def test_a_stray_file_among_the_records_is_named() -> None:
    with pytest.raises(StateError, match=r"dev/.state/notes.txt: is not a state record"):
        EnvState.from_files("dev", {"dev/.state/notes.txt": b"hello"})


LEGACY = legacy_state_path("dev")
CORRUPT_YAML: dict[str, tuple[bytes, str, str]] = {
    "truncated": (b"env: dev\nservices:\n  api: {template_tag: [\n", "", "not valid YAML at line"),
    "not a mapping": (b"- 1\n- 2\n", "", "must be a mapping, not a list"),
    "services number": (b"services: 30\n", "services", "must be a mapping, not a number"),
    "service text": (b"services: {api: running}\n", "services.api", "must be a mapping"),
    "replicas many": (
        legacy_state_yaml(env_state()).replace(b"replicas: 2", b"replicas: many"),
        "services.api.replicas",
        "whole number, not a string ('many')",
    ),
    "other env": (b"env: prod\nservices: {}\n", "env", "says 'prod'"),
    "newer": (b"configcenter_state: 7\nservices: {}\n", "configcenter_state", "newer"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_YAML))
def test_a_corrupt_format_1_file_names_the_file_the_key_and_the_fix(case: str) -> None:
    raw, key, words = CORRUPT_YAML[case]
    with pytest.raises(StateError) as caught:
        EnvState.from_files("dev", {LEGACY: raw})
    message = str(caught.value)
    assert message.startswith(LEGACY) and words in message and "Fix: " in message, message
    assert (f"key '{key}'" in message) if key else ("key '" not in message), message


def test_a_yaml_alias_bomb_in_a_format_1_file_is_an_error_not_a_hang() -> None:
    raw = b"a: &a [x]\nb: &b [*a, *a]\nservices: [*b, *b, *b]\n"
    with pytest.raises(StateError, match="services"):
        EnvState.from_files("dev", {LEGACY: raw})


def test_the_environment_s_config_commit_has_its_own_record() -> None:
    state = env_state()
    state.config_commit = "c0ffee" * 6
    files = state.files()
    assert json.loads(files["dev/.state/_env.json"])["config_commit"] == "c0ffee" * 6
    again = EnvState.from_files("dev", files)
    assert again == state and again.changes() == {}
    # Changing only a service rewrites only its record; the env record stays.
    again.services["db"] = record(replicas=4)
    assert set(again.changes()) == {"dev/.state/db.json"}
    # And it survives the migration from format 1.
    migrated = EnvState.from_files("dev", {LEGACY: legacy_state_yaml(state)})
    assert migrated.config_commit == state.config_commit
    assert "dev/.state/_env.json" in migrated.changes()


def test_a_service_record_without_optional_fields_reads_with_their_defaults() -> None:
    data = json.loads(record(platform=None, last_good=None).to_json("api"))
    assert "platform" not in data and "last_good" not in data and "config_commit" not in data
    assert data["image_digest"] is None  # no default: always written
    state = EnvState.from_files("dev", {API: record(platform=None, last_good=None).to_json("api")})
    assert state.services["api"] == record(platform=None, last_good=None)


def test_a_record_is_written_as_the_json_encoder_writes_each_key() -> None:
    """Records are encoded key by key (one per line, for readable diffs): each key and value
    as `json.JSONEncoder(sort_keys=True, ensure_ascii=False)` writes it, whatever its type."""
    encode = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
    odd = {
        "plain": "x",
        "quotes": 'a "b" \\ c',
        "unicode": "é\u2028\x00\n",
        "empty": "",
        "int": -12,
        "big": 10**30,
        "true": True,
        "false": False,
        "none": None,
        "float": 1.5,
        "list": [1, "two", None, {"z": 1, "a": 2}],
        "map": {"b": [True], "a": "é"},
        "secret": {"secret": "env:DB_PASSWORD"},
    }
    raw = record(values=odd).to_json("api").decode()
    lines = raw.split("\n")  # not splitlines: U+2028 is written as it is
    start = lines.index(' "values": {')
    written = lines[start + 1 : start + 1 + len(odd)]
    expected = [f"  {encode(k)}: {encode(odd[k])}" for k in sorted(odd)]
    assert [line.rstrip(",") for line in written] == expected
    assert json.loads(raw)["values"] == odd


def _encode_record_as_before(data: dict[str, Any]) -> bytes:
    """How records were written before the faster encoder (the definition it must match)."""
    encode = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
    lines = []
    for key in sorted(data):
        value = data[key]
        if key == "values" and isinstance(value, dict) and value:
            inner = ",\n".join(f"  {encode(k)}: {encode(value[k])}" for k in sorted(value))
            lines.append(f" {encode(key)}: {{\n{inner}\n }}")
        else:
            lines.append(f" {encode(key)}: {encode(value)}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


def _record_as_before(state: ServiceState, service: str) -> bytes:
    data: dict[str, Any] = {"configcenter_state": STATE_VERSION, "service": service}
    for f in fields(ServiceState):
        value = getattr(state, f.name)
        if isinstance(value, Release):
            data[f.name] = {k: v for k, v in value.__dict__.items() if v not in ("", 0)}
        elif value is not None or f.default is not None:
            data[f.name] = value
    return _encode_record_as_before(data)


VARIED_VALUES: dict[str, dict[str, Any]] = {
    "empty": {},
    "unicode": {"é": "ünï\u2028cödé \U0001f600", "日本": "語", "ctl": "\x00\x1f\t\r\n\x7f"},
    "quotes": {'k"ey': 'a "b" \\ c', "back\\slash": "\\u0000", "slash": "a/b"},
    "scalars": {"none": None, "t": True, "f": False, "zero": 0, "neg": -7, "big": 10**40},
    "floats": {"f": 1.5, "g": -0.0, "e": 1e300, "tiny": 5e-324, "whole": 2.0},
    "nested": {
        "map": {"z": [1, {"b": None, "a": [True, False]}], "a": {}, "é": "x"},
        "list": [[], [[]], {"k": [1.25, "s"]}, None],
        "emptylist": [],
        "emptymap": {},
    },
    "secrets": {"pw": {"secret": "env:DB_PASSWORD"}, "key": {"secret": "vault:kv/app#key"}},
    "nul_and_marks": {"a": "\x000\x00", "b": {"c": "\x00"}, "\x00": 1},
}


@pytest.mark.parametrize("case", sorted(VARIED_VALUES))
def test_the_encoder_writes_the_bytes_records_were_written_with_before(case: str) -> None:
    """`to_json` writes what the per-key JSON encoder wrote, byte for byte, on varied records:
    values of every kind, releases, empty and absent optional fields."""
    release = Release(
        "api-2", "failed", "2026-12-01T00:00:00Z", run="r", image="api:2", reason="ünï \"x\"",
        secrets_generation=3, scale_of="api-1", scale_of_digest="sha256:s",
    )  # fmt: skip
    variants = [
        record(values=VARIED_VALUES[case]),
        record(values=VARIED_VALUES[case], last_failed=release, release=release, last_good=None),
        record(
            values=VARIED_VALUES[case],
            replicas=None,
            platform=None,
            consumes=["*", "é"],
            config_commit="c0ffee",
            stages={"canary": {"weight": 10, "done": [1.5, None]}},
            files={},
            env_keys=[],
            image_digest="sha256:d",
            build_key="bk",
            secrets_generation=0,
            template_commit=None,
        ),
    ]
    for state in variants:
        for service in ("api", "sérvice"):
            written = state.to_json(service)
            assert written == _record_as_before(state, service)
            assert (
                EnvState.from_files("dev", {state_path("dev", service): written}).services[service]
                == state
            )
    assert EnvState("dev", config_commit="c0ffee").files() == {
        "dev/.state/_env.json": _encode_record_as_before(
            {"configcenter_state": STATE_VERSION, "env": "dev", "config_commit": "c0ffee"}
        )
    }
