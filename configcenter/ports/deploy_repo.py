"""The deploy repo port: byte-exact storage of rendered files in a second Git repo.

This layer only moves bytes at paths, makes commits, pushes them and reads
history. What the files mean (planning, the state records) belongs to the apply
use case on top of it, so the storage can be swapped or tested on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from configcenter.core.errors import TransientFailure, UserError

# A change set for ``DeployRepo.commit``: path -> new bytes, or None to delete.
# A key ending in "/" mapped to None deletes that whole directory (see
# ``delete_prefix``). Prefix deletions apply first, so deleting a directory and
# writing files into it in the same change set replaces its contents.
Changes = Mapping[str, bytes | None]


class DeployRepoError(Exception):
    """A deploy repo operation failed; the message says what and how to fix it."""


class DeployRepoMissing(DeployRepoError, UserError):
    """The deploy repo is a local path where nothing exists: a typo, or not created yet."""


class DeployRepoUnreachable(DeployRepoError, TransientFailure):
    """The remote could not be read or written (network, path, credentials)."""


class DeployRepoLockTimeout(DeployRepoError, TransientFailure):
    """Another live process held the cache lock for longer than we would wait."""


class InvalidDeployPath(DeployRepoError, ValueError):
    """A path given to the deploy repo is not a clean relative repository path."""


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author: str  # "Name <email>"
    date: datetime  # author date, timezone-aware
    subject: str
    body: str  # everything after the subject line, trailer block included
    trailers: tuple[tuple[str, str], ...] = field(default=())  # in order; keys may repeat

    def trailer(self, key: str) -> str | None:
        """The last value of trailer ``key`` (case-insensitive), as git resolves repeats."""
        found = [v for k, v in self.trailers if k.lower() == key.lower()]
        return found[-1] if found else None

    def trailer_values(self, key: str) -> list[str]:
        """Every value of trailer ``key`` (case-insensitive), in message order."""
        return [v for k, v in self.trailers if k.lower() == key.lower()]


def delete_prefix(prefix: str) -> dict[str, None]:
    """A change-set entry deleting everything under directory ``prefix``.

    Merge it into the changes passed to ``commit``: ``{**delete_prefix("dev/api"), ...}``.
    """
    cleaned = prefix.strip("/")
    if not cleaned:
        raise InvalidDeployPath(
            "delete_prefix needs a directory such as 'dev/api'; an empty prefix would "
            "delete the whole repository"
        )
    return {cleaned + "/": None}


def compose_message(subject: str, body: str = "", trailers: Iterable[tuple[str, str]] = ()) -> str:
    """A commit message whose trailers ``git interpret-trailers --parse`` will find.

    Trailers are only recognised in the last paragraph, so they get a blank line of
    their own; keys and values are checked so a bad one cannot break the block.
    """
    if not subject.strip() or "\n" in subject.strip():
        raise ValueError(f"commit subject must be one non-empty line, got {subject!r}")
    lines: list[str] = []
    for key, value in trailers:
        if not key or any(c.isspace() or c == ":" for c in key):
            raise ValueError(
                f"trailer key {key!r} must be a non-empty token without spaces or ':' "
                "(e.g. 'Configcenter-Env')"
            )
        if "\n" in value:
            raise ValueError(f"trailer {key} value must be one line, got {value!r}")
        lines.append(f"{key}: {value}")
    parts = [subject.strip()]
    if body.strip():
        parts.append(body.strip())
    if lines:
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


#: A state record as a cache keeps it: (path, blob id) -> (its summary, its bytes, whether
#: those bytes are exactly what configcenter writes for it).
CachedRecords = dict[tuple[str, str], tuple[tuple[object, ...], bytes, bool]]


class RecordCache(Protocol):
    """State records kept on disk by path and blob id (content-addressed: a blob id names
    its bytes), so a command reads and parses only the records it has not seen."""

    def load(self, name: str) -> CachedRecords:
        """The records kept under `name` ({} when none, or when they cannot be read)."""
        ...

    def save(self, name: str, records: CachedRecords) -> None:
        """Keep exactly `records` under `name` (best effort: a failed write costs a parse)."""
        ...


class DeployRepo(Protocol):
    """A Git deploy repo as seen through a local cache of one remote branch."""

    def sync(self) -> str | None:
        """Fetch the remote branch; its head sha, or None for an empty remote/branch."""
        ...

    def head(self) -> str | None:
        """The remote head as of the last ``sync`` or successful ``push``."""
        ...

    def read(self, path: str, rev: str | None = None) -> bytes | None:
        """A file's bytes at ``rev`` (default: the synced head); None when absent."""
        ...

    def read_many(self, paths: Sequence[str], rev: str | None = None) -> dict[str, bytes]:
        """Several files in one batch; absent paths are left out of the result."""
        ...

    def read_under(self, prefixes: Sequence[str], rev: str | None = None) -> dict[str, bytes]:
        """Every file at or under each of the directories or files ``prefixes``, in one batch."""
        ...

    def blob_ids(self, prefixes: Sequence[str], rev: str | None = None) -> dict[str, str]:
        """Path -> blob id of every file at or under ``prefixes`` (contents not read): what
        a cache of files by content looks them up by, before ``read_blobs`` of the rest."""
        ...

    def read_blobs(self, ids: Sequence[str]) -> dict[str, bytes]:
        """File contents by the blob ids ``log_changes`` returns, in one batch."""
        ...

    def log_changes(
        self,
        paths: Sequence[str],
        limit: int | None = 50,
        rev: str | None = None,
        under: Sequence[str] = (),
    ) -> list[tuple[CommitInfo, dict[str, str | None]]]:
        """Commits touching any of ``paths``, newest first, with the files each changed.

        Only files at or under ``under`` (all when empty) are listed, as path -> new
        blob id, or None where the commit deleted the file. One pass over the
        history, however many commits.
        """
        ...

    def list_files(self, prefix: str = "", rev: str | None = None) -> list[str]:
        """Sorted file paths under directory ``prefix`` ('' for all) at ``rev``."""
        ...

    def commit(
        self,
        changes: Changes,
        message: str,
        parent: str | None,
        author: str | None = None,
    ) -> str | None:
        """One commit on ``parent`` applying ``changes``; None when the tree is unchanged.

        ``author`` is "Name <email>"; the adapter's default identity when None.
        The commit is local until ``push``.
        """
        ...

    def push(self, sha: str) -> bool:
        """Move the remote branch to ``sha``; False when rejected as non-fast-forward."""
        ...

    def log(
        self,
        prefix: str | None = None,
        limit: int | None = 50,
        grep: str | None = None,
        rev: str | None = None,
    ) -> list[CommitInfo]:
        """Commits touching ``prefix`` (all when None), newest first.

        ``grep`` is a fixed string matched against the whole message, trailers included.
        """
        ...

    def lock(self, timeout: float = 60.0) -> AbstractContextManager[None]:
        """Exclusive use of the local cache across processes, for one apply."""
        ...
