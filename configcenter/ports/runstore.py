"""The run store port: every apply, build, rollout, rollback, promotion, reconcile.

A *run* is one execution of a use case, recorded so `history` and `serve` can
say who did what, when, and how it ended. Releases live in the deploy repo;
this store only keeps runs. Stores never hold a resolved secret: adapters pass
log text and details through the `Redactor` they were given.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol, get_args

RunKind = Literal["apply", "build", "deploy", "rollback", "promote", "reconcile"]
RunOutcome = Literal["running", "succeeded", "failed", "rolled_back", "noop"]

RUN_KINDS: tuple[str, ...] = get_args(RunKind)
RUN_OUTCOMES: tuple[str, ...] = get_args(RunOutcome)
#: Outcomes `finish` accepts: every outcome except "running".
FINAL_OUTCOMES: tuple[str, ...] = tuple(o for o in RUN_OUTCOMES if o != "running")
#: Largest page `list` returns; callers page further with `before`.
MAX_LIST_LIMIT = 1000


@dataclass
class Run:
    id: str
    kind: str
    env: str
    services: list[str]
    trigger: str  # "cli", "webhook:gitlab", "schedule", ...
    actor: str
    started_at: datetime  # timezone-aware, UTC
    ended_at: datetime | None = None
    outcome: str = "running"
    log: str = ""  # "" in `list` results unless asked for with with_log=True
    details: dict[str, object] = field(default_factory=dict)


class RunStoreError(Exception):
    """A run store could not do what was asked (bad input, bad URL, schema, I/O)."""


class RunNotFoundError(RunStoreError, LookupError):
    """The run id names no run in this store."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"no run with id {run_id!r} in the run store: check the id "
            "(`configcenter history` lists runs) and that the same run store URL is used"
        )
        self.run_id = run_id


class RunStore(Protocol):
    def start(
        self,
        kind: str,
        env: str,
        services: Sequence[str],
        trigger: str,
        actor: str,
        details: dict[str, object] | None = None,
    ) -> Run:
        """Record a new run in state "running" and return it with its new id."""
        ...

    def append_log(self, run_id: str, text: str) -> None:
        """Add text to a run's log; pass whole lines so redaction sees whole secrets."""
        ...

    def finish(self, run_id: str, outcome: str, details: dict[str, object] | None = None) -> Run:
        """End a running run; `details` are merged into the ones it has."""
        ...

    def get(self, run_id: str) -> Run | None: ...

    def has(self, run_id: str) -> bool:
        """Whether a run with this id is stored: one look at the runs' primary key (no log,
        no services read), for checking a paging cursor."""
        ...

    def list(
        self,
        env: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        service: str | None = None,
        before: str | None = None,
        with_log: bool = False,
    ) -> list[Run]:
        """Runs newest first, filtered; `before` (a run id) pages to older runs."""
        ...

    def close(self) -> None: ...


_id_lock = threading.Lock()
_last_id_time = datetime.min.replace(tzinfo=UTC)


def new_run_id(now: datetime | None = None) -> tuple[str, datetime]:
    """A sortable id unique across processes and machines, and its start time.

    `r` + UTC time to the microsecond + 40 random bits. Within a process the
    time never goes backwards, so ids started later sort later even when the
    clock stalls or steps back; across machines order is as good as their clocks.
    """
    global _last_id_time
    with _id_lock:
        t = (now or datetime.now(UTC)).astimezone(UTC)
        if t <= _last_id_time:
            t = _last_id_time + timedelta(microseconds=1)
        _last_id_time = t
    return f"r{t:%Y%m%dT%H%M%S%f}Z{secrets.token_hex(5)}", t


def check_kind(kind: str) -> str:
    if kind not in RUN_KINDS:
        raise RunStoreError(f"unknown run kind {kind!r}: use one of {', '.join(RUN_KINDS)}")
    return kind


def check_outcome(outcome: str) -> str:
    if outcome not in FINAL_OUTCOMES:
        raise RunStoreError(
            f"cannot finish a run with outcome {outcome!r}: use one of {', '.join(FINAL_OUTCOMES)}"
        )
    return outcome


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise RunStoreError(
            f"list limit {limit} is out of range: use 1..{MAX_LIST_LIMIT} and page with `before`"
        )
    return limit


def check_start(env: str, services: Sequence[str], trigger: str, actor: str) -> list[str]:
    """Refuse runs that could not be found again (empty env) or that name services oddly."""
    if not env or not env.strip():
        raise RunStoreError("a run needs an environment name: pass env, e.g. 'dev'")
    if isinstance(services, str):
        raise RunStoreError(
            f"services must be a list of service names, not the string {services!r}: "
            f"pass [{services!r}]"
        )
    if not env.isprintable():
        raise RunStoreError(f"environment name {env!r} has control characters: fix the name")
    names = list(services)
    for name in names:
        if not isinstance(name, str) or not name or not name.isprintable():
            raise RunStoreError(f"service names must be non-empty printable strings, got {name!r}")
    if len(set(names)) != len(names):
        raise RunStoreError(f"services list names a service twice: {names}; list each once")
    if not trigger:
        raise RunStoreError("a run needs a trigger: pass e.g. 'cli', 'webhook:gitlab', 'schedule'")
    if not actor:
        raise RunStoreError("a run needs an actor: pass the user or system that started it")
    return names


def finish_abandoned(
    store: RunStore, runs: Iterable[Run], why_failed: Callable[[Run], str | None]
) -> list[str]:
    """Finish as failed each `running` run for which `why_failed` gives a reason.

    Several processes (or serve replicas) may close the same run at once: a run another
    one finished first is skipped. Returns the ids this call finished.
    """
    finished = []
    for run in runs:
        if run.outcome != "running":
            continue
        reason = why_failed(run)
        if reason is None:
            continue
        try:
            store.finish(run.id, "failed", {"error": reason})
        except RunStoreError:
            continue
        finished.append(run.id)
    return finished
