"""The history index (`adapters/history_index.py`) against real bare remotes: `log_changes`
answers exactly as git alone does (`history_index=False`), after new commits, a rewritten
(force-pushed) history, a merge, a deleted, garbled or foreign index file, and a tip
pruned from the cache; and once filled, git compares no trees for it again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from configcenter.adapters.git_deploy_repo import HISTORY_INDEX_DIR, GitDeployRepo
from configcenter.ports.deploy_repo import CommitInfo
from tests.deployrepo.test_storage import git_calls
from tests.support.deployrepo_fixtures import BareRemote

__all__ = ["git_calls"]  # the fixture

Factory = Callable[..., GitDeployRepo]
UNDER = ["dev/.state", "dev/state.yaml"]
QUERIES: list[tuple[list[str], int | None]] = [
    (["dev/.state/a.json", "dev/state.yaml"], 50),
    (["dev/.state/a.json"], 1),
    (["dev/.state/b.json", "dev/state.yaml"], 2),
    (["dev/.state/b.json"], None),
    (["dev/.state"], 3),
    (["dev/.state/"], -1),
    (["dev/state.yaml"], 50),
    (["dev/.state/never.json"], 50),
    (["dev/.state/a.json"], 0),
    (["dev/.state/c.json"], 50),
]
Answer = list[tuple[CommitInfo, list[tuple[str, str | None]]]]


def _apply(repo: GitDeployRepo, changes: Mapping[str, bytes | None], message: str) -> str:
    head = repo.sync()
    sha = repo.commit(changes, message, head)
    assert sha is not None
    assert repo.push(sha)
    return sha


def _answers(repo: GitDeployRepo) -> list[Answer]:
    """Every query's answer, the order of each commit's files included."""
    repo.sync()
    return [
        [(info, list(files.items())) for info, files in repo.log_changes(paths, limit, None, UNDER)]
        for paths, limit in QUERIES
    ]


def _same_as_git(indexed: GitDeployRepo, plain: GitDeployRepo) -> list[Answer]:
    got = _answers(indexed)
    assert got == _answers(plain)
    return got


def _fills(git_calls: Path) -> int:
    """How many `git -c ... log --raw` ran since the log was emptied (the shim logs the first
    argument: "-c" for these, "log" for the messages, "ls-remote" for a sync)."""
    calls = git_calls.read_text().split()
    git_calls.write_text("")
    return calls.count("-c")


def _index_files(repo: GitDeployRepo) -> list[Path]:
    return sorted((repo.cache_dir / HISTORY_INDEX_DIR).glob("*.json"))


def _history(repo: GitDeployRepo) -> list[str]:
    """A few services' records written, rewritten and deleted, beside files outside them."""
    shas = [
        _apply(
            repo,
            {
                "dev/.state/a.json": b'{"n": 1}\n',
                "dev/.state/b.json": b'{"n": 1}\n',
                "dev/.state/_env.json": b"{}\n",
                "dev/a/app.env": b"A=1\n",
                "prod/.state/a.json": b'{"n": 1}\n',
            },
            "first",
        )
    ]
    shas.append(_apply(repo, {"dev/.state/a.json": b'{"n": 2}\n'}, "a 2"))
    shas.append(_apply(repo, {"dev/.state/b.json": b'{"n": 2}\n', "dev/a/app.env": b"A=2\n"}, "b"))
    shas.append(_apply(repo, {"dev/a/app.env": b"A=3\n"}, "outside the records"))
    shas.append(_apply(repo, {"prod/.state/a.json": b'{"n": 2}\n'}, "another env"))
    shas.append(_apply(repo, {"dev/.state/b.json": None}, "b deleted"))
    shas.append(_apply(repo, {"dev/state.yaml": b"services: {}\n"}, "legacy"))
    shas.append(_apply(repo, {"dev/.state/a.json": b'{"n": 3}\n', "dev/state.yaml": None}, "a 3"))
    return shas


def test_index_answers_as_git_and_compares_no_trees_once_filled(
    deploy_repo_factory: Factory, git_calls: Path
) -> None:
    writer = deploy_repo_factory("writer")
    _history(writer)
    indexed, plain = (
        deploy_repo_factory("indexed"),
        deploy_repo_factory("plain", history_index=False),
    )
    answers = _same_as_git(indexed, plain)
    assert [c.subject for c, _ in answers[0]] == ["a 3", "legacy", "a 2", "first"]
    assert answers[0][0][1] == [
        ("dev/.state/a.json", answers[0][0][1][0][1]),
        ("dev/state.yaml", None),
    ]
    assert [c.subject for c, _ in answers[3]] == ["b deleted", "b", "first"]
    assert answers[3][0][1] == [("dev/.state/b.json", None)]
    assert answers[7] == [] and answers[8] == []
    assert len(_index_files(indexed)) == 1 and _index_files(plain) == []

    git_calls.write_text("")
    again = _answers(indexed)
    assert again == answers
    # ls-remote for each sync, then each answer's messages: no `-c ... log --raw`.
    calls = git_calls.read_text().split()
    assert set(calls) == {"ls-remote", "log"}, calls
    assert calls.count("log") == sum(1 for answer in answers if answer)


def test_new_commits_and_a_deleted_or_garbled_index(deploy_repo_factory: Factory) -> None:
    writer = deploy_repo_factory("writer")
    _history(writer)
    indexed, plain = (
        deploy_repo_factory("indexed"),
        deploy_repo_factory("plain", history_index=False),
    )
    _same_as_git(indexed, plain)

    _apply(writer, {"dev/.state/a.json": b'{"n": 4}\n', "dev/.state/c.json": b"{}\n"}, "new")
    _apply(writer, {"dev/x/app.env": b"X\n"}, "new, outside")
    answers = _same_as_git(indexed, plain)
    assert answers[0][0][0].subject == "new"

    shutil.rmtree(indexed.cache_dir / HISTORY_INDEX_DIR)
    assert _same_as_git(indexed, plain) == answers
    (index,) = _index_files(indexed)

    data = json.loads(index.read_bytes())
    bad_blob = {sha: [parents, [[f, 123] for f, _b in changes]]
                for sha, (parents, changes) in data["commits"].items()}  # fmt: skip
    for junk in (
        b"",
        b"{not json",
        b"[]",
        json.dumps({"format": 1}).encode(),
        json.dumps({**data, "commits": bad_blob}).encode(),
        json.dumps(
            {**data, "tips": ["--all"], "commits": {**data["commits"], "--all": [[], []]}}
        ).encode(),
    ):
        index.write_bytes(junk)
        assert _same_as_git(indexed, plain) == answers

    # Files that claim no commit changed anything: one whose tips are not in it, one of
    # another scope under this one's name, one of other code, one of another format.
    data = json.loads(index.read_bytes())
    emptied = {sha: [parents, []] for sha, (parents, _changes) in data["commits"].items()}
    for foreign in (
        {"tips": ["f" * 40]},
        {"scope": ["dev/.state", "dev/state.yaml", "prod/.state"]},
        {"code": "0" * 64},
        {"format": 2},
    ):
        index.write_text(json.dumps({**data, "commits": emptied, **foreign}))
        assert _same_as_git(indexed, plain) == answers


def test_rewritten_history_and_a_tip_pruned_from_the_cache(
    deploy_repo_factory: Factory, bare_remote: BareRemote, git_calls: Path
) -> None:
    writer = deploy_repo_factory("writer")
    shas = _history(writer)
    indexed, plain = (
        deploy_repo_factory("indexed"),
        deploy_repo_factory("plain", history_index=False),
    )
    before = _same_as_git(indexed, plain)

    # Someone force-pushes the branch back to the third commit and builds on it anew.
    bare_remote.git("update-ref", f"refs/heads/{bare_remote.branch}", shas[2])
    rewriter = deploy_repo_factory("rewriter")
    _apply(rewriter, {"dev/.state/a.json": b'{"n": "rewritten"}\n'}, "rewritten a")
    _fills(git_calls)
    after = _answers(indexed)
    assert _fills(git_calls) == 1  # the new commit alone, then every answer from the index
    assert after == _answers(plain)
    assert after != before and after[0][0][0].subject == "rewritten a"
    assert [c.subject for c, _ in after[3]] == ["b", "first"]

    # The old tip's commits are pruned from the cache; then more commits come.
    subprocess.run(
        ["git", f"--git-dir={indexed.cache_dir}", "reflog", "expire", "--expire=now", "--all"],
        check=True,
    )
    subprocess.run(["git", f"--git-dir={indexed.cache_dir}", "gc", "-q", "--prune=now"], check=True)
    _apply(rewriter, {"dev/.state/b.json": b'{"n": "again"}\n'}, "b again")
    _fills(git_calls)
    assert _answers(indexed)[3][0][0].subject == "b again"
    assert _fills(git_calls) == 1  # the missing tip is skipped, not a failure
    assert _answers(indexed) == _answers(plain)


def test_a_merge_is_answered_by_git(
    deploy_repo_factory: Factory, bare_remote: BareRemote, tmp_path: Path, git_calls: Path
) -> None:
    writer = deploy_repo_factory("writer")
    shas = _history(writer)
    indexed, plain = (
        deploy_repo_factory("indexed"),
        deploy_repo_factory("plain", history_index=False),
    )
    _same_as_git(indexed, plain)

    # A side branch off the second commit adds c.json; the merge keeps the head's files and
    # that one (git follows only the side parent for c.json: no first-parent walk shows it).
    env = {**os.environ, "GIT_INDEX_FILE": str(tmp_path / "merge-index")}

    def git(*args: str, stdin: bytes | None = None) -> str:
        out = subprocess.run(
            ["git", f"--git-dir={bare_remote.path}", *args],
            input=stdin, env=env, capture_output=True, check=True,
        ).stdout  # fmt: skip
        return out.decode().strip()

    blob = git("hash-object", "-w", "--stdin", stdin=b'{"n": "side"}\n')

    def tree_with_c(base: str) -> str:
        git("read-tree", base)
        git("update-index", "--add", "--cacheinfo", f"100644,{blob},dev/.state/c.json")
        return git("write-tree")

    side = git("commit-tree", tree_with_c(shas[1]), "-p", shas[1], "-m", "side adds c")
    merge = git("commit-tree", tree_with_c(shas[-1]), "-p", shas[-1], "-p", side, "-m", "merge")
    bare_remote.git("update-ref", f"refs/heads/{bare_remote.branch}", merge)
    answers = _same_as_git(indexed, plain)
    assert [c.subject for c, _ in answers[-1]] == ["side adds c"]
    # The commits read before meeting the merge are kept: git alone answers, nothing more.
    _fills(git_calls)
    indexed.log_changes(["dev/.state/c.json"], 50, None, UNDER)
    assert _fills(git_calls) == 1

    _apply(writer, {"dev/.state/a.json": b'{"n": 5}\n'}, "after the merge")
    answers = _same_as_git(indexed, plain)
    assert answers[1][0][0].subject == "after the merge"  # limit 1: before the merge
    assert [c.subject for c, _ in answers[-1]] == ["side adds c"]


def test_an_unwritable_index_dir_only_costs_time(deploy_repo_factory: Factory) -> None:
    writer = deploy_repo_factory("writer")
    _history(writer)
    indexed, plain = (
        deploy_repo_factory("indexed"),
        deploy_repo_factory("plain", history_index=False),
    )
    indexed.sync()
    (indexed.cache_dir / HISTORY_INDEX_DIR).write_text("a file where the directory goes")
    _same_as_git(indexed, plain)
    assert (indexed.cache_dir / HISTORY_INDEX_DIR).read_text() == "a file where the directory goes"


def _fast_import(remote: BareRemote, count: int, parent: str | None) -> str:
    """``count`` commits on the branch, each rewriting a.json, every third b.json too."""
    ref = f"refs/heads/{remote.branch}"
    stream = []
    for i in range(count):
        stream.append(f"commit {ref}\nmark :{i + 1}\n")
        stream.append(f"committer t <t@example.com> {1_700_000_000 + i} +0000\n")
        message = f"bulk {i}"
        stream.append(f"data {len(message)}\n{message}\n")
        if i == 0 and parent:
            stream.append(f"from {parent}\n")
        for name in ("a", "b") if i % 3 == 0 else ("a",):
            body = f'{{"n": {i}}}\n'
            stream.append(f"M 100644 inline dev/.state/{name}.json\ndata {len(body)}\n{body}\n")
    remote.git("fast-import", "--quiet", stdin="".join(stream).encode())
    head = remote.head()
    assert head is not None
    return head


def _indexed_commits(repo: GitDeployRepo) -> tuple[int, int]:
    """(commits, tips) in the index file."""
    (index,) = _index_files(repo)
    data = json.loads(index.read_bytes())
    return len(data["commits"]), len(data["tips"])


def test_a_long_branch_is_read_as_far_as_the_walk_needs(
    deploy_repo_factory: Factory, bare_remote: BareRemote, git_calls: Path
) -> None:
    head = _fast_import(bare_remote, 400, None)
    indexed, plain = (
        deploy_repo_factory("indexed"),
        deploy_repo_factory("plain", history_index=False),
    )
    indexed.sync(), plain.sync()

    def both(paths: list[str], limit: int | None) -> list[str]:
        """The indexed answer, which must be git's; _fills then counts its git calls."""
        expected = plain.log_changes(paths, limit, None, UNDER)
        git_calls.write_text("")
        got = indexed.log_changes(paths, limit, None, UNDER)
        assert got == expected
        return [info.subject for info, _ in got]

    assert both(["dev/.state/a.json"], 10) == [f"bulk {i}" for i in range(399, 389, -1)]
    assert _fills(git_calls) == 1 and _indexed_commits(indexed) == (64, 0)
    assert both(["dev/.state/b.json"], 30) == [f"bulk {i}" for i in range(399, 309, -3)]
    assert _fills(git_calls) == 1 and _indexed_commits(indexed) == (128, 0)
    assert len(both(["dev/.state/b.json"], None)) == 134  # 64 more, then the last 208
    assert _fills(git_calls) == 2 and _indexed_commits(indexed) == (400, 1)
    both(["dev/.state/a.json"], None)
    assert _fills(git_calls) == 0

    new = _fast_import(bare_remote, 2, head)
    indexed.sync(), plain.sync()
    assert both(["dev/.state/b.json"], 1) == ["bulk 0"]
    assert _fills(git_calls) == 1 and _indexed_commits(indexed) == (402, 1)
    assert indexed.head() == new
