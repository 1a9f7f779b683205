"""Bullet 5: caches are best-effort, lock files never linger, a broken run store is named."""

from __future__ import annotations

import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support.e2e_fixtures import CLI_TIMEOUT, CliResult, World


def _cc_limited(world: World, *args: str, file_size: int) -> CliResult:
    """The CLI with RLIMIT_FSIZE: every write past `file_size` bytes fails (a full disk)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    proc = subprocess.run(
        [sys.executable, "-m", "configcenter", "-C", str(world.config.root), *args],
        capture_output=True,
        text=True,
        env=world.child_env(),
        timeout=CLI_TIMEOUT,
        cwd=world.root,
        check=False,
        preexec_fn=limit,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def test_unusable_cache_directory_is_skipped_by_validate_with_a_warning(world: World) -> None:
    world.cache_home.parent.mkdir(parents=True, exist_ok=True)
    world.cache_home.write_text("a file where the cache directory should be\n")
    result = world.cc("validate")
    assert result.code == 0, result.output
    # The rendered-files cache says so (the templates' bytecode cache is not even opened
    # when every template is one the shared compile serves).
    assert "cannot be written" in result.stderr and "rendering again next time" in result.stderr
    assert "Traceback" not in result.output


def test_apply_without_a_writable_cache_is_a_clear_error(world: World) -> None:
    world.cache_home.parent.mkdir(parents=True, exist_ok=True)
    world.cache_home.write_text("not a directory\n")
    result = world.cc("apply", "dev", "--no-rollout")
    assert result.code == 1, result.output
    assert "deploy repo cache" in result.output and "cannot be written" in result.output
    assert "XDG_CACHE_HOME" in result.output
    assert "Traceback" not in result.output
    assert world.head() is None


def test_full_disk_leaves_no_lock_files_behind(world: World) -> None:
    world.ok("validate")  # the caches exist; from here on nothing more can be written
    result = _cc_limited(world, "apply", "dev", "--no-rollout", file_size=0)
    assert result.code == 1, result.output
    assert "Traceback" not in result.output, result.output
    assert result.stderr.startswith("Error: "), "one clear message"
    leftovers = sorted(p.name for p in world.cache_home.rglob("configcenter.lock*"))
    assert [name for name in leftovers if name.endswith(".tmp")] == [], leftovers
    assert world.head() is None


def test_garbage_run_store_is_an_error_for_apply_and_a_warning_for_history(
    world: World,
) -> None:
    world.ok("apply", "dev", "--no-rollout")
    world.run_store_file.write_bytes(b"this is not a SQLite database\n" * 100)
    applied = world.cc("apply", "dev", "--no-rollout")
    assert applied.code == 1, applied.output
    assert f"run store {world.run_store_file}" in applied.output
    assert "not a SQLite database" in applied.output or "corrupt" in applied.output
    assert "Traceback" not in applied.output
    history = world.cc("history", "dev")
    assert history.code == 0, history.output
    assert "run store unavailable" in history.output
    assert "Traceback" not in history.output


def test_run_store_warning_names_the_file(world: World) -> None:
    world.ok("apply", "dev", "--no-rollout")
    path: Path = world.run_store_file
    path.write_bytes(b"\0" * 4096)
    history = world.cc("history", "dev")
    assert str(path) in history.output


def test_a_command_leaves_the_run_store_whole_in_its_file(world: World) -> None:
    """The connection is closed at the end of the command: SQLite folds its write-ahead log
    back into the file, so the file alone (a backup, a copy) holds every run."""
    world.ok("apply", "dev", "--no-rollout")
    wal = world.run_store_file.with_name(world.run_store_file.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    copy = world.root / "runs-copy.sqlite3"
    copy.write_bytes(world.run_store_file.read_bytes())
    with sqlite3.connect(copy) as db:
        kinds = [row[0] for row in db.execute("SELECT kind FROM runs")]
    assert kinds == ["apply"]
