"""Bullet 1: symlinks (and other non-regular files) in the config repo are refused, never read.

A committer could link a template or a values file to any file the host can read
(~/.ssh/id_rsa, /etc/passwd); its bytes must never reach a message, a render, the
deploy repo, a cache or the run store.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.hardening.conftest import files_containing
from tests.support.configrepo import ConfigRepo
from tests.support.e2e_fixtures import World

EVIL_ENV = "environments/dev/evil.yaml"


def _link(repo: ConfigRepo, rel: str, target: Path) -> None:
    path = repo.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    os.symlink(target, path)


def test_linked_values_file_is_refused_and_never_echoed(
    world: World, sentinel: tuple[Path, bytes]
) -> None:
    target, secret = sentinel
    _link(world.config, EVIL_ENV, target)
    result = world.cc("validate")
    assert result.code == 1, result.output
    assert f"{EVIL_ENV} is a symbolic link" in result.output
    assert "never follows links" in result.output
    assert secret not in result.output.encode()
    assert "Traceback" not in result.output


def test_linked_head_template_is_refused_everywhere(
    world: World, sentinel: tuple[Path, bytes]
) -> None:
    """The reported attack: a HEAD template linked to a private key, then apply."""
    target, secret = sentinel
    world.config.write(
        "environments/dev/_env.yaml",
        world.config.read("environments/dev/_env.yaml") + "allow_head: true\n",
    )
    world.config.write(
        "templates/worker/template.yaml", "outputs: [app.env, conf/app.conf]\nenv: [QUEUE]\n"
    )
    world.config.write("templates/worker/conf/app.conf.j2", "queue={{ QUEUE }}\n")
    world.config.write(
        "environments/dev/worker.yaml",
        "template: HEAD\nimage: {ref: registry.example.com/shop/worker:1.0}\n"
        "values:\n  QUEUE: jobs\n  LOG_LEVEL: info\n",
    )
    world.config.commit("worker at HEAD with a config file")
    world.ok("apply", "dev", "--no-rollout")
    _link(world.config, "templates/worker/conf/app.conf.j2", target)
    world.config.commit("link the config file")

    outputs = [
        world.cc("validate"),
        world.cc("plan", "dev"),
        world.cc("render", "dev", "-s", "worker"),
        world.cc("apply", "dev", "--no-rollout"),
    ]
    for result in outputs:
        assert result.code == 1, result.output
        assert "templates/worker/conf/app.conf.j2 is a symbolic link" in result.output
        assert secret not in result.output.encode(), result.output
        assert "Traceback" not in result.output
    assert secret not in world.all_objects()
    assert files_containing(world.cache_home, secret) == []
    assert files_containing(world.state_home, secret) == []
    assert secret.decode() not in world.run_store_dump()


def test_linked_template_in_a_tag_is_refused(world: World, sentinel: tuple[Path, bytes]) -> None:
    """In a tag the link is a blob holding the target's path; it is refused, not rendered."""
    target, _ = sentinel
    _link(world.config, "templates/worker/app.env.j2", target)
    world.config.release("worker", "1.1.0", {})
    world.config.write(
        "environments/dev/worker.yaml",
        world.config.read("environments/dev/worker.yaml").replace("1.0.0", "1.1.0"),
    )
    world.config.git("checkout", "-q", "HEAD~1", "--", "templates/worker/app.env.j2")
    world.config.commit("dev: worker 1.1.0, work tree back to a regular file")
    result = world.cc("render", "dev", "-s", "worker")
    assert result.code == 1, result.output
    assert "templates/worker@1.1.0/app.env.j2 is a symbolic link" in result.output
    assert str(target) not in result.output, "not even the link's target is rendered"


def test_linked_template_directory_is_refused(world: World, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "template.yaml").write_text("outputs: [app.env]\n")
    (elsewhere / "app.env.j2").write_text("X=1\n")
    world.config.remove("templates/worker")
    _link(world.config, "templates/worker", elsewhere)
    world.config.write(
        "environments/dev/_env.yaml",
        world.config.read("environments/dev/_env.yaml") + "allow_head: true\n",
    )
    world.config.write(
        "environments/dev/worker.yaml",
        "template: HEAD\nimage: {ref: registry.example.com/shop/worker:1.0}\n",
    )
    result = world.cc("validate")
    assert result.code == 1
    assert "templates/worker is a symbolic link" in result.output


def test_fifo_in_the_config_repo_is_refused_without_blocking(world: World) -> None:
    os.mkfifo(world.config.root / "environments/dev/blocker.yaml")
    result = world.cc("validate")  # reading a FIFO would block until the CLI timeout
    assert result.code == 1
    assert "environments/dev/blocker.yaml is a named pipe" in result.output


def test_render_out_refuses_links_and_cleans_its_previous_output(
    world: World, tmp_path: Path, sentinel: tuple[Path, bytes]
) -> None:
    target, secret = sentinel
    out = tmp_path / "out"
    world.ok("render", "dev", "--out", str(out))
    assert (out / "api" / "app.env").is_file()
    stale = out / "api" / "old.conf"
    stale.write_text("from an earlier render\n")
    world.ok("render", "dev", "--out", str(out))
    assert not stale.exists(), "files of an earlier render are removed"

    before = target.read_bytes()
    (out / "api" / "app.env").unlink()
    os.symlink(target, out / "api" / "app.env")
    world.ok("render", "dev", "--out", str(out))
    assert target.read_bytes() == before, "nothing was written through the link"
    assert not (out / "api" / "app.env").is_symlink()
    assert b"LOG_LEVEL" in (out / "api" / "app.env").read_bytes()
    assert secret not in (out / "api" / "app.env").read_bytes()

    linked_out = tmp_path / "linked-out"
    os.symlink(out, linked_out)
    result = world.cc("render", "dev", "--out", str(linked_out))
    assert result.code == 1, result.output
    assert "symbolic link" in result.output

    foreign = tmp_path / "not-ours"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    result = world.cc("render", "dev", "--out", str(foreign))
    assert result.code == 1, result.output
    assert (foreign / "notes.txt").read_text() == "mine\n", "a directory not ours is left alone"
