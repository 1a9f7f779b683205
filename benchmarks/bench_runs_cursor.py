#!/usr/bin/env python3
"""Time serve's `/api/runs?before=CURSOR` paging on a run store of N runs (SQLite, PostgreSQL).

The store is filled through the run store's own API: N apply runs of one env, each with a
log of `--log-lines` lines (~80 bytes each), and the cursor's run with `--cursor-log-kb`
of log (a build streamed with --verbose). Then, `--rounds` times each, median wall:

* `check`: the cursor check alone, as the code under test does it (`has` when the run
  store has it, else `get`, the check before it);
* `page`: `serve.views.list_runs(store, env=..., before=cursor, limit=50)`, the whole
  answer's store work.

Run it once with the tree under test and once with PYTHONPATH pointing at another tree
(e.g. the commit before) to compare:

    .venv/bin/python benchmarks/bench_runs_cursor.py [--runs 10000] [--postgres]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from configcenter.ports.runstore import RunStore  # noqa: E402
from configcenter.serve import views  # noqa: E402
from configcenter.wiring import open_run_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--log-lines", type=int, default=40)
    parser.add_argument("--cursor-log-kb", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL too")
    args = parser.parse_args()
    import configcenter

    print(f"configcenter from {Path(configcenter.__file__).parent.parent}")
    with tempfile.TemporaryDirectory(prefix="cc-bench-cursor-") as tmp:
        bench("sqlite", f"sqlite://{Path(tmp) / 'runs.sqlite3'}", args)
    if args.postgres:
        with postgres_url() as url:
            bench("postgres", url, args)


def bench(label: str, url: str, args: argparse.Namespace) -> None:
    store = open_run_store(url, None)
    try:
        started = time.perf_counter()
        cursor = fill(store, args)
        filled = time.perf_counter() - started
        check = timed(lambda: cursor_check(store, cursor), args.rounds)
        page = timed(
            lambda: views.list_runs(store, env="dev", before=cursor, limit=50), args.rounds
        )
        shown = views.list_runs(store, env="dev", before=cursor, limit=50)
        assert len(shown.runs) == 50, len(shown.runs)
        how = "has" if hasattr(store, "has") else "get"
        print(
            f"{label}: {args.runs} runs (filled in {filled:.1f}s), cursor log "
            f"{args.cursor_log_kb} KiB: check ({how}) {check * 1000:.3f} ms, "
            f"page of 50 {page * 1000:.3f} ms (median of {args.rounds})"
        )
    finally:
        store.close()


def fill(store: RunStore, args: argparse.Namespace) -> str:
    """N finished runs; returns the id of the one in the middle, with the big log."""
    line = "step: rolling out api-0042 (release r20261202T000000) ... ok".ljust(79) + "\n"
    middle = args.runs // 2
    cursor = ""
    for n in range(args.runs):
        run = store.start("apply", "dev", ["api"], "cli", "bench")
        if n == middle:
            cursor = run.id
            store.append_log(run.id, line * (args.cursor_log_kb * 1024 // len(line)))
        else:
            store.append_log(run.id, line * args.log_lines)
        store.finish(run.id, "succeeded", {})
    return cursor


def cursor_check(store: RunStore, cursor: str) -> bool:
    has = getattr(store, "has", None)
    if has is not None:
        return bool(has(cursor))
    return store.get(cursor) is not None


def timed(call: Callable[[], object], rounds: int) -> float:
    call()  # warm
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@contextmanager
def postgres_url() -> Iterator[str]:
    import psycopg

    from tests.support.postgres_fixtures import postgres_server

    server_gen = postgres_server.__wrapped__()
    server = next(server_gen)
    try:
        with psycopg.connect(server.url(), autocommit=True) as admin:
            admin.execute('CREATE DATABASE "bench"')
        yield server.url("bench")
    finally:
        next(server_gen, None)


if __name__ == "__main__":
    main()
