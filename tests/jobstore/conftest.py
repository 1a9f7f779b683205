"""The job store contract suite runs once per adapter: SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from configcenter.ports.jobstore import JobStore
from configcenter.wiring import open_job_store


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A run store URL naming an empty database of each kind (jobs sit beside the runs)."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'state' / 'runs.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    opened = open_job_store(store_url)
    try:
        yield opened
    finally:
        opened.close()
