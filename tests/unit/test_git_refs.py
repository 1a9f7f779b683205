"""HEAD and tags read from a checkout's files (`adapters.git_refs`) answer as git does,
or send the caller to git; judged against git itself on real repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path

from configcenter.adapters.git_config_repo import GitConfigRepo
from configcenter.adapters.git_refs import read_head, read_tags

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        [*GIT, "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def git_tags(root: Path) -> dict[str, str]:
    out = git(root, "for-each-ref", "--format=%(refname:strip=2) %(objectname) %(*objectname)",
              "refs/tags")  # fmt: skip
    tags = {}
    for line in out.splitlines():
        name, obj, *peeled = line.split(" ")
        tags[name] = peeled[0] if peeled and peeled[0] else obj
    return tags


def git_head(root: Path) -> str | None:
    result = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or None


def test_head_and_packed_tags_answer_as_git(tmp_path: Path) -> None:
    root = tmp_path / "config"
    git(tmp_path, "init", "-q", "-b", "main", str(root))
    assert read_head(root) == (True, None) and git_head(root) is None  # no commit yet
    git(root, "commit", "-q", "--allow-empty", "-m", "one")
    git(root, "tag", "api/1.0.0")  # lightweight
    git(root, "tag", "-a", "-m", "annotated", "api/1.1.0")
    assert read_tags(root) is None  # loose tags: an annotated one only git can peel
    git(root, "pack-refs", "--all")
    assert read_tags(root) == git_tags(root)
    assert read_head(root) == (True, git_head(root))

    # A branch moved after packing is a loose ref again, read before packed-refs.
    git(root, "commit", "-q", "--allow-empty", "-m", "two")
    assert read_head(root) == (True, git_head(root))
    # A tag moved (or added) after packing: loose again, so git is asked.
    git(root, "tag", "-f", "-a", "-m", "moved", "api/1.1.0")
    assert read_tags(root) is None
    git(root, "pack-refs", "--all")
    assert read_tags(root) == git_tags(root)
    assert read_tags(root)["api/1.1.0"] == git_head(root)  # peeled to the commit

    # Detached HEAD.
    git(root, "checkout", "-q", "--detach", "HEAD~1")
    assert read_head(root) == (True, git_head(root))


def test_a_linked_worktree_is_left_to_git_and_the_adapter_answers_as_git(tmp_path: Path) -> None:
    root = tmp_path / "config"
    git(tmp_path, "init", "-q", "-b", "main", str(root))
    git(root, "commit", "-q", "--allow-empty", "-m", "one")
    git(root, "tag", "-a", "-m", "annotated", "web/2.0.0")
    linked = tmp_path / "linked"
    git(root, "worktree", "add", "-q", "-b", "other", str(linked))
    assert read_head(linked) == (False, None)
    assert read_tags(linked) is None
    for checkout in (root, linked):
        repo = GitConfigRepo(checkout)
        assert repo.head_commit() == git_head(checkout)
        assert dict(repo.tags()) == git_tags(checkout)


def test_unexpected_files_send_the_caller_to_git(tmp_path: Path) -> None:
    root = tmp_path / "config"
    git(tmp_path, "init", "-q", "-b", "main", str(root))
    git(root, "commit", "-q", "--allow-empty", "-m", "one")
    git(root, "tag", "v1")
    git(root, "pack-refs", "--all")
    packed = root / ".git" / "packed-refs"
    text = packed.read_text()
    packed.write_text(text.replace("fully-peeled", ""))  # peel lines may be missing
    assert read_tags(root) is None
    packed.write_text("garbage line\n")
    assert read_tags(root) is None and read_head(root) == (False, None)
    packed.write_text(text)
    assert read_tags(root) == git_tags(root)
