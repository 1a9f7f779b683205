"""The forge port: merge requests against the config repo (GitLab, or local).

Promotions between environments are merge requests; the promote use case talks
to this port only, so a team without GitLab gets the same flow from the local
forge (a recorded request plus the `git merge` line to run).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class MergeRequest:
    """One merge request as the product sees it.

    `title` never carries the forge's draft marker (`Draft: `): that is
    `draft`, so comparing titles across updates is stable.
    """

    iid: int
    web_url: str
    source_branch: str
    target_branch: str
    title: str
    description: str
    draft: bool
    state: str  # "opened" | "merged" | "closed"
    labels: tuple[str, ...] = ()


class ForgeError(Exception):
    """A forge call failed; the message says what and how to fix it, never a secret."""


class ForgeAuthError(ForgeError):
    """The forge refused the credentials (bad, expired or under-scoped token)."""


class MergeRequestNotFound(ForgeError):
    """No merge request with that iid in the configured project."""


class Forge(Protocol):
    def find_open(self, source_branch: str, target_branch: str) -> MergeRequest | None:
        """The open merge request from `source_branch` into `target_branch`, if any."""
        ...

    def open(
        self,
        source_branch: str,
        target_branch: str,
        title: str,
        description: str,
        labels: Sequence[str],
        draft: bool,
    ) -> MergeRequest:
        """Open a merge request; if one is already open for the branches, update that one."""
        ...

    def update(
        self, iid: int, title: str, description: str, labels: Sequence[str], draft: bool
    ) -> MergeRequest:
        """Replace title, description, labels and draft state of merge request `iid`."""
        ...

    def get(self, iid: int) -> MergeRequest:
        """Merge request `iid` in any state; MergeRequestNotFound when there is none."""
        ...

    def add_note(self, iid: int, body: str) -> None:
        """Comment on merge request `iid` (plan summaries, apply outcomes)."""
        ...


@dataclass(frozen=True)
class ForgeContext:
    """What every forge may need besides its own settings block."""

    config_root: Path
    # (secret reference, setting name) -> value, registered for masking; raises
    # ForgeError naming the setting when the reference cannot be resolved.
    resolve_secret: Callable[[str, str], str]


class ForgeFactory(Protocol):
    """The one signature of every forge module's `open_forge`."""

    def __call__(self, settings: Mapping[str, Any], context: ForgeContext) -> Forge: ...
