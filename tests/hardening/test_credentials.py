"""Bullet 6: credentials never outlive a build on disk, never reach a command line, and an
unresponsive deploy remote cannot hang plan for minutes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from configcenter.adapters.git_deploy_repo import GitDeployRepo
from tests.hardening.git_http import GitHttpServer, SilentServer
from tests.support.configrepo import git
from tests.support.e2e_fixtures import World
from tests.support.helpers import poll
from tests.support.registry_fixtures import RegistryServer

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "glpat-Tok3n-must-not-leak-9f2"


def _auth_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("cc-buildah-*"))


@pytest.mark.usefixtures("buildah_builder")
def test_killed_build_leaves_no_registry_password_on_disk(
    tmp_path: Path, auth_registry: RegistryServer, busybox_base: str
) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    creds = auth_registry.credentials
    assert creds is not None
    storage = tmp_path / "storage"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.hardening.build_child",
         str(storage / "root"), str(storage / "run"), busybox_base,
         f"{auth_registry.host}/shop/slow:1", auth_registry.host, creds.username, creds.password],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(private_tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        auth = poll(
            lambda: next((d / "config.json" for d in _auth_dirs(private_tmp)
                          if (d / "config.json").exists()), None),
            120,
            "the build to write its registry auth file",
        )  # fmt: skip
        assert stat.S_IMODE(auth.stat().st_mode) == 0o600
        assert stat.S_IMODE(auth.parent.stat().st_mode) == 0o700
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        poll(lambda: _auth_dirs(private_tmp) == [] or None, 30, "the auth file to be removed")
    finally:
        if child.poll() is None:
            child.kill()
        # buildah itself (our child's child, in the session we started) is still sleeping.
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        assert child.stdout is not None
        child.stdout.close()


@pytest.fixture
def git_http(tmp_path: Path) -> Iterator[GitHttpServer]:
    root = tmp_path / "remotes"
    root.mkdir()
    git(root, "init", "-q", "--bare", "-b", "main", "deploy.git")
    git(root / "deploy.git", "config", "http.receivepack", "true")
    server = GitHttpServer(root, "deployer", TOKEN)
    yield server
    server.close()


def _recording_git(tmp_path: Path) -> tuple[Path, Path]:
    """A `git` first on PATH that records every command line it is started with."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "git-argv.log"
    real = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True)
    (bindir / "git").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec {real.stdout.strip()} "$@"\n'
    )
    (bindir / "git").chmod(0o755)
    return bindir, log


def test_deploy_repo_token_goes_through_a_credential_helper(
    tmp_path: Path, git_http: GitHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir, log = _recording_git(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = GitDeployRepo(
        git_http.url("deploy.git", f"deployer:{TOKEN}"), "main", tmp_path / "cache"
    )
    assert repo.sync() is None, "the empty remote was reached with the token"
    sha = repo.commit({"dev/state.yaml": b"services: {}\n"}, message="first", parent=None)
    assert repo.push(sha) is True
    assert repo.sync() == sha
    assert git_http.expected in git_http.seen_auth, "the token reached the server"
    argv = log.read_text()
    assert "ls-remote" in argv and "push" in argv
    assert TOKEN not in argv, "the token was on a git command line"
    assert TOKEN not in (tmp_path / "cache" / "config").read_text()


def test_plan_gives_up_on_an_unresponsive_remote_after_plan_timeout(world: World) -> None:
    silent = SilentServer()
    try:
        world.config.write(
            "configcenter.yaml",
            world.config.read("configcenter.yaml").replace(
                "deploy_repo: {url: ../deploy.git, branch: main}",
                f"deploy_repo: {{url: 'http://127.0.0.1:{silent.port}/deploy.git', "
                "plan_timeout: 2s, timeout: 10m}",
            ),
        )
        result = world.cc("plan", "dev")
    finally:
        silent.close()
    assert result.code == 1, result.output
    assert "did not finish within 2s" in result.output
    assert "Traceback" not in result.output


def test_deploy_repo_timeouts_are_validated(world: World) -> None:
    world.config.write(
        "configcenter.yaml",
        world.config.read("configcenter.yaml").replace(
            "branch: main}", "branch: main, timeout: 5 minutes}"
        ),
    )
    result = world.cc("validate")
    assert result.code == 1
    assert (
        "configcenter.yaml:3" in result.output and "'5 minutes' is not a duration" in result.output
    )
