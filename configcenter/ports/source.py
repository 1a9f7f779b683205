"""The source checkout port: build contexts from a service's source repository.

A build pins `image.source.ref` to a commit and the context directory to its
content id (a Git tree id), then asks for that tree's files on disk.
`configcenter.wiring.open_source_checkouts` opens the one adapter
(`configcenter.adapters.source_checkout`: bare mirrors cached per URL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class SourceCheckoutError(Exception):
    """The source repository or ref cannot be used; the message says which and why."""


class PinnedSource(Protocol):
    """A ref pinned to a commit, with the content id of the build context in it."""

    @property
    def url(self) -> str: ...

    @property
    def ref(self) -> str: ...

    @property
    def commit(self) -> str:
        """The full commit id."""
        ...

    @property
    def subdir(self) -> str:
        """The context directory inside the repository ("" for the root)."""
        ...

    @property
    def tree(self) -> str:
        """The content id of that directory (a digest of its whole content)."""
        ...


class SourceCheckouts(Protocol):
    def fetch(self, url: str) -> None:
        """Bring what is kept of `url` up to date (clone it the first time)."""
        ...

    def resolve(self, url: str, ref: str, subdir: str = ".", *, fetch: bool = True) -> PinnedSource:
        """Pin `ref` (branch, tag or commit) and the context `subdir`; fetch first unless told
        not to. Raises SourceCheckoutError naming the repository and the fix."""
        ...

    def export(self, source: PinnedSource) -> Path:
        """The context directory's files on disk (shared: never write into it)."""
        ...
