"""The run store port: every apply, build, rollout, rollback, promotion, reconcile."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

RunKind = Literal["apply", "build", "deploy", "rollback", "promote", "reconcile"]
RunOutcome = Literal["running", "succeeded", "failed", "rolled_back", "noop"]


@dataclass
class Run:
    id: str
    kind: str
    env: str
    services: list[str]
    trigger: str  # "cli", "webhook:gitlab", "schedule", ...
    actor: str
    started_at: datetime
    ended_at: datetime | None = None
    outcome: str = "running"
    log: str = ""
    details: dict[str, object] = field(default_factory=dict)


class RunStore(Protocol):
    def start(
        self, kind: str, env: str, services: Sequence[str], trigger: str, actor: str
    ) -> Run: ...

    def append_log(self, run_id: str, text: str) -> None: ...

    def finish(
        self, run_id: str, outcome: str, details: dict[str, object] | None = None
    ) -> Run: ...

    def get(self, run_id: str) -> Run | None: ...

    def list(
        self, env: str | None = None, kind: str | None = None, limit: int = 50
    ) -> list[Run]: ...
