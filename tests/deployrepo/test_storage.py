"""The Git deploy repo against real bare remotes on disk."""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from configcenter.adapters.git_deploy_repo import LISTINGS_FILE, GitDeployRepo, default_cache_dir
from configcenter.ports.deploy_repo import (
    DeployRepo,
    DeployRepoError,
    DeployRepoUnreachable,
    InvalidDeployPath,
    compose_message,
    delete_prefix,
)
from tests.support.deployrepo_fixtures import BareRemote

Factory = Callable[..., GitDeployRepo]


def _apply(repo: GitDeployRepo, changes: Mapping[str, bytes | None], message: str) -> str:
    head = repo.sync()
    sha = repo.commit(changes, message, head)
    assert sha is not None
    assert repo.push(sha)
    return sha


def test_adapter_satisfies_the_port(deploy_repo: GitDeployRepo) -> None:
    port: DeployRepo = deploy_repo
    assert port.head() is None


def test_empty_remote_syncs_to_none_and_first_commit_creates_the_branch(
    deploy_repo: GitDeployRepo, bare_remote: BareRemote
) -> None:
    assert deploy_repo.sync() is None
    assert deploy_repo.head() is None
    assert deploy_repo.list_files() == []
    assert deploy_repo.read("dev/state.yaml") is None
    assert deploy_repo.log() == []

    sha = deploy_repo.commit({"dev/state.yaml": b"services: {}\n"}, "dev: first apply", None)
    assert sha is not None
    assert bare_remote.head() is None, "commit must stay local until push"
    assert deploy_repo.push(sha) is True
    assert bare_remote.head() == sha
    assert bare_remote.parents(sha) == []
    assert deploy_repo.head() == sha
    assert bare_remote.files() == {"dev/state.yaml": b"services: {}\n"}


def test_commit_with_no_effect_returns_none(
    deploy_repo: GitDeployRepo, bare_remote: BareRemote
) -> None:
    assert deploy_repo.commit({}, "nothing", None) is None
    assert deploy_repo.commit({"dev/gone": None, **delete_prefix("dev")}, "nothing", None) is None
    sha = _apply(deploy_repo, {"dev/api/app.env": b"A=1\n"}, "dev: api")
    assert deploy_repo.commit({"dev/api/app.env": b"A=1\n"}, "same bytes", sha) is None
    assert deploy_repo.commit({"dev/missing": None}, "delete absent", sha) is None
    assert deploy_repo.commit({**delete_prefix("prod")}, "delete absent dir", sha) is None
    assert bare_remote.count() == 1


def test_writes_and_deletes_are_byte_exact(
    deploy_repo: GitDeployRepo, bare_remote: BareRemote
) -> None:
    binary = bytes(range(256)) * 4
    first = {
        "dev/api/app.env": b"LOG_LEVEL=info\r\nDB_HOST=db\r\n",
        "dev/api/bin.dat": binary,
        "dev/api/empty": b"",
        "dev/api/conf/nested/deep.yaml": "caf\u00e9: \u2713\n".encode(),
        'dev/odd name/"quoted" \\ back': b"odd\n",
        "dev/\u00fcnicode/f\u00e4il": b"u\n",
    }
    base = _apply(deploy_repo, first, "dev: create")
    assert bare_remote.files() == first

    second = deploy_repo.commit(
        {"dev/api/app.env": b"LOG_LEVEL=debug\n", "dev/api/empty": None, "dev/web/x": b"x"},
        "dev: update",
        base,
    )
    assert second is not None and deploy_repo.push(second)
    expected = {**first, "dev/api/app.env": b"LOG_LEVEL=debug\n", "dev/web/x": b"x"}
    del expected["dev/api/empty"]
    assert bare_remote.files() == expected
    assert bare_remote.parents(second) == [base]
    bare_remote.fsck()


def test_delete_prefix_removes_a_directory_and_nothing_beside_it(
    deploy_repo: GitDeployRepo, bare_remote: BareRemote
) -> None:
    base = _apply(
        deploy_repo,
        {
            "dev/api/a": b"a",
            "dev/api/conf/b": b"b",
            "dev/api2/c": b"c",
            "dev/apix": b"d",
            "prod/api/a": b"p",
        },
        "create",
    )
    sha = deploy_repo.commit(delete_prefix("dev/api"), "dev: delete api", base)
    assert sha is not None and deploy_repo.push(sha)
    assert sorted(bare_remote.files()) == ["dev/api2/c", "dev/apix", "prod/api/a"]

    # Deleting a directory and writing into it in one change set replaces its contents.
    again = deploy_repo.commit(
        {**delete_prefix("prod/api/"), "prod/api/new": b"n"}, "prod: replace api", sha
    )
    assert again is not None and deploy_repo.push(again)
    assert sorted(bare_remote.files()) == ["dev/api2/c", "dev/apix", "prod/api/new"]


def test_reads_and_listings_at_head_and_at_older_revisions(deploy_repo: GitDeployRepo) -> None:
    old = _apply(deploy_repo, {"dev/api/a": b"1", "dev/web/w": b"w", "prod/api/a": b"p"}, "one")
    new = _apply(
        deploy_repo, {"dev/api/a": b"2", "dev/api/b": b"b", **delete_prefix("dev/web")}, "two"
    )
    assert deploy_repo.head() == new

    assert deploy_repo.read("dev/api/a") == b"2"
    assert deploy_repo.read("dev/api/a", rev=old) == b"1"
    assert deploy_repo.read("dev/web/w") is None
    assert deploy_repo.read("dev/web/w", rev=old) == b"w"
    assert deploy_repo.read("dev/api") is None, "a directory is not a file"

    assert deploy_repo.read_many(["dev/api/a", "dev/api/b", "nope/x", "dev/api/a"]) == {
        "dev/api/a": b"2",
        "dev/api/b": b"b",
    }
    assert deploy_repo.read_many(["dev/api/a", "dev/api/b", "dev/web/w"], rev=old) == {
        "dev/api/a": b"1",
        "dev/web/w": b"w",
    }
    assert deploy_repo.read_many([]) == {}

    assert deploy_repo.list_files() == ["dev/api/a", "dev/api/b", "prod/api/a"]
    assert deploy_repo.list_files("dev") == ["dev/api/a", "dev/api/b"]
    assert deploy_repo.list_files("dev/", rev=old) == ["dev/api/a", "dev/web/w"]
    assert deploy_repo.list_files("de") == []
    assert deploy_repo.list_files("dev/api/a") == ["dev/api/a"]
    assert deploy_repo.list_files("staging") == []
    assert deploy_repo.read("dev/api/a", rev=f"{new}~1") == b"1"

    ids = deploy_repo.blob_ids(["dev/api", "prod/api/a", "staging"])
    assert sorted(ids) == ["dev/api/a", "dev/api/b", "prod/api/a"]
    assert deploy_repo.read_blobs(list(ids.values())) == {
        ids["dev/api/a"]: b"2",
        ids["dev/api/b"]: b"b",
        ids["prod/api/a"]: b"p",
    }
    before = deploy_repo.blob_ids(["dev/api"], rev=old)
    assert list(before) == ["dev/api/a"] and before["dev/api/a"] != ids["dev/api/a"]
    assert deploy_repo.read_blobs([before["dev/api/a"]]) == {before["dev/api/a"]: b"1"}


def test_kept_listings_answer_for_their_commit_alone_and_survive_a_garbled_file(
    deploy_repo_factory: Factory,
) -> None:
    """`blob_ids` keeps each commit's listing (a commit's tree never changes): a new
    commit, other prefixes, another process and a garbled file all answer as git does."""
    mine = deploy_repo_factory("mine")
    old = _apply(mine, {"dev/.state/api.json": b"1", "dev/.state/db.json": b"d"}, "one")
    first = mine.blob_ids(["dev/.state"], rev=old)
    assert (mine.cache_dir / LISTINGS_FILE).exists()
    new = _apply(mine, {"dev/.state/api.json": b"2", "dev/.state/db.json": None}, "two")
    second = mine.blob_ids(["dev/.state"], rev=new)
    assert list(second) == ["dev/.state/api.json"]
    assert second["dev/.state/api.json"] != first["dev/.state/api.json"]
    assert mine.read_blobs(list(second.values())) == {second["dev/.state/api.json"]: b"2"}
    assert mine.blob_ids(["dev/.state"], rev=old) == first  # the old commit's, kept
    assert mine.blob_ids(["dev/.state/db.json"], rev=old) == {
        "dev/.state/db.json": first["dev/.state/db.json"]
    }
    again = deploy_repo_factory("mine")  # the next command reads the kept listing
    assert again.blob_ids(["dev/.state"], rev=new) == second
    (mine.cache_dir / LISTINGS_FILE).write_bytes(b"garbled")
    assert deploy_repo_factory("mine").blob_ids(["dev/.state"], rev=old) == first


def test_unknown_revision_is_a_clear_error(deploy_repo: GitDeployRepo) -> None:
    _apply(deploy_repo, {"dev/a": b"a"}, "one")
    missing = "0123456789" * 4
    with pytest.raises(DeployRepoError, match="not a commit"):
        deploy_repo.read("dev/a", rev=missing)
    with pytest.raises(DeployRepoError, match="cannot list"):
        deploy_repo.list_files(rev=missing)
    with pytest.raises(DeployRepoError, match="not a commit sha or ref"):
        deploy_repo.read("dev/a", rev="--output=/tmp/x")
    with pytest.raises(DeployRepoError, match="call sync"):
        deploy_repo.commit({"dev/a": b"b"}, "on a parent we never fetched", missing)


def test_log_newest_first_with_trailers_prefix_and_grep(deploy_repo: GitDeployRepo) -> None:
    first = _apply(
        deploy_repo,
        {"dev/api/a": b"1"},
        compose_message(
            "dev: api created",
            "api: create (template 1.0.0)",
            [("Configcenter-Env", "dev"), ("Configcenter-Run", "run-1")],
        ),
    )
    second = _apply(
        deploy_repo,
        {"prod/api/a": b"1"},
        compose_message(
            "prod: api created",
            "",
            [
                ("Configcenter-Env", "prod"),
                ("Configcenter-Run", "run-2"),
                ("Note", "a"),
                ("Note", "b"),
            ],
        ),
    )
    third = _apply(deploy_repo, {"dev/api/a": b"2"}, "dev: api values\n\nplain body, no trailers\n")

    history = deploy_repo.log()
    assert [c.sha for c in history] == [third, second, first]
    newest, middle, oldest = history
    assert newest.subject == "dev: api values"
    assert newest.body == "plain body, no trailers"
    assert newest.trailers == ()
    assert oldest.trailers == (("Configcenter-Env", "dev"), ("Configcenter-Run", "run-1"))
    assert oldest.trailer("configcenter-run") == "run-1"
    assert middle.trailer_values("Note") == ["a", "b"]
    assert middle.trailer("Note") == "b"
    assert oldest.author == "configcenter <configcenter@localhost>"
    assert oldest.date.tzinfo is not None
    assert oldest.date <= newest.date

    assert [c.sha for c in deploy_repo.log(prefix="dev")] == [third, first]
    assert [c.sha for c in deploy_repo.log(prefix="prod/api/")] == [second]
    assert [c.sha for c in deploy_repo.log(limit=1)] == [third]
    assert [c.sha for c in deploy_repo.log(grep="Configcenter-Env: dev")] == [first]
    assert [c.sha for c in deploy_repo.log(grep="Configcenter-Run: run-")] == [second, first]
    assert [c.sha for c in deploy_repo.log(rev=second)] == [second, first]


def test_commit_parent_may_be_a_revision_expression(deploy_repo: GitDeployRepo) -> None:
    first = _apply(deploy_repo, {"a": b"1"}, "one")
    second = _apply(deploy_repo, {"a": b"2"}, "two")
    branch = deploy_repo.commit({"b": b"b"}, "on first", f"{second}~1")
    assert branch is not None
    assert deploy_repo.log(rev=branch, limit=2)[1].sha == first
    assert deploy_repo.read("a", rev=branch) == b"1"
    with pytest.raises(DeployRepoError, match="call sync"):
        deploy_repo.commit({"b": b"b"}, "x", f"{first}~5")


def test_commit_author_is_recorded(deploy_repo: GitDeployRepo) -> None:
    head = deploy_repo.sync()
    sha = deploy_repo.commit({"a": b"a"}, "x", head, author="Ops Person <ops@example.com>")
    assert sha is not None and deploy_repo.push(sha)
    assert deploy_repo.log()[0].author == "Ops Person <ops@example.com>"
    with pytest.raises(DeployRepoError, match="Name <email>"):
        deploy_repo.commit({"b": b"b"}, "x", sha, author="no email")


def test_push_rejected_when_another_clone_pushed_first_and_nothing_is_lost(
    deploy_repo_factory: Factory, bare_remote: BareRemote
) -> None:
    alice = deploy_repo_factory("alice")
    bob = deploy_repo_factory("bob")
    base = _apply(alice, {"dev/api/a": b"1"}, "base")

    assert alice.sync() == base
    assert bob.sync() == base
    bobs = bob.commit({"dev/web/w": b"bob"}, "bob", base)
    assert bobs is not None and bob.push(bobs)

    alices = alice.commit({"dev/api/a": b"alice"}, "alice", base)
    assert alices is not None
    assert alice.push(alices) is False
    assert bare_remote.head() == bobs
    assert alice.head() == base, "a rejected push must not move the tracking ref"

    # The caller's retry: sync, re-plan on the new head, push.
    head = alice.sync()
    assert head == bobs
    retry = alice.commit({"dev/api/a": b"alice"}, "alice", head)
    assert retry is not None and alice.push(retry)
    assert bare_remote.files() == {"dev/api/a": b"alice", "dev/web/w": b"bob"}
    assert bare_remote.parents(retry) == [bobs]


def test_racing_first_commits_on_an_empty_remote(
    deploy_repo_factory: Factory, bare_remote: BareRemote
) -> None:
    alice = deploy_repo_factory("alice")
    bob = deploy_repo_factory("bob")
    assert alice.sync() is None and bob.sync() is None
    a = alice.commit({"dev/a": b"a"}, "alice", None)
    b = bob.commit({"dev/b": b"b"}, "bob", None)
    assert a is not None and b is not None
    assert alice.push(a) is True
    assert bob.push(b) is False
    assert bare_remote.head() == a


def test_pushing_something_that_is_not_a_local_commit_is_an_error(
    deploy_repo: GitDeployRepo,
) -> None:
    deploy_repo.sync()
    with pytest.raises(DeployRepoError, match="push the sha that commit"):
        deploy_repo.push("0123456789" * 4)
    with pytest.raises(DeployRepoError, match="not a commit sha or ref"):
        deploy_repo.push("--force")


def test_commit_message_must_be_text(deploy_repo: GitDeployRepo) -> None:
    for bad in ("", "  \n", "a\0b"):
        with pytest.raises(DeployRepoError, match="commit message"):
            deploy_repo.commit({"a": b"a"}, bad, None)


def test_pushing_the_remote_head_again_is_a_success(deploy_repo: GitDeployRepo) -> None:
    sha = _apply(deploy_repo, {"a": b"a"}, "one")
    assert deploy_repo.push(sha) is True


def test_sync_follows_the_remote(deploy_repo_factory: Factory) -> None:
    mine = deploy_repo_factory("mine")
    theirs = deploy_repo_factory("theirs")
    first = _apply(theirs, {"a": b"1"}, "one")
    assert mine.sync() == first
    second = _apply(theirs, {"a": b"2"}, "two")
    assert mine.head() == first, "head is the last synced state, not a live query"
    assert mine.sync() == second
    assert mine.read("a") == b"2"


def test_a_remote_hook_refusal_is_an_error_not_a_retry(
    deploy_repo: GitDeployRepo, bare_remote: BareRemote
) -> None:
    hook = bare_remote.path / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'frozen for release' >&2\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    sha = deploy_repo.commit({"a": b"a"}, "one", deploy_repo.sync())
    assert sha is not None
    with pytest.raises(DeployRepoError, match="refused the push"):
        deploy_repo.push(sha)
    assert bare_remote.head() is None


def test_unreachable_remote_names_the_url_and_hides_credentials(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.git"
    repo = GitDeployRepo(str(missing), "main", tmp_path / "c1")
    with pytest.raises(DeployRepoUnreachable, match=re.escape(str(missing))):
        repo.sync()

    # Port 9 on loopback: nothing listens, so the connection is refused at once.
    url = "http://deployer:s3cr3t-t0ken@127.0.0.1:9/shop-deploy.git"
    secret_repo = GitDeployRepo(url, "main", tmp_path / "c2")
    with pytest.raises(DeployRepoUnreachable) as info:
        secret_repo.sync()
    text = str(info.value)
    assert "s3cr3t-t0ken" not in text
    assert "http://deployer:***@127.0.0.1:9/shop-deploy.git" in text
    assert "s3cr3t-t0ken" not in repr(secret_repo)
    for path in (tmp_path / "c2").rglob("*"):
        if path.is_file():
            assert b"s3cr3t-t0ken" not in path.read_bytes(), path


def test_push_to_an_unreachable_remote_is_an_error(deploy_repo: GitDeployRepo) -> None:
    sha = deploy_repo.commit({"a": b"a"}, "one", deploy_repo.sync())
    assert sha is not None
    shutil.rmtree(Path(deploy_repo.url))
    with pytest.raises(DeployRepoUnreachable, match=re.escape(deploy_repo.url)):
        deploy_repo.push(sha)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("../shop-deploy.git", "relative path"),
        ("", "empty"),
        (" /srv/x.git", "whitespace"),
        ("--upload-pack=touch /tmp/pwned:x", "option"),
    ],
)
def test_bad_url_is_rejected(url: str, match: str, tmp_path: Path) -> None:
    with pytest.raises(DeployRepoError, match=match):
        GitDeployRepo(url, "main", tmp_path)


@pytest.mark.parametrize("branch", ["", "a..b", "-x", "x.lock", "has space", "a:b", "x/"])
def test_bad_branch_is_rejected(branch: str, bare_remote: BareRemote, tmp_path: Path) -> None:
    with pytest.raises(DeployRepoError, match=r"deploy_repo\.branch"):
        GitDeployRepo(bare_remote.url, branch, tmp_path)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"/etc/passwd": b"x"}, "relative and normalised"),
        ({"dev/../x": b"x"}, "relative and normalised"),
        ({"dev//x": b"x"}, "relative and normalised"),
        ({"dev/.git/config": b"x"}, "'.git'"),
        ({"dev/a\nb": b"x"}, "control character"),
        ({"dev/a": "text"}, "must be bytes"),
        ({"dev/": b"x"}, "names a directory"),
        ({"/": None}, "whole repository"),
        ({"dev/a": b"x", "dev/a/b": b"y"}, "file and a directory"),
    ],
)
def test_bad_changes_are_rejected_before_anything_is_written(
    deploy_repo: GitDeployRepo, changes: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidDeployPath, match=match):
        deploy_repo.commit(changes, "bad", None)  # type: ignore[arg-type]
    assert deploy_repo.sync() is None


def test_bad_read_paths_are_rejected(deploy_repo: GitDeployRepo) -> None:
    with pytest.raises(InvalidDeployPath, match="relative"):
        deploy_repo.read("../x")
    with pytest.raises(InvalidDeployPath):
        delete_prefix("/")
    with pytest.raises(DeployRepoError, match="limit"):
        deploy_repo.log(limit=0)


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    repo = GitDeployRepo("https://git.example.com/shop/deploy.git", "main")
    assert repo.cache_dir.parent == tmp_path / "xdg" / "configcenter" / "deploy"
    assert len(repo.cache_dir.name) == 16
    assert repo.cache_dir == default_cache_dir("https://git.example.com/shop/deploy.git")
    assert default_cache_dir("https://git.example.com/other.git") != repo.cache_dir
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir("x").parent == Path.home() / ".cache" / "configcenter" / "deploy"


def test_cache_is_bare(deploy_repo: GitDeployRepo) -> None:
    _apply(deploy_repo, {"dev/a": b"a"}, "one")
    assert (deploy_repo.cache_dir / "HEAD").is_file()
    assert not (deploy_repo.cache_dir / "dev").exists()
    assert not (deploy_repo.cache_dir / ".git").exists()


@pytest.fixture
def git_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``git`` on PATH that logs each subcommand, then runs the real git."""
    real = shutil.which("git")
    assert real is not None
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "git-calls.log"
    shim = bindir / "git"
    shim.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in --git-dir=*) ;; *) echo "$a" >> '
        f'"{log}"; break;; esac; done\n'
        f'exec "{real}" "$@"\n'
    )
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    log.touch()
    return log


def test_bulk_reads_and_writes_use_one_git_process_each(
    git_calls: Path, deploy_repo_factory: Factory, bare_remote: BareRemote
) -> None:
    repo = deploy_repo_factory()
    files = {f"dev/svc{i:04d}/app.env": f"N={i}\n".encode() * 40 for i in range(2000)}
    head = repo.sync()
    git_calls.write_text("")
    sha = repo.commit(files, "bulk", head)
    assert sha is not None
    assert git_calls.read_text().split() == ["fast-import", "rev-parse"]
    assert repo.push(sha)
    assert sorted(bare_remote.names()) == sorted(files)

    git_calls.write_text("")
    assert repo.read_many(list(files)) == files
    assert git_calls.read_text().split() == ["ls-tree", "cat-file"]

    git_calls.write_text("")
    few = list(files)[:5]
    assert repo.read_many(few) == {p: files[p] for p in few}
    assert git_calls.read_text().split() == ["cat-file"]


def test_many_reads_at_an_older_revision_skip_missing_paths_and_directories(
    deploy_repo: GitDeployRepo,
) -> None:
    v1 = {f"{env}/svc{i:02d}/app.env": f"{env} {i} v1".encode() for env in ("dev", "prod")
          for i in range(40)}  # fmt: skip
    old = _apply(deploy_repo, {**v1, "top.txt": b"top"}, "v1")
    v2 = {p: d.replace(b"v1", b"v2") for p, d in v1.items() if not p.startswith("prod/svc00/")}
    _apply(deploy_repo, {**v2, **delete_prefix("prod/svc00")}, "v2")

    wanted = [*v1, "top.txt", "dev/svc01", "staging/x", "dev/svc99/app.env"]
    assert deploy_repo.read_many(wanted, rev=old) == {**v1, "top.txt": b"top"}
    now = deploy_repo.read_many(wanted)
    assert now == {**v2, "top.txt": b"top"}
    with pytest.raises(DeployRepoError, match="not a commit"):
        deploy_repo.read_many(wanted, rev="0123456789" * 4)


def test_paths_with_pattern_characters_are_literal(deploy_repo: GitDeployRepo) -> None:
    sha = _apply(
        deploy_repo, {"a*/x": b"star", "ab/x": b"ab", ":(glob)q/y": b"magic", "a?/z": b"q"}, "odd"
    )
    assert deploy_repo.list_files("a*") == ["a*/x"]
    assert deploy_repo.list_files(":(glob)q") == [":(glob)q/y"]
    assert [c.sha for c in deploy_repo.log(prefix="a?")] == [sha]
    assert [c.sha for c in deploy_repo.log(prefix="a[b]")] == []
    many = [f"{p}{i}" for p in ("a*/", "ab/") for i in range(40)] + ["a*/x", ":(glob)q/y"]
    assert deploy_repo.read_many(many) == {"a*/x": b"star", ":(glob)q/y": b"magic"}
