"""The run store contract suite runs once per adapter: SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from configcenter.core.redact import Redactor
from configcenter.ports.runstore import RunStore
from configcenter.wiring import open_run_store


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL naming an empty store of each kind."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'state' / 'runs.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


@pytest.fixture
def store(store_url: str, redactor: Redactor) -> Iterator[RunStore]:
    opened = open_run_store(store_url, redactor)
    try:
        yield opened
    finally:
        opened.close()
