"""Shared pieces of the hardening tests: a sentinel file outside every repo, and finders."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.configrepo import ConfigRepo


@pytest.fixture
def sentinel(tmp_path: Path) -> tuple[Path, bytes]:
    """A file outside the config repo standing in for ~/.ssh/id_rsa or /etc/passwd.

    Several lines, so an error that echoes "only the offending line" still cannot
    carry the secret part (the second line).
    """
    secret = f"SENTINEL-{uuid.uuid4().hex}".encode()
    path = tmp_path / "outside" / "id_rsa"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\n" + secret + b"\nroot:x:0:0\n")
    return path, secret


def files_containing(root: Path, needle: bytes) -> list[Path]:
    """Every regular file under `root` whose bytes contain `needle` (links not followed)."""
    found = []
    if not root.exists():
        return found
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        if needle in path.read_bytes():
            found.append(path)
    return found


@pytest.fixture
def repo(tmp_path: Path) -> ConfigRepo:
    """The basic shop config repo (api and db released as 1.0.0; dev and prod)."""
    return ConfigRepo.basic(tmp_path / "config")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process loads and renders keep their caches in the test's own directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
