"""The shared secret resolver: env: and file: refs, and errors that never carry values."""

from __future__ import annotations

from pathlib import Path

import pytest

from configcenter.adapters.secrets import SecretError, resolve_secret, secret_scheme


def test_env_and_file_refs_resolve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CC_TEST_SECRET", "from-env")
    crlf, plain, inner = tmp_path / "crlf", tmp_path / "plain", tmp_path / "inner"
    crlf.write_bytes(b"from-file\r\n")
    plain.write_text("no-newline")
    inner.write_text("line one\nline two\n")
    seen: list[str] = []

    assert resolve_secret("env:CC_TEST_SECRET", on_resolved=seen.append) == "from-env"
    assert resolve_secret(f"file:{crlf}") == "from-file"
    assert resolve_secret(f"file:{plain}") == "no-newline"
    assert resolve_secret(f"file:{inner}") == "line one\nline two"
    assert seen == ["from-env"]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("plain-text", "is not a secret reference"),
        ("vault:kv/db", "unknown scheme 'vault'"),
        ("env:", "nothing after 'env:'"),
        ("env:1BAD", "not an environment variable name"),
        ("env:CC_TEST_UNSET", "CC_TEST_UNSET is not set; export CC_TEST_UNSET"),
        ("file:relative/path", "must be absolute paths"),
        ("file:/nonexistent/cc-secret", "does not exist"),
        ("k8s:shop/db/password", "only be resolved by the Kubernetes adapter"),
    ],
)
def test_bad_refs_are_named(monkeypatch: pytest.MonkeyPatch, ref: str, message: str) -> None:
    monkeypatch.delenv("CC_TEST_UNSET", raising=False)
    with pytest.raises(SecretError, match=message) as caught:
        resolve_secret(ref)
    assert caught.value.ref == ref
    assert repr(ref) in str(caught.value)


def test_empty_values_and_directories_are_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CC_TEST_EMPTY", "")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SecretError, match="CC_TEST_EMPTY is empty"):
        resolve_secret("env:CC_TEST_EMPTY")
    with pytest.raises(SecretError, match="is empty"):
        resolve_secret(f"file:{empty}")
    with pytest.raises(SecretError, match="is a directory"):
        resolve_secret(f"file:{tmp_path}")


def test_errors_never_carry_the_value(tmp_path: Path) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe-top-secret-bytes")
    with pytest.raises(SecretError) as caught:
        resolve_secret(f"file:{binary}")
    assert "top-secret" not in str(caught.value)
    assert "not UTF-8" in str(caught.value)


def test_scheme_is_checked_without_resolving() -> None:
    assert secret_scheme("k8s:shop/db/password") == "k8s"
    assert secret_scheme("env:ANY_NAME_AT_ALL") == "env"
