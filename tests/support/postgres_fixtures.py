"""A throwaway PostgreSQL cluster for the tests, from Debian's server binaries.

One cluster per test session (initdb takes seconds), a fresh database per test.
The server listens on 127.0.0.1 on a free port with password (SCRAM) auth, so
tests use a URL with a password in it, as a real deployment would.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import free_port

START_DEADLINE = 60.0  # seconds for the server to accept connections
STOP_DEADLINE = 30.0
SUPERUSER = "postgres"


def find_postgres_bindir() -> Path | None:
    """Where initdb and postgres live: $PG_BINDIR, Debian's versioned dir, or PATH."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(debian)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    return None


@dataclass
class PostgresServer:
    bindir: Path
    base: Path
    host: str
    port: int
    user: str
    password: str
    process: subprocess.Popen[bytes] | None = None

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def _run_as(user: str | None) -> dict[str, Any]:
    """Popen arguments that drop root to `user` (initdb and postgres refuse root)."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _start(server: PostgresServer, run_as: str | None) -> subprocess.Popen[bytes]:
    sock_dir = server.base / "sock"
    log = server.log_path.open("ab")
    try:
        process = subprocess.Popen(
            [
                str(server.bindir / "postgres"),
                "-D",
                str(server.base / "data"),
                "-p",
                str(server.port),
                "-k",
                str(sock_dir),
                "-c",
                "listen_addresses=127.0.0.1",
                # A throwaway cluster: durability buys nothing here, speed does.
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=100",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=server.base,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
            **_run_as(run_as),
        )
    finally:
        log.close()
    return process


def _wait_ready(server: PostgresServer, process: subprocess.Popen[bytes]) -> bool:
    """True once a real login works; False if the server exited (e.g. port taken)."""
    import psycopg

    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with psycopg.connect(server.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            time.sleep(0.05)
    _stop(process)
    pytest.fail(
        f"PostgreSQL did not accept connections within {START_DEADLINE:g}s; "
        f"server log:\n{server.log_tail()}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)  # "fast" shutdown: disconnect clients, stop
    try:
        process.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_DEADLINE)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running cluster; skipped only where the server binaries are not installed."""
    bindir = find_postgres_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, postgres) not found: "
            "apt-get install postgresql, or set PG_BINDIR"
        )
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            pytest.fail("running as root needs the 'postgres' user: apt-get install postgresql")
        run_as = SUPERUSER
    base = Path(tempfile.mkdtemp(prefix="cc-pg-"))
    password = secrets.token_urlsafe(18)
    server = PostgresServer(bindir, base, "127.0.0.1", 0, SUPERUSER, password)
    try:
        (base / "sock").mkdir()
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        if run_as is not None:
            owner = pwd.getpwnam(run_as)
            for path in (base, base / "sock", pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        init = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(base / "data"),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            cwd=base,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
            check=False,
            timeout=300,
            **_run_as(run_as),
        )
        if init.returncode != 0:
            pytest.fail(
                f"initdb failed (exit {init.returncode}) as {run_as or getpass.getuser()}:\n"
                + init.stderr.decode(errors="replace")
            )
        pwfile.unlink()
        # A free port can be taken between choosing it and binding it: try again.
        for _ in range(5):
            server.port = free_port()
            process = _start(server, run_as)
            if _wait_ready(server, process):
                server.process = process
                break
            _stop(process)
        else:
            pytest.fail(f"PostgreSQL would not start; server log:\n{server.log_tail()}")
        yield server
    finally:
        if server.process is not None:
            _stop(server.process)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's cluster, dropped afterwards."""
    import psycopg

    dbname = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        yield postgres_server.url(dbname)
    finally:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(postgres_server.url(), autocommit=True) as admin,
        ):
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
