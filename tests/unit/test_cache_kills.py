"""A cache writer killed with SIGKILL mid-write (its temporary file written, not yet renamed
into place: `cache_files.before_rename`, a crash point) leaves the cache as the last
complete write made it, and its temporary file is removed by the next write, so none
pile up over repeated kills. Each cache is here, through its own adapter; each writer is
a real child process, and the next read is in another process again (this one). And a
load writer killed from outside at whatever moment its write has reached.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import jinja2
import jinja2.bccache
import pytest

from configcenter.adapters.cache_files import sweep, write_atomic
from configcenter.adapters.git_deploy_repo import LISTINGS_FILE, GitDeployRepo, _read_listings
from configcenter.adapters.history_index import ChangeIndex
from configcenter.adapters.jinja_cache import BestEffortBytecodeCache
from configcenter.adapters.k8s_desired_cache import DesiredObjectsCache
from configcenter.adapters.load_store import DiskLoadStore
from configcenter.adapters.plan_digests import PlanDigestFile
from configcenter.adapters.rendered_cache import RenderedFilesCache
from configcenter.adapters.state_cache import StateRecordCache
from configcenter.adapters.work_tree import StatDigests
from configcenter.crashpoints import crash_env
from tests.unit.test_k8s_desired_cache import RELEASE

RECORDS = 300
GENERATIONS = 8  # odd ones written whole, even ones killed mid-write
TIMEOUT = 60.0
KILLS = 10
FILES = 100  # work-tree files (each generation writes them all again)
LIMIT = 1 << 20
NAME = "repo\0dev"


def _commit(n: int) -> str:
    return hashlib.sha1(f"commit {n}".encode()).hexdigest()


# Each cache: write generation `gen` whole (records or one value all saying `gen`), and
# read back the generation the cache holds, checking it is whole (None: a miss).


def _write_plan_digests(base: Path, gen: int) -> None:
    digests = PlanDigestFile(base, NAME)
    for i in range(RECORDS):
        digests[f"s{i}"] = (f"sha256:{gen}", f"sha256:{i}", False)
    digests.save()


def _read_plan_digests(base: Path) -> int | None:
    digests = PlanDigestFile(base, NAME)
    if not digests:
        return None
    assert len(digests) == RECORDS
    [gen] = {int(digests[f"s{i}"][0].removeprefix("sha256:")) for i in range(RECORDS)}
    return gen


def _tree(base: Path, gen: int) -> Path:
    root = base / "tree"
    root.mkdir(exist_ok=True)
    for i in range(FILES):
        (root / f"f{i}").write_text(f"{gen} {i}")
    return root


def _write_stat_digests(base: Path, gen: int) -> None:
    root = _tree(base, gen)
    digests = StatDigests(base / "cache" / "tree.stat", settled_ns=0)
    for i in range(FILES):
        digests.digest(root, f"f{i}", LIMIT)
    digests.save()


def _read_stat_digests(base: Path) -> int | None:
    root = base / "tree"
    digests = StatDigests(base / "cache" / "tree.stat", settled_ns=0)
    table = digests._table()
    if not table:
        return None
    # The generation whose files the table remembers, all of them.
    [gen] = {g for g in range(1, GENERATIONS + 1) if table["f0"][1] == _sha(f"{g} 0".encode())}
    assert all(table[f"f{i}"][1] == _sha(f"{gen} {i}".encode()) for i in range(FILES))
    for i in range(FILES):  # every answer is the file's as it is now, remembered or read
        data = (root / f"f{i}").read_bytes()
        assert digests.digest(root, f"f{i}", LIMIT) == _sha(data)
    return gen


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_load(base: Path, gen: int) -> None:
    DiskLoadStore(base).put("k", pickle.dumps((gen, bytes([gen]) * 1_000_000)))


def _read_load(base: Path) -> int | None:
    data = DiskLoadStore(base).get("k")
    if data is None:
        return None
    gen, body = pickle.loads(data)
    assert body == bytes([gen]) * 1_000_000
    return int(gen)


def _write_history(base: Path, gen: int) -> None:
    index = ChangeIndex(base, ["dev"], "code-1").load()
    found = {
        _commit(n): ([_commit(n - 1)] if n else [], {f"dev/.state/s{n}.json": _commit(-n)})
        for n in range(gen * RECORDS)
    }
    index.add(_commit(gen * RECORDS - 1), found, complete=True)
    index.save()


def _read_history(base: Path) -> int | None:
    index = ChangeIndex(base, ["dev"], "code-1").load()
    if not index.tips:
        return None
    [tip] = index.tips
    gen = next(g for g in range(1, GENERATIONS + 1) if _commit(g * RECORDS - 1) == tip)
    assert len(index.commits) == gen * RECORDS
    return gen


def _write_listing(base: Path, gen: int) -> None:
    repo = GitDeployRepo(f"file://{base}/remote.git", "main", base / "cache")
    repo._keep_listing((_commit(gen), ("dev",)), _listing(gen))


def _listing(gen: int) -> dict[str, bytes]:
    return {f"dev/.state/s{i}.json": _commit(gen * i).encode() for i in range(RECORDS)}


def _read_listings_gen(base: Path) -> int | None:
    kept = _read_listings(base / "cache" / LISTINGS_FILE)
    if not kept:
        return None
    gens = [g for g in range(1, GENERATIONS + 1) if (_commit(g), ("dev",)) in kept]
    assert len(gens) == len(kept)
    for g in gens:
        assert kept[(_commit(g), ("dev",))] == _listing(g)
    return max(gens)


def _write_desired(base: Path, gen: int) -> None:
    release = replace(RELEASE, replicas=gen)
    DesiredObjectsCache(base, code="code-1").get(release, "ns", lambda: {"gen": {"n": gen}})


def _read_desired(base: Path) -> int | None:
    cache = DesiredObjectsCache(base, code="code-1")
    found = []
    for gen in range(1, GENERATIONS + 1):
        release = replace(RELEASE, replicas=gen)
        key = cache.key(release, "ns")
        assert key is not None
        kept = cache._read(cache._slot(release, "ns"), key)
        if kept is not None:
            assert kept == {"gen": {"n": gen}}
            found.append(gen)
    assert len(found) <= 1  # one slot: the last complete write's objects
    return found[0] if found else None


def _bucket(cache: BestEffortBytecodeCache, gen: int) -> jinja2.bccache.Bucket:
    bucket = jinja2.bccache.Bucket(jinja2.Environment(), "template", str(gen))
    cache.load_bytecode(bucket)
    return bucket


def _write_jinja(base: Path, gen: int) -> None:
    cache = BestEffortBytecodeCache(base)
    bucket = _bucket(cache, gen)
    bucket.code = compile(f"gen = {gen}\n" + "x = 1\n" * 20_000, "template", "exec")
    cache.dump_bytecode(bucket)


def _read_jinja(base: Path) -> int | None:
    cache = BestEffortBytecodeCache(base)
    found = []
    for gen in range(1, GENERATIONS + 1):
        code = _bucket(cache, gen).code
        if code is not None:
            scope: dict[str, object] = {}
            exec(code, scope)
            assert scope["gen"] == gen
            found.append(gen)
    assert len(found) <= 1
    return found[0] if found else None


def _write_rendered(base: Path, gen: int) -> None:
    cache = RenderedFilesCache(base, "engine-1")
    for i in range(RECORDS):
        cache.put("shop/dev", f"r{i}", {"app.env": f"{gen}\n".encode()})
    cache.save()


def _read_rendered(base: Path) -> int | None:
    cache = RenderedFilesCache(base, "engine-1")
    got = [cache.get("shop/dev", f"r{i}") for i in range(RECORDS)]
    if got == [None] * RECORDS:
        return None
    [gen] = {int(files["app.env"]) for files in got if files is not None}
    assert None not in got
    return gen


def _write_state(base: Path, gen: int) -> None:
    records = {(f"dev/.state/s{i}.json", str(gen)): ((gen,), b"{}", False) for i in range(RECORDS)}
    StateRecordCache(base).save("deploy\0dev", records)


def _read_state(base: Path) -> int | None:
    records = StateRecordCache(base).load("deploy\0dev")
    if not records:
        return None
    assert len(records) == RECORDS
    [gen] = {blob for _path, blob in records}
    return int(gen)


@dataclass(frozen=True)
class Case:
    write: Callable[[Path, int], None]
    read: Callable[[Path], int | None]


CASES = {
    "plan digests": Case(_write_plan_digests, _read_plan_digests),
    "stat digests": Case(_write_stat_digests, _read_stat_digests),
    "kept load": Case(_write_load, _read_load),
    "history index": Case(_write_history, _read_history),
    "deploy repo listings": Case(_write_listing, _read_listings_gen),
    "desired objects": Case(_write_desired, _read_desired),
    "jinja bytecode": Case(_write_jinja, _read_jinja),
    "rendered files": Case(_write_rendered, _read_rendered),
    "state records": Case(_write_state, _read_state),
}


def _child(case: str, base: str, gen: int, killed: bool) -> None:
    if killed:
        os.environ.update(crash_env("cache_files.before_rename"))
    CASES[case].write(Path(base), gen)


def _temporary_files(base: Path) -> list[str]:
    """Every file but the caches' own: names beginning with a dot, or Jinja's `.tmp`."""
    return sorted(
        str(path.relative_to(base))
        for path in base.rglob("*")
        if path.is_file() and (path.name.startswith(".") or path.name.endswith(".tmp"))
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_writer_killed_mid_write_leaves_the_last_good_cache_and_no_temporary_file(
    tmp_path: Path, case: str
) -> None:
    ctx = multiprocessing.get_context("fork")
    good: int | None = None
    for gen in range(1, GENERATIONS + 1):
        killed = gen % 2 == 0
        writer = ctx.Process(target=_child, args=(case, str(tmp_path), gen, killed))
        writer.start()
        writer.join(TIMEOUT)
        assert writer.exitcode == (-9 if killed else 0), f"generation {gen}"
        good = good if killed else gen
        assert CASES[case].read(tmp_path) == good, f"after generation {gen}"
        # The killed writer's temporary file, until the next write sweeps it.
        assert len(_temporary_files(tmp_path)) == (1 if killed else 0), _temporary_files(tmp_path)


def _write_loads_forever(base: str) -> None:
    gen = 0
    while True:
        gen = gen % 250 + 1
        _write_load(Path(base), gen)


def test_a_load_writer_killed_at_any_moment_leaves_a_whole_load(tmp_path: Path) -> None:
    """SIGKILL from outside, while a temporary file is there (a write under way): the kept
    load is one writer's whole value, and the temporary files never pile up."""
    ctx = multiprocessing.get_context("fork")
    killed_mid_write = 0
    for _ in range(KILLS):
        writer = ctx.Process(target=_write_loads_forever, args=(str(tmp_path),))
        writer.start()
        before = set(_temporary_files(tmp_path))
        deadline = time.monotonic() + TIMEOUT
        while not set(_temporary_files(tmp_path)) - before:  # its own write under way
            assert time.monotonic() < deadline, "the writer never wrote"
            time.sleep(0.0005)
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(TIMEOUT)
        assert writer.exitcode == -signal.SIGKILL
        killed_mid_write += bool(set(_temporary_files(tmp_path)) - before)
        assert _read_load(tmp_path) in (None, *range(1, 251))
        assert len(_temporary_files(tmp_path)) <= 1, _temporary_files(tmp_path)
    assert killed_mid_write > 0  # at least one kill left the temporary file it was writing


def test_a_sweep_takes_abandoned_temporary_files_only(tmp_path: Path) -> None:
    """Another writer's temporary file, flocked while it is written, is left to it; one
    nobody holds (its writer killed) is removed."""
    target = tmp_path / "cache" / "x.pickle"
    target.parent.mkdir()
    (target.parent / ".tmp-abandoned").write_bytes(b"half")
    seen: list[tuple[int, list[str]]] = []

    def write(handle: object) -> None:
        seen.append((sweep(target.parent, ".tmp-", every=0), _names(target.parent)))

    write_atomic(target, write)
    [(removed, names)] = seen
    assert removed == 0 and len(names) == 1 and names[0].startswith(".tmp-")
    assert names != [".tmp-abandoned"]  # swept by the write itself, before its own
    assert _names(target.parent) == ["x.pickle"]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())
