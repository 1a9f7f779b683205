"""The job store contract suite runs once per adapter: SQLite and PostgreSQL.

The jobs sit beside the runs, so the store is named by the run store's URL:
`store_url` is the run store suite's fixture (an empty database of each kind).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from configcenter.ports.jobstore import JobStore
from configcenter.wiring import open_job_store
from tests.runstore.conftest import store_url

__all__ = ["store", "store_url"]


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    opened = open_job_store(store_url)
    try:
        yield opened
    finally:
        opened.close()
