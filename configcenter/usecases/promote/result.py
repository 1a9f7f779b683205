"""What a promotion did: the pins it carried, what it skipped, its merge request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from configcenter.core.promotion import Pin, Skipped
from configcenter.ports.forge import MergeRequest

Status = Literal["nothing", "dry-run", "opened", "updated", "unchanged"]


@dataclass
class PromotionResult:
    source: str
    target: str
    status: Status
    branch: str
    target_branch: str
    title: str = ""
    description: str = ""
    labels: list[str] = field(default_factory=list)
    draft: bool = False
    pins: list[Pin] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)  # service -> ENV keys
    commit: str | None = None
    rebuilt: bool = False  # the branch was rebuilt from the default branch (conflict)
    forge_kind: str = "local"
    merge_request: MergeRequest | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        mr = self.merge_request
        return {
            "from": self.source,
            "to": self.target,
            "status": self.status,
            "branch": self.branch,
            "target_branch": self.target_branch,
            "title": self.title,
            "labels": self.labels,
            "draft": self.draft,
            "commit": self.commit,
            "rebuilt": self.rebuilt,
            "services": {p.service: p.to_json() for p in self.pins},
            "downgrades": {
                p.service: [d.to_json() for d in p.downgrades] for p in self.pins if p.downgrades
            },
            "skipped": {s.service: s.reason for s in self.skipped},
            "missing_env_keys": self.missing,
            "merge_request": None
            if mr is None
            else {"iid": mr.iid, "url": mr.web_url, "state": mr.state, "draft": mr.draft},
            "message": self.message,
            "description": self.description,
        }
