"""Two processes writing one cache file at once (a command and serve rendering the same
environment): each one's records are in the file afterwards. Both read the file before
either writes (a barrier), so without the lock and the merge the second writer's file
would drop the first one's records."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path
from typing import Any

import pytest

from configcenter.adapters.cache_files import locked, stamp, write_atomic
from configcenter.adapters.git_config_repo import _DiskCache
from configcenter.adapters.rendered_cache import RenderedFilesCache

GROUP = "shop/dev"
RECORDS = 300
TIMEOUT = 60.0


def _render_writer(directory: str, name: str, read: Any, go: Any) -> None:
    cache = RenderedFilesCache(Path(directory), "engine-1")
    assert cache.get(GROUP, "seed") is not None  # read the pack as it is now
    read.wait(TIMEOUT)
    for i in range(RECORDS):
        cache.put(GROUP, f"{name}-{i}", {"app.env": f"{name} {i}\n".encode()})
    go.wait(TIMEOUT)
    cache.save()


def _table_writer(base: str, name: str, read: Any, go: Any) -> None:
    cache = _DiskCache(Path(base))
    table = cache.table("yaml")
    assert "seed" in table
    read.wait(TIMEOUT)
    table.update({f"{name}-{i}": i for i in range(RECORDS)})
    go.wait(TIMEOUT)
    cache.save()


def _run_two(target: Any, where: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    read, go = ctx.Barrier(2), ctx.Barrier(2)
    writers = [ctx.Process(target=target, args=(where, n, read, go)) for n in ("cli", "serve")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(TIMEOUT)
        assert writer.exitcode == 0, f"writer exit code {writer.exitcode}"


def test_two_processes_saving_one_rendered_files_pack_keep_both_records(tmp_path: Path) -> None:
    seed = RenderedFilesCache(tmp_path, "engine-1")
    seed.put(GROUP, "seed", {"app.env": b"seed\n"})
    seed.save()

    _run_two(_render_writer, str(tmp_path))

    after = RenderedFilesCache(tmp_path, "engine-1")
    for name in ("cli", "serve"):
        for i in (0, RECORDS - 1):
            assert after.get(GROUP, f"{name}-{i}") == {"app.env": f"{name} {i}\n".encode()}
    assert after.get(GROUP, "seed") == {"app.env": b"seed\n"}
    assert len(after._pack(GROUP)) == 2 * RECORDS + 1
    assert [p.name for p in (tmp_path / "engine-1").iterdir() if p.name.startswith(".pack-")] == []


def test_two_processes_saving_one_config_repo_table_keep_both_entries(tmp_path: Path) -> None:
    base = tmp_path / "repo-key"
    seed = _DiskCache(base)
    seed.table("yaml")["seed"] = 0
    seed.save()

    _run_two(_table_writer, str(base))

    table = _DiskCache(base).table("yaml")
    assert len(table) == 2 * RECORDS + 1
    assert table["cli-7"] == table["serve-7"] == 7


def test_write_atomic_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "x.pickle"
    write_atomic(path, pickle.dumps({"a": 1}))
    before = stamp(path)

    def fails(handle: Any) -> None:
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, fails)
    assert pickle.loads(path.read_bytes()) == {"a": 1} and stamp(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.pickle"]
    with locked(path):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and stamp(path) != before
