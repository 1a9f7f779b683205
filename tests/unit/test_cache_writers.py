"""Two processes writing one cache file at once (a command and serve rendering the same
environment): each one's records are in the file afterwards. Both read the file before
either writes (a barrier), so without the lock and the merge the second writer's file
would drop the first one's records. Each cache of records is here: rendered-files packs,
the config repo's tables, plan digests, work-tree stat digests, the history index and
the deploy repo's kept listings (tests/unit/test_cache_kills.py: writers killed)."""

from __future__ import annotations

import hashlib
import multiprocessing
import pickle
from pathlib import Path
from typing import Any

import pytest

from configcenter.adapters.cache_files import locked, stamp, write_atomic
from configcenter.adapters.git_config_repo import _DiskCache
from configcenter.adapters.git_deploy_repo import LISTINGS_FILE, GitDeployRepo, _read_listings
from configcenter.adapters.history_index import ChangeIndex
from configcenter.adapters.plan_digests import PlanDigestFile
from configcenter.adapters.rendered_cache import RenderedFilesCache
from configcenter.adapters.work_tree import StatDigests

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


def _digests_writer(directory: str, name: str, read: Any, go: Any) -> None:
    digests = PlanDigestFile(Path(directory), PLANS)
    assert digests.get("seed") is not None
    read.wait(TIMEOUT)
    for i in range(RECORDS):
        digests[f"{name}-{i}"] = (f"sha256:{name}", f"sha256:{i}", False)
    go.wait(TIMEOUT)
    digests.save()


def _stat_writer(base: str, name: str, read: Any, go: Any) -> None:
    root = Path(base) / "tree"
    digests = StatDigests(Path(base) / "cache" / "tree.stat", settled_ns=0)
    assert digests.digest(root, "seed", LIMIT) == _sha(b"seed")
    read.wait(TIMEOUT)
    for i in range(RECORDS):
        assert digests.digest(root, f"{name}-{i}", LIMIT) == _sha(f"{name} {i}".encode())
    go.wait(TIMEOUT)
    digests.save()


def _history_writer(directory: str, name: str, read: Any, go: Any) -> None:
    index = ChangeIndex(Path(directory), ["dev"], "code-1").load()
    assert index.tips == [_commit("seed", 0)]
    read.wait(TIMEOUT)
    chain = _chain(name)
    index.add(_commit(name, RECORDS - 1), chain, complete=True)
    go.wait(TIMEOUT)
    index.save()


def _listings_writer(base: str, name: str, read: Any, go: Any) -> None:
    repo = GitDeployRepo(f"file://{base}/remote.git", "main", Path(base) / "cache")
    assert (_commit("seed", 0), ("dev",)) in repo._listings()
    read.wait(TIMEOUT)
    go.wait(TIMEOUT)
    for n in range(LISTINGS):
        repo._keep_listing((_commit(name, n), ("dev",)), _listing(name, n))


PLANS = "repo\0dev"
LIMIT = 1 << 20
LISTINGS = 3  # each writer's; with the seed's, 7 of the 8 a file keeps


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _commit(name: str, n: int) -> str:
    return hashlib.sha1(f"{name} {n}".encode()).hexdigest()


def _chain(name: str) -> dict[str, tuple[list[str], dict[str, str | None]]]:
    """RECORDS commits of `name`, each on the one before, the first on the seed commit."""
    return {
        _commit(name, i): (
            [_commit(name, i - 1) if i else _commit("seed", 0)],
            {f"dev/.state/{name}-{i}.json": _commit(f"blob {name}", i)},
        )
        for i in range(RECORDS)
    }


def _listing(name: str, n: int) -> dict[str, bytes]:
    return {f"dev/.state/s{i}.json": _commit(f"{name} {n}", i).encode() for i in range(RECORDS)}


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


def test_two_processes_saving_one_environments_plan_digests_keep_both(tmp_path: Path) -> None:
    seed = PlanDigestFile(tmp_path, PLANS)
    seed["seed"] = ("sha256:seed", "sha256:seed", False)
    seed.save()

    _run_two(_digests_writer, str(tmp_path))

    after = PlanDigestFile(tmp_path, PLANS)
    assert len(after) == 2 * RECORDS + 1
    assert after["cli-7"] == ("sha256:cli", "sha256:7", False)
    assert after["serve-7"] == ("sha256:serve", "sha256:7", False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [after.path.name]


def test_two_processes_saving_one_work_trees_stat_digests_keep_both(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "seed").write_bytes(b"seed")
    for name in ("cli", "serve"):
        for i in range(RECORDS):
            (root / f"{name}-{i}").write_text(f"{name} {i}")
    seed = StatDigests(tmp_path / "cache" / "tree.stat", settled_ns=0)
    seed.digest(root, "seed", LIMIT)
    seed.save()

    _run_two(_stat_writer, str(tmp_path))

    after = StatDigests(tmp_path / "cache" / "tree.stat", settled_ns=0)
    assert len(after._table()) == 2 * RECORDS + 1
    for name in ("cli", "serve"):
        assert after._table()[f"{name}-5"][1] == _sha(f"{name} 5".encode())
        assert after.digest(root, f"{name}-5", LIMIT) == _sha(f"{name} 5".encode())
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["tree.stat"]


def test_two_processes_saving_one_history_index_keep_both_histories(tmp_path: Path) -> None:
    seed = ChangeIndex(tmp_path, ["dev"], "code-1")
    seed.add(_commit("seed", 0), {_commit("seed", 0): ([], {})}, complete=True)
    seed.save()

    _run_two(_history_writer, str(tmp_path))

    after = ChangeIndex(tmp_path, ["dev"], "code-1").load()
    assert len(after.commits) == 2 * RECORDS + 1
    assert sorted(after.tips) == sorted(_commit(n, RECORDS - 1) for n in ("cli", "serve"))
    for name in ("cli", "serve"):
        walked = after.walk(_commit(name, RECORDS - 1), ["dev"], None)
        assert walked is not None and walked[1] is None and len(walked[0]) == RECORDS
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_two_processes_keeping_deploy_repo_listings_keep_both(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()  # the bare clone's folder, made by its first sync
    seed = GitDeployRepo(f"file://{tmp_path}/remote.git", "main", tmp_path / "cache")
    seed._keep_listing((_commit("seed", 0), ("dev",)), _listing("seed", 0))

    _run_two(_listings_writer, str(tmp_path))

    kept = _read_listings(tmp_path / "cache" / LISTINGS_FILE)
    wanted = [(_commit(n, i), ("dev",)) for n in ("cli", "serve") for i in range(LISTINGS)]
    assert sorted(kept) == sorted([(_commit("seed", 0), ("dev",)), *wanted])
    assert kept[(_commit("serve", 2), ("dev",))] == _listing("serve", 2)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [LISTINGS_FILE]


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
