"""The workspace keeps the last state it read per environment, by commit: never stale."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from configcenter.core.plan import make_plan
from configcenter.core.render import Renderer
from configcenter.core.state import EnvState
from configcenter.usecases.workspace import PreviousFiles, Workspace
from tests.support.configrepo import ConfigRepo, DeployRemote, deploy_files, state_after


def test_a_state_read_twice_is_parsed_once_and_a_new_push_is_seen(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    remote = DeployRemote(tmp_path)
    plan = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), lambda path: None)
    state = state_after(plan)
    remote.publish(state, deploy_files(plan))
    ws = Workspace(repo.root, remote.url)

    first = ws.read_state("dev")
    assert first.services == state.services
    # What a caller changes in its copy does not leak into the next read.
    first.services["api"].replicas = 99
    del first.services["db"]
    again = ws.read_state("dev")
    assert again.services == state.services

    # Another writer pushes behind the workspace's back: the next read sees it.
    changed = EnvState("dev", {**state.services, "api": replace(state.services["api"], replicas=7)})
    remote.publish(changed)
    assert ws.read_state("dev").services["api"].replicas == 7
    # An older commit asked for by sha is read as it was.
    old = ws.deploy_repo.log(prefix="dev/", limit=2)[1].sha
    assert ws.read_state("dev", old).services["api"].replicas == state.services["api"].replicas


def test_rendered_files_read_service_by_service_then_in_one_batch_are_the_same(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    remote = DeployRemote(tmp_path)
    files = {
        f"{env}/svc-{n:02d}/{name}": f"{env} {n} {name}\n".encode()
        for env in ("dev", "prod")
        for n in range(PreviousFiles.ONE_BY_ONE + 4)
        for name in ("app.env", "conf/nested.yaml")
    }
    first = remote.publish(EnvState("dev"), files)
    ws = Workspace(repo.root, remote.url)
    ws.deploy_repo.sync()
    previous = PreviousFiles(ws.deploy_repo, None)
    # Service by service first, then the rest of the environment in one batch; a file
    # asked for again, one that does not exist, and another environment read the same.
    for path in [*sorted(files), *sorted(files)]:
        assert previous(path) == files[path], path
    assert previous("dev/svc-00/missing.txt") is None
    assert previous("dev/no-such-service/app.env") is None
    assert previous("staging/svc-00/app.env") is None

    # Another revision is read as it was, not as the reader of the first one has it.
    changed = {**files, "dev/svc-00/app.env": b"changed\n"}
    remote.publish(EnvState("dev"), changed)
    ws.deploy_repo.sync()
    assert PreviousFiles(ws.deploy_repo, None)("dev/svc-00/app.env") == b"changed\n"
    assert PreviousFiles(ws.deploy_repo, first)("dev/svc-00/app.env") == files["dev/svc-00/app.env"]


def _published(repo: ConfigRepo, tmp_path: Path) -> tuple[DeployRemote, EnvState]:
    remote = DeployRemote(tmp_path)
    plan = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), lambda path: None)
    state = state_after(plan)
    # Every field set, those with defaults too (a kept record reads them from its bytes).
    api = state.services["api"]
    assert api.release is not None
    state.services["api"] = replace(
        api, last_good=api.release, last_failed=replace(api.release, id="r0", outcome="failed")
    )
    remote.publish(state, deploy_files(plan))
    return remote, state


def _cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "configcenter" / "state").glob("*.pickle"))


def test_records_kept_between_commands_read_as_parsed_and_a_changed_record_is_read_anew(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    """The record cache is keyed by path and blob id: another writer's push is another
    blob, read and parsed; the records kept read exactly as a fresh parse has them."""
    remote, state = _published(repo, tmp_path)
    cold = Workspace(repo.root, remote.url).read_state("dev")
    assert cold.services == state.services
    assert len(_cache_files(tmp_path)) == 1

    # Each field read first, before any other (a field with a default included).
    for field in ("last_good", "stages", "env_keys", "files", "values", "release"):
        first_read = Workspace(repo.root, remote.url).read_state("dev").services["api"]
        assert getattr(first_read, field) == getattr(state.services["api"], field), field
    assert state.services["api"].last_good is not None

    warm = Workspace(repo.root, remote.url).read_state("dev")  # a new command
    assert warm.services == state.services
    assert warm.stored == cold.stored
    for name, record in warm.services.items():
        fresh = state.services[name]
        # Every field, the ones read from the bytes on first use included.
        assert record.to_dict() == fresh.to_dict()
        assert record.to_json(name) == fresh.to_json(name)
        assert replace(record, replicas=5) == replace(fresh, replicas=5)
    assert warm.changes() == {}, "records kept are what the deploy repo holds"
    warm.services["api"].replicas = 9
    assert list(warm.changes()) == ["dev/.state/api.json"]
    # Changes made inside a record, to what it read from the cache or from its bytes.
    inside = Workspace(repo.root, remote.url).read_state("dev")
    release = inside.services["db"].release
    assert release is not None
    release.outcome = "failed"
    inside.services["api"].values["LOG_LEVEL"] = "changed"
    assert sorted(inside.changes()) == ["dev/.state/api.json", "dev/.state/db.json"]
    assert Workspace(repo.root, remote.url).read_state("dev").changes() == {}

    # Behind the cache's back: another writer changes api's record and pushes.
    api = state.services["api"]
    changed = EnvState("dev", {**state.services, "api": replace(api, replicas=7, values={})})
    remote.publish(changed)
    seen = Workspace(repo.root, remote.url).read_state("dev")
    assert seen.services["api"].replicas == 7
    assert seen.services["api"].values == {}
    assert seen.services == changed.services


def test_the_kept_records_share_equal_strings_and_read_as_parsed(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    """Records repeat digests (a release names its record's), tags and commits: the cache
    file holds each distinct string once, and reads back as a fresh parse has them."""
    import pickle

    from configcenter.core.state import summary_fields

    remote, state = _published(repo, tmp_path)
    Workspace(repo.root, remote.url).read_state("dev")
    (path,) = _cache_files(tmp_path)
    records = pickle.loads(path.read_bytes())["records"]
    summaries = {key[0]: dict(zip(summary_fields(), entry[0], strict=True)) for key, entry
                 in records.items() if entry[0]}  # fmt: skip
    api, db = summaries["dev/.state/api.json"], summaries["dev/.state/db.json"]
    assert api["release"].inputs_digest is api["inputs_digest"]
    assert api["template_tag"] == db["template_tag"]
    assert api["config_commit"] is db["config_commit"]
    warm = Workspace(repo.root, remote.url).read_state("dev")
    for name, record in warm.services.items():
        assert record.to_dict() == state.services[name].to_dict()
    assert warm.changes() == {}


def test_a_garbled_or_foreign_cache_file_is_not_used(repo: ConfigRepo, tmp_path: Path) -> None:
    remote, state = _published(repo, tmp_path)
    Workspace(repo.root, remote.url).read_state("dev")
    [cache] = _cache_files(tmp_path)
    cache.write_bytes(b"not a pickle")
    assert Workspace(repo.root, remote.url).read_state("dev").services == state.services
    # Entries another version of the reading code kept (other code key) are not used.
    import pickle

    data = pickle.loads(cache.read_bytes())
    for key, (summary, raw, canonical) in list(data["records"].items()):
        changed = raw.replace(b'"replicas": 1', b'"replicas": 42')
        data["records"][key] = (summary, changed, canonical)
    data["code"] = "another configcenter"
    cache.write_bytes(pickle.dumps(data))
    assert Workspace(repo.root, remote.url).read_state("dev").services == state.services


def test_a_record_copied_under_another_name_is_refused_though_its_bytes_are_kept(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    """Entries are keyed by path and blob: the same bytes at another path are checked."""
    import pytest

    from configcenter.core.state import StateError

    remote, state = _published(repo, tmp_path)
    Workspace(repo.root, remote.url).read_state("dev")
    files = state.files()
    files["dev/.state/api.json"] = files["dev/.state/db.json"]
    bad = EnvState("dev", {})
    remote.publish(bad, files)
    with pytest.raises(StateError, match="named for 'api'"):
        Workspace(repo.root, remote.url).read_state("dev")


def test_a_state_whose_records_are_all_kept_is_read_without_cat_file(
    repo: ConfigRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment's own record is kept by its bytes too: a command that reads a state it
    has seen starts no `git cat-file`, and reads the same state (its config commit too)."""
    remote = DeployRemote(tmp_path)
    plan = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), lambda path: None)
    state = replace(state_after(plan), config_commit="c0ffee")
    remote.publish(state, deploy_files(plan))
    first = Workspace(repo.root, remote.url).read_state("dev")
    assert first.config_commit == "c0ffee"
    trace = tmp_path / "git-trace.log"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    again = Workspace(repo.root, remote.url).read_state("dev")
    assert again.services == state.services and again.config_commit == "c0ffee"
    assert trace.exists() and "cat-file" not in trace.read_text()
    assert "ls-tree" not in trace.read_text()  # the commit's listing is kept too
    # The environment's record changed behind the cache: read again, by its new blob id.
    remote.publish(replace(state, config_commit="beef"))
    trace.unlink()
    assert Workspace(repo.root, remote.url).read_state("dev").config_commit == "beef"
    assert "cat-file" in trace.read_text() and "ls-tree" in trace.read_text()


def test_a_command_that_only_reads_reads_one_deploy_repo_commit(
    repo: ConfigRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only workspace (plan) asks the remote once; one that writes asks every time."""
    remote = DeployRemote(tmp_path)
    plan = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), lambda path: None)
    remote.publish(state_after(plan), deploy_files(plan))
    trace = tmp_path / "git-trace.log"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    reading = Workspace(repo.root, remote.url)
    reading.read_only = True
    for _ in range(3):
        reading.peek_state("dev")
        reading.read_state("dev")
    assert trace.read_text().count("ls-remote") == 1
    trace.unlink()
    writing = Workspace(repo.root, remote.url)
    writing.read_state("dev")
    writing.read_state("dev")
    assert trace.read_text().count("ls-remote") == 2
