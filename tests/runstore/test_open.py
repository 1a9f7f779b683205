"""Opening a run store by URL, and what each adapter adds to the shared contract."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import psycopg
import pytest

from configcenter.adapters.postgres_runs import PostgresRunStore
from configcenter.adapters.runstores import default_sqlite_path, mask_url
from configcenter.adapters.sqlite_runs import SqliteRunStore
from configcenter.core.redact import Redactor
from configcenter.ports.runstore import RunStoreError
from configcenter.wiring import open_run_store
from tests.support.helpers import free_port
from tests.support.postgres_fixtures import PostgresServer

# -- choosing by URL ---------------------------------------------------------------


def test_no_url_means_the_sqlite_file_in_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    store = open_run_store(None)
    try:
        assert isinstance(store, SqliteRunStore)
        expected = tmp_path / "state" / "configcenter" / "runs.sqlite3"
        assert store.path == expected == default_sqlite_path()
        store.start("apply", "dev", ["api"], "cli", "alice")
    finally:
        store.close()
    # Logs may say a lot about a system: only their owner can read them.
    assert stat.S_IMODE(expected.stat().st_mode) == 0o600
    assert stat.S_IMODE(expected.parent.stat().st_mode) == 0o700
    with sqlite3.connect(expected) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_relative_xdg_state_home_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_sqlite_path() == tmp_path / ".local/state/configcenter/runs.sqlite3"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_sqlite_path() == tmp_path / ".local/state/configcenter/runs.sqlite3"


def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    store = open_run_store("sqlite://~/cc/runs.db")
    try:
        assert isinstance(store, SqliteRunStore)
        assert store.path == tmp_path / "cc" / "runs.db"
    finally:
        store.close()
    for bad in ("sqlite://", "sqlite:/x.db", "sqlite:"):
        with pytest.raises(RunStoreError, match=r"no file path: write sqlite:///path"):
            open_run_store(bad)


def test_unsupported_urls_are_named_without_their_password() -> None:
    with pytest.raises(RunStoreError) as caught:
        open_run_store("mysql://ops:Sup3rS3cret@db.example.com:3306/runs")
    message = str(caught.value)
    assert "Sup3rS3cret" not in message
    assert "mysql://ops:***@db.example.com:3306/runs" in message
    assert "sqlite:///path/to/runs.sqlite3" in message and "postgresql://" in message
    with pytest.raises(RunStoreError, match=r"unsupported run store URL '/var/runs\.db'"):
        open_run_store("/var/runs.db")


def test_mask_url() -> None:
    assert mask_url("postgresql://u:p%40ss@h:5/db") == "postgresql://u:***@h:5/db"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_url("postgresql://h/db?user=u&password=xyz&sslmode=require") == (
        "postgresql://h/db?user=u&password=***&sslmode=require"
    )
    assert mask_url("postgresql://u:p@[::1]:5432/db") == "postgresql://u:***@[::1]:5432/db"


def test_an_unwritable_sqlite_path_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(RunStoreError, match=r"cannot open the run store file .*sqlite:///path"):
        open_run_store(f"sqlite://{blocker}/runs.sqlite3")


# -- SQLite: waiting for other writers ------------------------------------------------


def test_a_writer_that_never_lets_go_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    store = SqliteRunStore(path, busy_timeout=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        run = store.start("apply", "dev", ["api"], "cli", "alice")
        other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        with pytest.raises(RunStoreError, match=r"stayed locked by another process for 0\.2s"):
            store.append_log(run.id, "blocked\n")
        assert store.get(run.id) is not None  # readers are not blocked in WAL mode
        other.execute("ROLLBACK")
        store.append_log(run.id, "through\n")
        got = store.get(run.id)
        assert got is not None and got.log == "through\n"
    finally:
        other.close()
        store.close()


# -- PostgreSQL: connections ---------------------------------------------------------


def test_a_wrong_password_is_reported_without_any_password(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    wrong = postgres_url.replace(postgres_server.password, "Wr0ngPassw0rd")
    with pytest.raises(RunStoreError) as caught:
        open_run_store(wrong)
    message = str(caught.value)
    assert "cannot connect to the run store at postgresql://postgres:***@127.0.0.1" in message
    assert "password authentication failed" in message
    assert "Wr0ngPassw0rd" not in message and postgres_server.password not in message
    assert caught.value.__cause__ is None and caught.value.__context__ is not None


def test_no_server_listening(postgres_server: PostgresServer) -> None:
    url = f"postgresql://postgres:pw-not-shown@127.0.0.1:{free_port()}/x"
    with pytest.raises(RunStoreError, match=r"cannot connect .*postgres:\*\*\*@") as caught:
        PostgresRunStore(url, connect_timeout=3)
    assert "pw-not-shown" not in str(caught.value)


def test_a_dropped_connection_is_replaced(postgres_url: str) -> None:
    store = open_run_store(postgres_url, Redactor())
    try:
        run = store.start("reconcile", "prod", ["api"], "schedule", "serve")
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'configcenter' AND datname = current_database()"
            ).fetchall()
        assert killed == [(True,)]
        store.append_log(run.id, "after the server dropped us\n")
        got = store.get(run.id)
        assert got is not None and got.log == "after the server dropped us\n"
    finally:
        store.close()


def test_the_postgres_fixture_runs_as_a_real_server(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url()) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None and row[0] >= 130000
    if os.geteuid() == 0:
        assert postgres_server.process is not None
        assert Path(f"/proc/{postgres_server.process.pid}").stat().st_uid != 0
