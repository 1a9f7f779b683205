"""Questions about the config repo's history that apply's stale/dirty guard asks Git
(the config lineage port, `configcenter.ports.config_lineage`):

* which of the files configcenter reads have uncommitted (or untracked) changes;
* how the config commit being applied relates to the one last applied.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from configcenter.adapters.git_env import git_env
from configcenter.ports.config_lineage import Relation

#: What apply reads from a config repo's work tree.
READ_PATHS = ("configcenter.yaml", "environments", "templates")


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=git_env(),
    )


def dirty_paths(root: Path, paths: Sequence[str] = READ_PATHS) -> list[str]:
    """Paths under `paths` that differ from HEAD: modified, staged, deleted or untracked."""
    result = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", *paths)
    if result.returncode != 0:
        return []
    found: list[str] = []
    entries = result.stdout.split("\0")
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        if "R" in status or "C" in status:
            index += 1  # the rename's source path follows
        found.append(path)
    return sorted(found)


def relation(root: Path, applied: str, current: str) -> Relation:
    """How `current` (being applied) relates to `applied` (the one applied last)."""
    if applied == current:
        return "same"
    # One git command in the usual case (`current` contains `applied`): `--is-ancestor`
    # answers 0 (yes) or 1 (no), and 128 when either is not a commit this clone has.
    found = _git(root, "merge-base", "--is-ancestor", f"{applied}^{{commit}}", current)
    if found.returncode == 0:
        return "newer"
    if found.returncode != 1:
        return "unknown"
    if _git(root, "merge-base", "--is-ancestor", current, applied).returncode == 0:
        return "older"
    return "diverged"


class GitLineage:
    """The config lineage port over the Git checkout at `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def dirty_paths(self) -> list[str]:
        return dirty_paths(self.root)

    def relation(self, applied: str, current: str) -> Relation:
        return relation(self.root, applied, current)
