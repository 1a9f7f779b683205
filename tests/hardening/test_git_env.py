"""configcenter run from a git hook of another repository: GIT_DIR, GIT_WORK_TREE,
GIT_INDEX_FILE and GIT_OBJECT_DIRECTORY point at that repository (the victim), and
every git command configcenter starts must ignore them. The victim stays byte for byte
as it was; the config repo, its origin, the deploy repo and a source mirror get what
the commands say."""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from configcenter.adapters.config_git import ConfigGit
from configcenter.adapters.git_config_repo import GitConfigRepo
from configcenter.adapters.git_env import GIT_LOCATION_VARS, git_env
from configcenter.adapters.git_lineage import dirty_paths
from configcenter.adapters.source_checkout import GitSourceCheckouts
from configcenter.cli import cli
from tests.support.configrepo import ConfigRepo, git
from tests.support.promote_fixtures import PromotionBed
from tests.support.registry_fixtures import SourceRepo

ROOT = Path(__file__).resolve().parents[2]


def snapshot(root: Path) -> dict[str, str]:
    """Every file of a repository (work tree and .git) by its sha256."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    root = tmp_path / "victim"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README").write_text("the other repository\n")
    git(root, "add", "README")
    git(root, "commit", "-q", "-m", "victim")
    (root / "staged").write_text("staged by its hook\n")
    git(root, "add", "staged")  # an index that differs from HEAD, as in a pre-commit hook
    return root


def in_hook_of(monkeypatch: pytest.MonkeyPatch, victim: Path) -> None:
    """The environment a pre-commit hook of `victim` runs its commands in."""
    monkeypatch.setenv("GIT_DIR", str(victim / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(victim))
    monkeypatch.setenv("GIT_INDEX_FILE", str(victim / ".git" / "index"))
    monkeypatch.setenv("GIT_OBJECT_DIRECTORY", str(victim / ".git" / "objects"))


def test_commands_run_from_another_repos_hook_read_and_write_their_own_repos(
    promotion_bed: PromotionBed,
    victim: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bed = promotion_bed
    source = SourceRepo(tmp_path / "source")
    commit = source.commit({"Dockerfile": "FROM busybox\n", "app/main.sh": "echo hi\n"})
    before = snapshot(victim)
    in_hook_of(monkeypatch, victim)

    def cc(*args: str) -> str:
        result = CliRunner().invoke(cli, ["-C", str(bed.config), *args])
        assert result.exit_code == 0, result.output
        return result.output

    # Reads template tags (cat-file), the work tree's state (status) and the deploy repo.
    assert "api" in cc("plan", "demo")
    cc("validate")
    # Writes a tag in the config repo.
    bed.write_many({"templates/api/app.env.j2": "LOG_LEVEL={{ LOG_LEVEL }}\n"})
    bed.commit("api 1.3.0")
    cc("template", "release", "api", "1.3.0", "--no-push")
    assert git(bed.config, "tag", "--list", "api/1.3.0").strip() == "api/1.3.0"
    # A worktree, a commit on the promotion branch, a push to origin (the local forge).
    assert "Opened local merge request !1" in cc("promote", "dev", "demo")
    assert "promote/dev-to-demo" in bed.origin_branches()
    # The dirty / stale guard (status, merge-base) and a commit in the deploy repo.
    deploy_head = bed.deploy_head()
    cc("apply", "prod", "--no-rollout")
    assert bed.deploy_head() != deploy_head
    # A source mirror for builds: init, fetch, rev-parse, archive.
    checkouts = GitSourceCheckouts(tmp_path / "sources")
    resolved = checkouts.resolve(source.url, "main", "app")
    assert resolved.commit == commit
    exported = checkouts.export(resolved)
    assert (exported / "main.sh").read_text() == "echo hi\n"

    assert snapshot(victim) == before, "the hook's repository was changed"
    assert git(bed.config, "status", "--porcelain") == ""


def test_git_env_drops_every_location_variable_git_names() -> None:
    """git's own list of repository-local variables (but the config ones, which name no
    repository: `git -c` settings and GIT_CONFIG_COUNT stay)."""
    local = set(git(ROOT, "rev-parse", "--local-env-vars").split())
    config = {name for name in local if name.startswith("GIT_CONFIG")}
    assert local - config <= GIT_LOCATION_VARS
    env = git_env({"GIT_DIR": "/x", "GIT_CONFIG_COUNT": "1", "HOME": "/h"}, LC_ALL="C")
    assert env == {"GIT_CONFIG_COUNT": "1", "HOME": "/h", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}


def test_every_module_that_runs_git_passes_git_env() -> None:
    """A subprocess call whose command starts with "git" has `env=` built by git_env."""
    missing = []
    for path in sorted((ROOT / "configcenter").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in ("run", "Popen", "check_output", "call"):
                continue
            command = node.args[0] if node.args else None
            first = command.elts[0] if isinstance(command, ast.List) and command.elts else None
            if not (isinstance(first, ast.Constant) and first.value == "git"):
                continue
            env = next((k.value for k in node.keywords if k.arg == "env"), None)
            # git_env(...), or self._env that __init__ built with it
            if env is None or "_env" not in ast.unparse(env):
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert missing == []


def test_configcenters_status_calls_never_lock_or_rewrite_the_index(tmp_path: Path) -> None:
    """serve looks at its checkout (`git status`) every few seconds, apply's guard asks it
    too: a status that refreshes the index takes .git/index.lock, and a `git add` or
    `git commit` in the checkout at that moment fails ("index.lock: File exists"; the
    flake of tests/apply_on_platforms/test_marathon_files.py under load). Files whose
    stat changed but not their content make a plain `git status` rewrite the index;
    configcenter's calls leave it byte for byte as it was."""
    repo = ConfigRepo.basic(tmp_path / "shop-config")
    index = repo.root / ".git" / "index"
    moved = time.time() - 5  # a whole other second: git compares seconds
    for path in (repo.root / "templates" / "api").iterdir():
        os.utime(path, (moved, moved))  # same bytes, new stat: status would refresh the index
    before = index.read_bytes(), index.stat().st_mtime_ns

    assert ConfigGit(repo.root).checkout_state() is not None
    assert dirty_paths(repo.root) == []
    assert GitConfigRepo(repo.root).head_commit()
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before
    # What they spared: git itself refreshes it here (this is what took the lock).
    subprocess.run(
        ["git", "status"],
        cwd=repo.root,
        capture_output=True,
        env=git_env(GIT_OPTIONAL_LOCKS="1"),
        check=True,
    )
    assert index.read_bytes() != before[0]
