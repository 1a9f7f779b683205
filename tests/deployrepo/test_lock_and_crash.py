"""Cross-process locking and crash safety, with real child processes killed by SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from configcenter.adapters.git_deploy_repo import (
    CRASH_POINTS,
    DEFAULT_LOCK_EXPIRY,
    LOCK_FILE,
    GitDeployRepo,
)
from configcenter.crashpoints import ARM_ENV, CRASH_ENV, crash_env
from configcenter.ports.deploy_repo import DeployRepoError, DeployRepoLockTimeout, delete_prefix
from tests.support.deployrepo_fixtures import BareRemote

Factory = Callable[..., GitDeployRepo]
ROOT = Path(__file__).resolve().parents[2]


def _child_env(crash_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_ENV, ARM_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if crash_at is not None:
        env.update(crash_env(crash_at))
    return env


def _child(repo: GitDeployRepo, mode: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.deployrepo.child", mode, repo.url, repo.branch,
            str(repo.cache_dir), *extra]  # fmt: skip


def _hold(
    repo: GitDeployRepo, crash_at: str | None = None, expiry: float = 600
) -> subprocess.Popen[str]:
    """A child process holding ``repo``'s lock once it has printed "locked"."""
    proc = subprocess.Popen(
        _child(repo, "hold", str(expiry)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_child_env(crash_at),
    )
    if crash_at is None:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_excludes_a_holder_in_another_process_until_it_releases(
    deploy_repo: GitDeployRepo,
) -> None:
    holder = _hold(deploy_repo)
    try:
        started = time.monotonic()
        with pytest.raises(DeployRepoLockTimeout) as info, deploy_repo.lock(timeout=0.3):
            pytest.fail("got the lock while another live process held it")
        assert time.monotonic() - started >= 0.3
        message = str(info.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert str(deploy_repo.cache_dir / LOCK_FILE) in message
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
    # The holder releases a moment after its stdin closes: waiting polls until then.
    with deploy_repo.lock(timeout=30):
        record = json.loads((deploy_repo.cache_dir / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid()
    assert holder.wait(timeout=30) == 0
    assert not (deploy_repo.cache_dir / LOCK_FILE).exists()


def test_lock_of_a_dead_process_is_taken_over_with_a_warning(
    deploy_repo: GitDeployRepo, caplog: pytest.LogCaptureFixture
) -> None:
    crashed = _hold(deploy_repo, crash_at="deploy_repo.lock.acquired")
    assert crashed.wait(timeout=60) == -signal.SIGKILL
    record = json.loads((deploy_repo.cache_dir / LOCK_FILE).read_text())
    assert record["pid"] == crashed.pid
    with caplog.at_level(logging.WARNING), deploy_repo.lock(timeout=0):
        pass
    assert f"pid {crashed.pid}" in caplog.text
    assert "no longer running" in caplog.text


def test_expired_lock_of_a_live_process_is_taken_over(
    deploy_repo_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    holder_view = deploy_repo_factory("shared")
    holder = _hold(holder_view)
    impatient = deploy_repo_factory("shared", lock_expiry=0.0)
    try:
        with caplog.at_level(logging.WARNING), impatient.lock(timeout=0):
            assert f"pid {holder.pid}" in caplog.text
            assert "expiry" in caplog.text
    finally:
        _out, err = holder.communicate(timeout=30)
    assert holder.returncode == 0
    assert "was taken over" in err


def test_a_live_holder_keeps_its_lock_past_the_expiry_by_heartbeat(
    deploy_repo_factory: Factory,
) -> None:
    expiry = 1.0  # heartbeats every 0.25 s: a loaded machine still keeps up
    holder = _hold(deploy_repo_factory("shared"), expiry=expiry)
    waiter = deploy_repo_factory("shared", lock_expiry=expiry)
    try:
        # Waiting 2.5 expiries: without heartbeats the lock would have gone stale.
        owner = f"pid {holder.pid}"
        with pytest.raises(DeployRepoLockTimeout, match=owner), waiter.lock(timeout=2.5 * expiry):
            pytest.fail("took over a lock whose owner is alive and heartbeating")
    finally:
        _out, err = holder.communicate(timeout=30)
    assert holder.returncode == 0, err
    assert "taken over" not in err
    with waiter.lock(timeout=0):
        pass


def test_a_silent_lock_of_another_host_is_taken_over_within_the_default_wait(
    deploy_repo: GitDeployRepo, caplog: pytest.LogCaptureFixture
) -> None:
    """A pod restarted under a new hostname with its predecessor's cache volume: the old
    holder's pid cannot be checked from here, but its heartbeat stopped."""
    deploy_repo.cache_dir.mkdir(parents=True)
    silent = DEFAULT_LOCK_EXPIRY + 1
    record = {"pid": 1, "host": "serve-7f9c-old", "time": time.time() - silent, "token": "x"}
    (deploy_repo.cache_dir / LOCK_FILE).write_text(json.dumps(record))
    assert DEFAULT_LOCK_EXPIRY < 60, "taken over before a waiter's default 60 s runs out"
    with caplog.at_level(logging.WARNING), deploy_repo.lock(timeout=0):
        assert "pid 1 on host serve-7f9c-old" in caplog.text and "silent" in caplog.text


def test_lock_held_on_another_host_is_waited_for_not_taken(deploy_repo: GitDeployRepo) -> None:
    deploy_repo.cache_dir.mkdir(parents=True)
    record = {"pid": 1, "host": "ci-runner-7", "time": time.time(), "token": "x"}
    (deploy_repo.cache_dir / LOCK_FILE).write_text(json.dumps(record))
    expected = "pid 1 on host ci-runner-7"
    with pytest.raises(DeployRepoLockTimeout, match=expected), deploy_repo.lock(timeout=0.1):
        pytest.fail("took a fresh lock of another host")


def test_unreadable_lock_file_is_taken_over(
    deploy_repo: GitDeployRepo, caplog: pytest.LogCaptureFixture
) -> None:
    deploy_repo.cache_dir.mkdir(parents=True)
    (deploy_repo.cache_dir / LOCK_FILE).write_text("{half a rec")
    with caplog.at_level(logging.WARNING), deploy_repo.lock(timeout=0):
        pass
    assert "unreadable" in caplog.text


def test_lock_is_not_reentrant(deploy_repo: GitDeployRepo) -> None:
    with (
        deploy_repo.lock(),
        pytest.raises(DeployRepoError, match="not reentrant"),
        deploy_repo.lock(),
    ):
        pytest.fail("nested lock")
    with deploy_repo.lock():
        pass


INITIAL = {
    **{f"dev/svc{i:02d}/app.env": f"VERSION=1\nN={i}\n" for i in range(30)},
    "dev/old/app.env": "OLD=1\n",
    "dev/old/conf/x.yaml": "x: 1\n",
    "dev/state.yaml": "services: 30\n",
}
CHANGES: dict[str, str | None] = {
    **{f"dev/svc{i:02d}/app.env": f"VERSION=2\nN={i}\n" for i in range(30)},
    **{f"dev/new{i:02d}/app.env": f"NEW={i}\n" for i in range(30)},
    **delete_prefix("dev/old"),
    "dev/state.yaml": "services: 60\n",
}


def _expected() -> dict[str, bytes]:
    files = {k: v.encode() for k, v in INITIAL.items() if not k.startswith("dev/old/")}
    files.update({k: v.encode() for k, v in CHANGES.items() if v is not None})
    return files


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_at_any_step_leaves_remote_before_or_after_and_a_rerun_converges(
    point: str, deploy_repo: GitDeployRepo, bare_remote: BareRemote, tmp_path: Path
) -> None:
    head = deploy_repo.sync()
    before = deploy_repo.commit({k: v.encode() for k, v in INITIAL.items()}, "initial", head)
    assert before is not None and deploy_repo.push(before)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"message": "dev: apply", "changes": CHANGES}))
    run = _child(deploy_repo, "apply", str(spec))

    crashed = subprocess.run(run, cwd=ROOT, env=_child_env(point), capture_output=True, text=True)
    assert crashed.returncode == -signal.SIGKILL, f"{point} never reached: {crashed.stderr}"
    after_crash = bare_remote.head()
    assert after_crash is not None
    if after_crash != before:
        assert bare_remote.files(after_crash) == _expected()
        assert bare_remote.parents(after_crash) == [before]
    bare_remote.fsck()

    rerun = subprocess.run(run, cwd=ROOT, env=_child_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    final = bare_remote.head()
    assert final is not None
    assert json.loads(rerun.stdout)["head"] == final
    assert bare_remote.files() == _expected()
    assert bare_remote.parents(final) == [before], "exactly one commit for the apply"
    bare_remote.fsck()
    subprocess.run(
        ["git", f"--git-dir={deploy_repo.cache_dir}", "fsck", "--no-dangling"],
        check=True,
        capture_output=True,
    )
    assert not (deploy_repo.cache_dir / LOCK_FILE).exists()
