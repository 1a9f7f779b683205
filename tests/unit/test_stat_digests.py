"""The work tree's file digests remembered by stat (`StatDigests`): a kept load's replay
checks thousands of files without reading them, so every way a file can change behind
its back must still change the answer."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from configcenter.adapters.git_config_repo import GitConfigRepo
from configcenter.adapters.work_tree import StatDigests
from configcenter.core.errors import ProblemList
from configcenter.core.load_trace import load_config_kept
from configcenter.core.source import FileTooLarge, RepoPathError
from configcenter.wiring import open_load_store
from tests.support.configrepo import ConfigRepo

LIMIT = 1 << 20


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "environments" / "dev").mkdir(parents=True)
    (root / "environments" / "dev" / "api.yaml").write_bytes(b"replicas: 1\n")
    return root


def _digests(tmp_path: Path, settled_ns: int = 0) -> StatDigests:
    return StatDigests(tmp_path / "cache" / "digests.stat", settled_ns)


def test_a_same_size_edit_with_the_old_mtime_put_back_is_seen(work: Path, tmp_path: Path) -> None:
    rel = "environments/dev/api.yaml"
    path = work / rel
    digests = _digests(tmp_path)
    assert digests.digest(work, rel, LIMIT) == _sha(b"replicas: 1\n")
    digests.save()
    before = os.lstat(path)
    path.write_bytes(b"replicas: 9\n")  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime forged back
    assert os.lstat(path).st_mtime_ns == before.st_mtime_ns
    again = _digests(tmp_path)  # the next command, from the saved file
    assert again.digest(work, rel, LIMIT) == _sha(b"replicas: 9\n")


def test_a_file_replaced_by_another_is_seen(work: Path, tmp_path: Path) -> None:
    rel = "environments/dev/api.yaml"
    digests = _digests(tmp_path)
    digests.digest(work, rel, LIMIT)
    other = work / "other.yaml"
    other.write_bytes(b"replicas: 2\n")
    os.replace(other, work / rel)
    assert digests.digest(work, rel, LIMIT) == _sha(b"replicas: 2\n")


def test_a_link_or_an_oversized_file_is_refused_as_read_file_refuses_it(
    work: Path, tmp_path: Path
) -> None:
    rel = "environments/dev/api.yaml"
    digests = _digests(tmp_path)
    digests.digest(work, rel, LIMIT)
    secret = tmp_path / "id_rsa"
    secret.write_bytes(b"PRIVATE KEY\n")
    (work / rel).unlink()
    (work / rel).symlink_to(secret)
    with pytest.raises(RepoPathError) as link:
        digests.digest(work, rel, LIMIT)
    assert link.value.kind == "symbolic link"
    (work / rel).unlink()
    (work / rel).write_bytes(b"x" * 100)
    with pytest.raises(FileTooLarge):
        digests.digest(work, rel, 10)
    (work / rel).unlink()
    assert digests.digest(work, rel, LIMIT) is None


def test_a_directory_on_the_way_replaced_by_a_link_is_refused(work: Path, tmp_path: Path) -> None:
    rel = "environments/dev/api.yaml"
    digests = _digests(tmp_path)
    digests.digest(work, rel, LIMIT)
    elsewhere = tmp_path / "elsewhere"
    (work / "environments" / "dev").rename(elsewhere)
    (work / "environments" / "dev").symlink_to(elsewhere)
    with pytest.raises(RepoPathError):
        digests.digest(work, rel, LIMIT)


def test_a_batch_checks_each_directory_once_and_the_next_batch_checks_it_again(
    work: Path, tmp_path: Path
) -> None:
    """A replay's batch asks each directory on the way once: a directory replaced by a link
    after one batch is refused by the next, as by a single `file_digest`."""
    (work / "environments" / "dev" / "db.yaml").write_bytes(b"replicas: 2\n")
    source = GitConfigRepo(work)
    source.__dict__["_stat_digests"] = _digests(tmp_path)
    batch = source.file_digester()
    assert batch("environments/dev/api.yaml", LIMIT) == _sha(b"replicas: 1\n")
    assert batch("environments/dev/db.yaml", LIMIT) == _sha(b"replicas: 2\n")
    assert batch("environments/dev/none.yaml", LIMIT) is None
    assert batch("environments/prod/api.yaml", LIMIT) is None  # a missing directory
    elsewhere = tmp_path / "elsewhere"
    (work / "environments" / "dev").rename(elsewhere)
    (work / "environments" / "dev").symlink_to(elsewhere)
    with pytest.raises(RepoPathError):
        source.file_digester()("environments/dev/db.yaml", LIMIT)
    with pytest.raises(RepoPathError):
        source.file_digest("environments/dev/api.yaml", LIMIT)


def test_a_file_changed_within_the_settling_window_is_never_remembered(
    work: Path, tmp_path: Path
) -> None:
    rel = "environments/dev/api.yaml"
    digests = StatDigests(tmp_path / "cache" / "digests.stat")  # the default window
    assert digests.digest(work, rel, LIMIT) == _sha(b"replicas: 1\n")
    digests.save()
    assert not (tmp_path / "cache" / "digests.stat").exists()  # nothing learnt: too young


def test_an_unreadable_cache_file_is_started_again(work: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "digests.stat"
    cache.parent.mkdir()
    cache.write_bytes(b"not a pickle")
    digests = StatDigests(cache, 0)
    assert digests.digest(work, "environments/dev/api.yaml", LIMIT) == _sha(b"replicas: 1\n")


def test_a_kept_load_follows_a_same_size_edit_behind_the_stat_digests(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    path = repo.root / "environments" / "dev" / "api.yaml"
    store = open_load_store(tmp_path / "loads")

    def load() -> int | None:
        source = GitConfigRepo(repo.root)
        source.__dict__["_stat_digests"] = StatDigests(tmp_path / "digests.stat", 0)
        try:
            config = load_config_kept(source, store, ProblemList(), ("dev",))
        finally:
            source.save_caches()
        return config.environment("dev").services["api"].replicas

    assert load() == 1
    assert load() == 1  # replayed: the digests are learnt now
    assert (tmp_path / "digests.stat").exists()
    before = os.lstat(path)
    path.write_text(path.read_text().replace("replicas: 1", "replicas: 7"))  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.lstat(path).st_size == before.st_size
    assert load() == 7
