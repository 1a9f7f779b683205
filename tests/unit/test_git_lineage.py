"""How a config commit relates to the one last applied (`adapters.git_lineage.relation`),
asked of a real Git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

from configcenter.adapters.git_lineage import relation

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]


def _commit(root: Path, message: str) -> str:
    subprocess.run(
        [*GIT, "-C", str(root), "commit", "-q", "--allow-empty", "-m", message], check=True
    )
    return subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_newer_older_diverged_same_and_unknown(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    base = _commit(tmp_path, "base")
    later = _commit(tmp_path, "later")
    subprocess.run(["git", "-C", str(tmp_path), "checkout", "-q", "-b", "side", base], check=True)
    side = _commit(tmp_path, "side")
    tree = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD^{tree}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    assert relation(tmp_path, base, base) == "same"
    assert relation(tmp_path, base, later) == "newer"
    assert relation(tmp_path, later, base) == "older"
    assert relation(tmp_path, later, side) == "diverged"
    assert relation(tmp_path, "0" * 40, later) == "unknown"  # a commit this clone lacks
    assert relation(tmp_path, tree, later) == "unknown"  # not a commit at all
