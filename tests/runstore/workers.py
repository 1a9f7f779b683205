"""Code that runs in child processes for the multi-process tests (spawned, not forked)."""

from __future__ import annotations

from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

from configcenter.wiring import open_run_store


def append_and_start(
    url: str, run_id: str, name: str, lines: int, runs: int, go: Event, out: Queue[object]
) -> None:
    """Open the store when told, append numbered lines to a shared run, start runs of its own."""
    try:
        go.wait(60)
        store = open_run_store(url)
        try:
            own: list[str] = []
            for i in range(lines):
                store.append_log(run_id, f"{name} {i}\n")
                if i % (lines // runs) == 0 and len(own) < runs:
                    own.append(store.start("build", "dev", [name], "cli", name).id)
            out.put((name, own))
        finally:
            store.close()
    except Exception as exc:
        out.put((name, f"{type(exc).__name__}: {exc}"))


def open_fresh(url: str, name: str, go: Event, out: Queue[object]) -> None:
    """Open a store that may not exist yet, racing a sibling doing the same."""
    try:
        go.wait(60)
        store = open_run_store(url)
        try:
            run = store.start("apply", "dev", [name], "cli", name)
            out.put((name, run.id))
        finally:
            store.close()
    except Exception as exc:
        out.put((name, f"{type(exc).__name__}: {exc}"))
