"""The registry port: just enough of the OCI distribution API to skip known builds."""

from __future__ import annotations

from typing import Protocol


class Registry(Protocol):
    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """Digest of repository:tag, or None when the tag does not exist."""
        ...
