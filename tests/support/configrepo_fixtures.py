"""Fixtures for tests that drive a config repo: a fresh basic repo per test, a private cache.

tests/unit and tests/cli import them in their conftest.py (the cache fixture is
autouse there, so it is not registered for every folder).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.configrepo import ConfigRepo, MemoryRepo


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the Jinja bytecode cache (and any other cache) out of the user's home."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def repo(tmp_path: Path) -> ConfigRepo:
    return ConfigRepo.basic(tmp_path / "shop-config")


@pytest.fixture
def memory_repo() -> MemoryRepo:
    """The basic repo in memory, for tests that change files only."""
    return MemoryRepo.basic()
