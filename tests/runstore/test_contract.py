"""The run store contract: every adapter passes the same tests."""

from __future__ import annotations

import multiprocessing
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest

from configcenter.adapters.postgres_runs import PostgresRunStore
from configcenter.adapters.runstores import MIGRATIONS, Migration
from configcenter.adapters.sqlite_runs import SqliteRunStore
from configcenter.core.redact import Redactor
from configcenter.ports.runstore import (
    Run,
    RunNotFoundError,
    RunStore,
    RunStoreError,
    new_run_id,
)
from configcenter.wiring import open_run_store
from tests.runstore import workers
from tests.runstore.helpers import open_with_migrations, raw_contents

RUN_ID = re.compile(r"^r\d{8}T\d{12}Z[0-9a-f]{10}$")


def schema_version(store: RunStore) -> int:
    """The adapters' own schema_version (not part of the port)."""
    assert isinstance(store, SqliteRunStore | PostgresRunStore)
    return store.schema_version()


# -- start / append / finish / get -------------------------------------------


def test_start_records_a_running_run(store: RunStore) -> None:
    before = datetime.now(UTC)
    run = store.start("apply", "dev", ["db", "api"], "cli", "alice", {"plan": {"api": "update"}})
    after = datetime.now(UTC)

    assert RUN_ID.match(run.id), run.id
    assert (run.kind, run.env, run.services) == ("apply", "dev", ["db", "api"])
    assert (run.trigger, run.actor, run.outcome) == ("cli", "alice", "running")
    assert run.ended_at is None and run.log == ""
    assert run.details == {"plan": {"api": "update"}}
    assert run.started_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= run.started_at <= after + timedelta(seconds=1)
    assert store.get(run.id) == run


def test_has_says_whether_a_run_id_is_stored(store: RunStore) -> None:
    run = store.start("apply", "dev", ["api"], "cli", "alice")
    store.append_log(run.id, "a line\n")
    store.finish(run.id, "succeeded")

    assert store.has(run.id) is True
    assert store.has(new_run_id()[0]) is False
    assert store.has(run.id[:-1] + "x") is False
    assert store.has("") is False


def test_append_log_keeps_order_and_finish_ends_the_run(store: RunStore) -> None:
    run = store.start("deploy", "prod", ["api"], "webhook:gitlab", "bot")
    store.append_log(run.id, "rolling out api\n")
    store.append_log(run.id, "")
    store.append_log(run.id, "api healthy: 3/3 ready\n")
    store.append_log(run.id, "ünïcode ✓\n")

    done = store.finish(run.id, "succeeded", {"release": "api-7"})

    assert done.outcome == "succeeded"
    assert done.ended_at is not None and done.ended_at >= done.started_at
    assert done.log == "rolling out api\napi healthy: 3/3 ready\nünïcode ✓\n"
    assert store.get(run.id) == done


def test_finish_merges_details_into_those_from_start(store: RunStore) -> None:
    run = store.start("build", "dev", ["api"], "cli", "alice", {"a": 1, "b": [1, 2]})
    done = store.finish(run.id, "failed", {"b": "replaced", "error": "exit status 1"})
    assert done.details == {"a": 1, "b": "replaced", "error": "exit status 1"}


def test_a_run_finishes_once(store: RunStore) -> None:
    run = store.start("rollback", "prod", ["api"], "cli", "alice")
    store.finish(run.id, "rolled_back")
    with pytest.raises(RunStoreError, match="already finished with outcome 'rolled_back'"):
        store.finish(run.id, "succeeded")
    got = store.get(run.id)
    assert got is not None and got.outcome == "rolled_back"


def test_unknown_run_ids(store: RunStore) -> None:
    assert store.get("r20000101T000000000000Z0000000000") is None
    with pytest.raises(RunNotFoundError, match="no run with id 'nope'"):
        store.append_log("nope", "text\n")
    with pytest.raises(RunNotFoundError):
        store.finish("nope", "succeeded")
    assert isinstance(RunNotFoundError("x"), LookupError)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.start("deploy-all", "dev", ["api"], "cli", "a"), "unknown run kind"),
        (lambda s: s.start("apply", "", ["api"], "cli", "a"), "needs an environment"),
        (lambda s: s.start("apply", "dev", "api", "cli", "a"), r"pass \['api'\]"),
        (lambda s: s.start("apply", "dev", ["api", "api"], "cli", "a"), "names a service twice"),
        (lambda s: s.start("apply", "dev", ["api"], "", "a"), "needs a trigger"),
        (lambda s: s.start("apply", "dev", ["api"], "cli", ""), "needs an actor"),
        (
            lambda s: s.start("apply", "dev", ["api"], "cli", "a", {"at": datetime.now(UTC)}),
            r"must be JSON data.*isoformat",
        ),
        (lambda s: s.list(limit=0), r"out of range: use 1\.\.1000"),
        (lambda s: s.list(kind="deploys"), "unknown run kind 'deploys'"),
    ],
)
def test_bad_input_is_refused_with_the_fix(store: RunStore, call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(RunStoreError, match=message):
        call(store)
    assert store.list() == []


def test_finish_refuses_outcomes_that_are_not_final(store: RunStore) -> None:
    run = store.start("apply", "dev", ["api"], "cli", "alice")
    for outcome in ("running", "ok"):
        with pytest.raises(RunStoreError, match="use one of succeeded, failed, rolled_back, noop"):
            store.finish(run.id, outcome)
    with pytest.raises(RunStoreError, match="must be JSON data"):
        store.finish(run.id, "failed", {"error": ValueError("x")})
    got = store.get(run.id)
    assert got is not None and got.outcome == "running"


# -- list ----------------------------------------------------------------------


def _seed(store: RunStore) -> list[Run]:
    """Runs in start order: oldest first."""
    specs = [
        ("apply", "dev", ["db", "api"]),
        ("build", "dev", ["api"]),
        ("deploy", "dev", ["api"]),
        ("apply", "prod", ["api"]),
        ("reconcile", "dev", ["db", "api", "web"]),
        ("promote", "prod", ["web"]),
        ("rollback", "prod", ["api"]),
    ]
    runs = [store.start(kind, env, services, "cli", "alice") for kind, env, services in specs]
    for run in runs:
        store.append_log(run.id, f"log of {run.kind} {run.env}\n")
    return runs


def test_list_is_newest_first_and_filters(store: RunStore) -> None:
    runs = _seed(store)
    newest_first = [r.id for r in reversed(runs)]

    assert [r.id for r in store.list()] == newest_first
    assert newest_first == sorted(newest_first, reverse=True)

    def ids(**filters: object) -> list[str]:
        return [r.id for r in store.list(**filters)]  # type: ignore[arg-type]

    assert ids(env="prod") == [runs[6].id, runs[5].id, runs[3].id]
    assert ids(kind="apply") == [runs[3].id, runs[0].id]
    assert ids(service="db") == [runs[4].id, runs[0].id]
    assert ids(service="web", env="prod") == [runs[5].id]
    assert ids(env="dev", kind="apply", service="api") == [runs[0].id]
    assert ids(env="staging") == []
    assert ids(service="ap") == []  # services match whole names


def test_list_pages_with_limit_and_before(store: RunStore) -> None:
    runs = _seed(store)
    first = store.list(limit=3)
    second = store.list(limit=3, before=first[-1].id)
    third = store.list(limit=3, before=second[-1].id)
    assert [r.id for r in first + second + third] == [r.id for r in reversed(runs)]
    assert len(third) == 1
    assert store.list(before=runs[0].id) == []


def test_list_leaves_logs_out_unless_asked(store: RunStore) -> None:
    runs = _seed(store)
    plain = store.list(env="prod", kind="promote")
    assert [(r.services, r.log) for r in plain] == [(["web"], "")]
    full = store.list(env="prod", kind="promote", with_log=True)
    assert full[0].log == "log of promote prod\n"
    assert full[0] == store.get(runs[5].id)


# -- ids ------------------------------------------------------------------------


def test_ids_sort_in_start_order_and_never_repeat() -> None:
    stalled = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    made = [new_run_id(stalled)[0] for _ in range(500)] + [new_run_id()[0] for _ in range(500)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)
    assert all(RUN_ID.match(i) for i in made)
    rid, started = new_run_id(datetime(2031, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    assert rid.startswith("r20310102T030405678901Z") and started.year == 2031


# -- concurrency ----------------------------------------------------------------


def test_concurrent_appends_from_threads(store: RunStore) -> None:
    shared = store.start("apply", "dev", ["api"], "cli", "alice")
    threads_n, lines = 6, 40
    errors: list[BaseException] = []
    started: list[str] = []
    gate = threading.Barrier(threads_n)

    def work(name: str) -> None:
        try:
            gate.wait(timeout=30)
            for i in range(lines):
                store.append_log(shared.id, f"{name} {i}\n")
                if i % 10 == 0:
                    started.append(store.start("build", "dev", [name], "cli", name).id)
                    store.list(limit=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)

    got = store.get(shared.id)
    assert got is not None
    log_lines = got.log.splitlines()
    assert len(log_lines) == threads_n * lines
    for n in range(threads_n):
        mine = [line for line in log_lines if line.startswith(f"t{n} ")]
        assert mine == [f"t{n} {i}" for i in range(lines)]  # each writer's order is kept
    assert len(set(started)) == threads_n * 4
    assert len(store.list(kind="build", limit=1000)) == threads_n * 4


def _run_children(target: object, args_for: list[tuple[object, ...]]) -> dict[str, object]:
    """Start spawned children together and collect what each reports."""
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    out = ctx.Queue()
    children = [ctx.Process(target=target, args=(*args, go, out)) for args in args_for]  # type: ignore[arg-type]
    for child in children:
        child.start()
    go.set()
    results: dict[str, object] = {}
    try:
        for _ in children:
            name, result = out.get(timeout=180)
            results[name] = result
    finally:
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
    assert all(c.exitcode == 0 for c in children), [c.exitcode for c in children]
    return results


def test_concurrent_appends_from_two_processes(store_url: str, store: RunStore) -> None:
    shared = store.start("apply", "dev", ["api"], "cli", "alice")
    lines, runs = 150, 5
    results = _run_children(
        workers.append_and_start,
        [(store_url, shared.id, name, lines, runs) for name in ("p1", "p2")],
    )
    for name, result in results.items():
        assert isinstance(result, list), f"{name}: {result}"
        assert len(result) == runs

    got = store.get(shared.id)
    assert got is not None
    log_lines = got.log.splitlines()
    assert len(log_lines) == 2 * lines
    for name in ("p1", "p2"):
        assert [x for x in log_lines if x.startswith(f"{name} ")] == [
            f"{name} {i}" for i in range(lines)
        ]
    child_ids = [i for r in results.values() for i in r]  # type: ignore[attr-defined]
    listed = store.list(kind="build", limit=100)
    assert sorted(r.id for r in listed) == sorted(child_ids)
    assert len(set(child_ids)) == 2 * runs


def test_two_processes_create_a_fresh_store_at_once(store_url: str) -> None:
    results = _run_children(workers.open_fresh, [(store_url, name) for name in ("p1", "p2")])
    assert all(isinstance(r, str) and RUN_ID.match(r) for r in results.values()), results
    store = open_run_store(store_url)
    try:
        assert schema_version(store) == MIGRATIONS[-1].version
        assert sorted(r.actor for r in store.list()) == ["p1", "p2"]
    finally:
        store.close()


# -- migrations --------------------------------------------------------------


def test_reopening_migrates_nothing_and_keeps_runs(store_url: str) -> None:
    first = open_run_store(store_url)
    run = first.start("apply", "dev", ["api"], "cli", "alice")
    first.append_log(run.id, "hello\n")
    first.close()
    for _ in range(3):
        again = open_run_store(store_url)
        try:
            assert schema_version(again) == len(MIGRATIONS)
            got = again.get(run.id)
            assert got is not None and got.log == "hello\n"
        finally:
            again.close()


def _extra_step(*statements: str) -> Migration:
    return Migration(
        version=len(MIGRATIONS) + 1,
        description="test step",
        sqlite=statements,
        postgres=statements,
    )


def test_a_newer_configcenter_applies_only_its_new_steps(store_url: str) -> None:
    old = open_run_store(store_url)
    run = old.start("apply", "dev", ["api"], "cli", "alice")
    old.close()
    newer = (*MIGRATIONS, _extra_step("CREATE TABLE run_notes (run_id TEXT, note TEXT)"))

    for _ in range(2):  # the second open finds the step done
        upgraded = open_with_migrations(store_url, newer)
        try:
            assert schema_version(upgraded) == len(newer)
            assert upgraded.get(run.id) is not None
        finally:
            upgraded.close()

    with pytest.raises(RunStoreError, match=r"schema version 2, newer.*upgrade configcenter"):
        open_with_migrations(store_url, MIGRATIONS)


def test_a_failing_step_leaves_the_schema_as_it_was(store_url: str) -> None:
    open_run_store(store_url).close()
    broken = (*MIGRATIONS, _extra_step("CREATE TABLE half_done (x INTEGER)", "NOT SQL AT ALL"))
    with pytest.raises(RunStoreError, match=r"(?i)migration 2 \(test step\) failed.*syntax"):
        open_with_migrations(store_url, broken)
    # The failed step's first statement was rolled back too: creating the table works.
    fixed = (*MIGRATIONS, _extra_step("CREATE TABLE half_done (x INTEGER)"))
    store = open_with_migrations(store_url, fixed)
    try:
        assert schema_version(store) == len(fixed)
    finally:
        store.close()


def test_migration_lists_must_count_up_from_one(store_url: str) -> None:
    with pytest.raises(RunStoreError, match=r"numbered 1, 2, 3.*got \[1, 3\]"):
        open_with_migrations(store_url, (*MIGRATIONS, Migration(3, "gap", (), ())))


# -- secrets ------------------------------------------------------------------


def test_secrets_never_reach_the_store(store_url: str, store: RunStore, redactor: Redactor) -> None:
    secret = "s3cr3t-DB-pa55"
    redactor.register(secret)
    redactor.register("abc")  # too short to mask

    run = store.start(
        "apply", "dev", ["api"], "cli", "alice", {"env": {"DB_PASSWORD": secret}, secret: 1}
    )
    store.append_log(run.id, f"DB_PASSWORD={secret} for abc\n")
    store.append_log(run.id, f'{{"password": "{secret}"}}\n')
    done = store.finish(run.id, "failed", {"error": f"auth failed with {secret}", "n": [secret]})

    assert secret not in repr(done)
    assert done.log == 'DB_PASSWORD=*** for abc\n{"password": "***"}\n'
    assert done.details == {
        "env": {"DB_PASSWORD": "***"},
        "***": 1,
        "error": "auth failed with ***",
        "n": ["***"],
    }
    held = raw_contents(store_url)
    assert "auth failed with" in held  # the raw dump does see stored text...
    assert secret not in held  # ...and the secret is not in it


def test_secrets_registered_later_are_masked_when_read(store: RunStore, redactor: Redactor) -> None:
    run = store.start("apply", "dev", ["api"], "cli", "alice")
    store.append_log(run.id, "token=late-registered-token\n")
    redactor.register("late-registered-token")
    got = store.get(run.id)
    assert got is not None and got.log == "token=***\n"
    listed = store.list(with_log=True)
    assert listed[0].log == "token=***\n"


def test_nul_characters_are_kept_out_the_same_way_everywhere(store: RunStore) -> None:
    run = store.start("build", "dev", ["api"], "cli", "alice", {"out": "a\x00b"})
    store.append_log(run.id, "binary\x00junk\n")
    done = store.finish(run.id, "failed", {"tail": ["\x00"]})
    assert done.log == "binary\ufffdjunk\n"
    assert done.details == {"out": "a\ufffdb", "tail": ["\ufffd"]}
    with pytest.raises(RunStoreError, match="control characters"):
        store.start("build", "dev\x00", ["api"], "cli", "alice")
