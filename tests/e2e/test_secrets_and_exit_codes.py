"""Secrets never leak anywhere a user can read; exit codes follow DESIGN §5.

The secret scan rolls prod out to the Marathon double, so the `env:` secret is
really resolved (and stored in the double's secret store) before we look for
its value in the deploy repo, commit messages, the run store, the caches and
every line the CLI printed.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.e2e_fixtures import SECRET_ENV, CliResult, World, git_bare, make_world
from tests.support.marathon_double import MarathonDouble

SENTINEL = "s3ntinel-7f1c9e-Pa55w0rd"


def edit(world: World, rel: str, old: str, new: str) -> None:
    text = world.config.read(rel)
    assert old in text, f"{old!r} is not in {rel}"
    world.config.write(rel, text.replace(old, new))
    world.config.commit(f"{rel}: {new.strip()}")


def test_a_resolved_secret_appears_nowhere(tmp_path: Path, marathon_server: MarathonDouble) -> None:
    world = make_world(tmp_path / "world", marathon_url=marathon_server.url)
    world.env[SECRET_ENV] = SENTINEL
    seen: list[CliResult] = []

    def run(*args: str, code: int = 0) -> CliResult:
        result = world.cc(*args)
        assert result.code == code, f"{args} exited {result.code}:\n{result.output}"
        seen.append(result)
        return result

    for fmt in ((), ("--json",)):
        run("plan", "dev", *fmt)
        run("plan", "prod", *fmt)
        run("explain", "prod", "api", *fmt)
    run("render", "prod")
    run("apply", "dev", "--no-rollout")
    rolled = json.loads(run("apply", "prod", "-s", "api", "--json").stdout)
    assert [r["outcome"] for r in rolled["results"]] == ["healthy"]
    edit(
        world, "environments/prod/api.yaml", "replicas: 2", "replicas: 1\nvalues: {LOG_LEVEL: warn}"
    )
    run("apply", "prod", "-s", "api")
    edit(world, "environments/dev/api.yaml", "LOG_LEVEL: debug", "LOG_LEVEL: warn")
    run("apply", "dev", "--no-rollout", "--json")
    run("rollback", "prod", "api")
    run("rollback", "dev", "api", "--no-rollout")
    for fmt in ((), ("--json",)):
        run("history", "prod", *fmt)
        run("history", "dev", *fmt)
        run("plan", "prod", *fmt)

    # The secret was really resolved and handed to the platform's secret store...
    assert SENTINEL in marathon_server.secret_values.values()
    # ...and never written anywhere else.
    for result in seen:
        assert SENTINEL not in result.output, result.output
    objects = world.all_objects()
    assert b"secret:env:SHOP_DB_PASSWORD" in objects  # rendered files carry the reference
    assert SENTINEL.encode() not in objects
    messages = world.git_deploy("log", "--format=%B", "refs/heads/main").decode()
    assert "Configcenter-Env: prod" in messages and SENTINEL not in messages
    for cache in (world.cache_home / "configcenter" / "deploy").iterdir():
        assert SENTINEL.encode() not in git_bare(
            cache, "cat-file", "--batch-all-objects", "--batch"
        )
    dump = world.run_store_dump()
    assert "rollback" in dump and SENTINEL not in dump
    for base in (world.state_home, world.cache_home):
        for path in base.rglob("*"):
            if path.is_file():
                assert SENTINEL.encode() not in path.read_bytes(), path
    assert all(SENTINEL not in body for body in marathon_server.marathon_bodies())


# -- exit codes ----------------------------------------------------------------------------------


def test_success_is_0_and_plan_exit_code_is_2_only_with_changes(world: World) -> None:
    assert world.cc("plan", "dev", "--exit-code").code == 2
    assert world.cc("plan", "dev").code == 0
    assert world.cc("apply", "dev", "--no-rollout").code == 0
    assert world.cc("plan", "dev", "--exit-code").code == 0
    edit(world, "environments/dev/worker.yaml", "QUEUE: jobs", "QUEUE: jobs2")
    assert world.cc("plan", "dev", "--exit-code", "--json").code == 2
    assert world.cc("plan", "dev", "--exit-code", "-s", "api").code == 0


def assert_refused(world: World, result: CliResult, *needles: str) -> None:
    assert result.code == 1, f"exit {result.code}:\n{result.output}"
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in:\n{result.stderr}"


def test_bad_input_exits_1_naming_the_problem_and_writes_nothing(world: World) -> None:
    world.ok("apply", "dev", "--no-rollout")
    head, refs, runs = world.head(), world.refs(), world.run_store_dump()

    assert_refused(world, world.cc("apply", "staging", "--no-rollout"), "staging")
    assert_refused(world, world.cc("history", "staging"), "staging")
    assert_refused(
        world, world.cc("rollback", "dev", "api", "--to", "api-nope", "--no-rollout"), "api-nope"
    )
    assert_refused(world, world.cc("rollback", "dev", "cache", "--no-rollout"), "cache")
    assert_refused(world, world.cc("apply", "dev", "--no-rollout", "-s", "cache"), "cache")
    assert_refused(world, world.cc("apply", "dev", "--no-rollout", "--retry", "apu"), "apu")

    edit(world, "environments/dev/api.yaml", "template: 1.0.0", "template: 9.9.9")
    line = world.config.line_of("environments/dev/api.yaml", "template: 9.9.9")
    bad_pin = world.cc("apply", "dev", "--no-rollout")
    assert_refused(world, bad_pin, f"environments/dev/api.yaml:{line}", "9.9.9")
    assert_refused(world, world.cc("plan", "dev", "--exit-code"), "9.9.9")

    assert world.head() == head and world.refs() == refs
    assert world.run_store_dump() == runs
