"""/metrics series read from the run store: every recorded run (CLI ones too), and drift.

serve's own `configcenter_runs_total` counts the runs this process ran; runs started
from the command line, by another replica or before a restart are only in the run
store. `RecordedRuns` counts those from the store, reading only what is new at each
scrape. `configcenter_drift` comes from each environment's last reconcile run, so an
environment whose reconcile failed (or never ran) has a sample saying so instead of none.
"""

from __future__ import annotations

import math
import threading

from configcenter.ports.runstore import Run, RunStore
from configcenter.serve import status
from configcenter.serve.metrics import Metrics
from configcenter.usecases.workspace import Workspace

RECORDED = "configcenter_recorded_runs_total"
DRIFT = "configcenter_drift"


class RecordedRuns:
    """Finished runs in the store by (kind, outcome, trigger), kept up to date by `update`.

    A scrape reads the newest runs page by page until a page holds only runs it has
    already seen, then asks again about runs that were still running. Run ids sort by
    start time, so only the newest `KEEP` ids need remembering; a run recorded later
    with an id older than those would not be counted.
    """

    PAGE = 200
    KEEP = 5000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str, str], int] = {}
        self._seen: dict[str, bool] = {}  # run id -> counted (False: was running)

    def update(self, store: RunStore) -> dict[tuple[str, str, str], int]:
        with self._lock:
            known = set(self._seen)
            scanned: set[str] = set()
            cursor: str | None = None
            while True:
                batch = store.list(limit=self.PAGE, before=cursor)
                for run in batch:
                    scanned.add(run.id)
                    self._look_at(run)
                if len(batch) < self.PAGE or all(r.id in known for r in batch):
                    break
                cursor = batch[-1].id
            for run_id in [i for i, counted in self._seen.items() if not counted]:
                if run_id in scanned:
                    continue
                found = store.get(run_id)
                if found is None:
                    del self._seen[run_id]
                else:
                    self._look_at(found)
            self._prune()
            return dict(self.counts)

    def _look_at(self, run: Run) -> None:
        if self._seen.get(run.id):
            return
        if run.outcome == "running":
            self._seen[run.id] = False
            return
        key = (run.kind, run.outcome, run.trigger)
        self.counts[key] = self.counts.get(key, 0) + 1
        self._seen[run.id] = True

    def _prune(self) -> None:
        if len(self._seen) <= self.KEEP:
            return
        newest = sorted(self._seen, reverse=True)[: self.KEEP]
        floor = newest[-1]
        self._seen = {i: c for i, c in self._seen.items() if i >= floor or not c}

    def collect(self, store: RunStore, m: Metrics) -> None:
        for (kind, outcome, trigger), count in self.update(store).items():
            m.set_total(RECORDED, float(count), kind=kind, outcome=outcome, trigger=trigger)


def collect_drift(ws: Workspace, m: Metrics) -> None:
    """configcenter_drift{env, state}: the drift entries the last reconcile of each env found
    (state known, or none at 0), or NaN with state unknown when it failed or never ran."""
    m.clear(DRIFT)
    for env in ws.config.project.environments:
        reconciled = status.last_reconcile(ws, env)
        found = reconciled.details.get("services") if reconciled is not None else None
        if reconciled is None or not isinstance(found, dict):
            m.set(DRIFT, math.nan, env=env, state="unknown")
            continue
        count = reconciled.details.get("drift_count")
        if not isinstance(count, int):
            entries = [e for e in found.values() if isinstance(e, dict)]
            count = sum(len(e.get("drifts") or []) for e in entries)
        m.set(DRIFT, float(count), env=env, state="known" if count else "none")
