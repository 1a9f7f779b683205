"""The forge port: merge requests against the config repo (GitLab, or local)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class MergeRequest:
    iid: int
    web_url: str
    source_branch: str
    target_branch: str
    title: str
    description: str
    draft: bool
    state: str  # "opened" | "merged" | "closed"
    labels: tuple[str, ...] = ()


class Forge(Protocol):
    def find_open(self, source_branch: str, target_branch: str) -> MergeRequest | None: ...

    def open(
        self,
        source_branch: str,
        target_branch: str,
        title: str,
        description: str,
        labels: Sequence[str],
        draft: bool,
    ) -> MergeRequest: ...

    def update(
        self, iid: int, title: str, description: str, labels: Sequence[str], draft: bool
    ) -> MergeRequest: ...
