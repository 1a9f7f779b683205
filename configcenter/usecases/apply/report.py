"""What apply, deploy and rollback are asked to do, and what they say and return.

`Reporter` is the progress callbacks (the CLI prints them, serve stores them);
`RunLog` sends every message, redacted, to the reporter and the run's log.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Collection
from dataclasses import dataclass, field

from configcenter.core.errors import PlatformFailure, TransientFailure, UserError
from configcenter.core.plan import (
    Plan,
)
from configcenter.ports.platform import RolloutStatus
from configcenter.usecases.workspace import Workspace


class ApplyError(Exception):
    """apply could not finish; the deploy repo is before or after a whole commit.

    Raised as one of the typed kinds below, so callers (the CLI, serve's jobs and
    actions) treat it as the user error, transient or platform failure it is.
    """


class ApplyRefused(ApplyError, UserError):
    """apply, deploy or rollback will not start as asked: the message says what to fix
    (a service or release name, uncommitted or stale config, a build first)."""


class ApplyUnreachable(ApplyError, TransientFailure):
    """A platform or the deploy repo did not answer, or kept moving; nothing was lost,
    running the command again may succeed."""


class ApplyFailed(ApplyError, PlatformFailure):
    """A step was carried out and failed on the platform, or a deploy repo record it
    needs is not there (a rollback that did not become healthy); trying again will not
    help as it is."""


class Reporter:
    """Progress callbacks; the CLI prints them, serve stores them. Defaults do nothing."""

    def message(self, text: str) -> None:
        """A line for humans (also stored in the run's log)."""

    def plan_ready(self, plan: Plan) -> None:
        """The plan apply is about to carry out."""

    def build_log(self, service: str, line: str) -> None:
        """One line of a build's output."""

    def rollout(self, service: str, status: RolloutStatus) -> None:
        """A rollout's progress changed."""


@dataclass
class ServiceResult:
    service: str
    action: str
    outcome: str  # committed | healthy | failed | rolled_back | skipped | blocked | noop
    release: str | None = None
    reason: str = ""


@dataclass
class ApplyResult:
    env: str
    run_id: str | None
    plan: Plan
    commit: str | None = None  # the commit of the new releases
    results: list[ServiceResult] = field(default_factory=list)
    dry_run: bool = False
    #: The commit that rolled a failed release back (restored its last good files), after
    #: `commit` (or in the catch-up, when this apply committed nothing new).
    rollback_commit: str | None = None

    @property
    def exit_code(self) -> int:
        outcomes = {r.outcome for r in self.results}
        if "rolled_back" in outcomes:
            return 3
        if "failed" in outcomes:
            return 1
        return 0

    @property
    def outcome(self) -> str:
        code = self.exit_code
        if code == 3:
            return "rolled_back"
        if code == 1:
            return "failed"
        return "succeeded" if self.commit or self.results else "noop"


@dataclass
class ApplyOptions:
    services: Collection[str] | None = None
    retry: Collection[str] = ()
    build: bool = True
    rollout: bool = True
    dry_run: bool = False
    trigger: str = "cli"
    actor: str = ""
    jobs: int = 2
    force: bool = False
    #: Apply a config commit older than, or diverged from, the one last applied (recorded).
    override: bool = False
    skip_verify: bool = False  # emergencies: no verification after rollout (recorded)


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class RunLog:
    """Every message goes to the reporter and, redacted, to the run's log."""

    def __init__(self, ws: Workspace, run_id: str | None, reporter: Reporter) -> None:
        self.ws = ws
        self.run_id = run_id
        self.reporter = reporter

    def __call__(self, text: str) -> None:
        text = self.ws.redactor.redact(text)
        self.reporter.message(text)
        self._store(text + "\n")

    def build_line(self, service: str, line: str) -> None:
        line = self.ws.redactor.redact(line)
        self.reporter.build_log(service, line)
        self._store(f"[build {service}] {line}\n")

    def _store(self, text: str) -> None:
        """Append to the run's log; a run store that fails (locked, gone) never stops a
        rollout between its outcome and the record of it: it is said once, then skipped."""
        if self.run_id is None:
            return
        try:
            self.ws.run_store.append_log(self.run_id, text)
        except Exception as exc:
            run_id, self.run_id = self.run_id, None
            self.reporter.message(
                self.ws.redactor.redact(
                    f"run store: cannot log run {run_id} ({type(exc).__name__}: {exc}); "
                    "going on without its log"
                )
            )
