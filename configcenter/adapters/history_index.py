"""Which files each deploy repo commit changed under some directories, kept on disk by
commit id (`GitDeployRepo.log_changes`).

Without it, the history of one state record asks git to compare every commit's trees
with its parent's: with 5,000 records in one directory that is ~0.6 s of git for 1,000
commits, at every `history` command. With it, git compares each commit once, ever.

A commit id names the commit's tree and its parents' ids, so what a commit changed is a
function of its id: an entry can never be stale. A file holds one scope (the
directories whose changes it lists) and its "tips": commits whose every ancestor is in
the file, so only commits past them are asked of git, and no more at once than a walk
needs (a short history of a long branch leaves the file without tips). A rewritten
(force-pushed) history brings new ids, which are read and added; commits that left the branch are
never reached from its head again. A walk that meets a merge commit returns None and
git answers instead (this file does not repeat git's history simplification). The file
is an optimisation: one that cannot be read is ignored, one that cannot be written is
skipped, and nothing is ever half-written (`cache_files.write_atomic`). Two commands
saving one file at once both keep their commits (`cache_files.save_merged`: the second
reads the first's file again and merges it in). A file written by other code (the bytes
of the modules that ask git and read its answer) is not used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from configcenter.adapters.cache_files import Data, Stamp, save_merged, stamp

_log = logging.getLogger("configcenter")
_FORMAT = 1
#: Tips kept per file: a branch has one; more come only from force-pushes.
MAX_TIPS = 8
_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

#: path -> new blob id, or None where the commit deleted the file
Changes = dict[str, str | None]
#: commit id -> (its parent ids, the files it changed in the scope)
Found = dict[str, tuple[list[str], Changes]]


def within(path: str, prefixes: Iterable[str]) -> bool:
    """``path`` is one of ``prefixes`` or inside one of them (as git's literal pathspecs)."""
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def _object_id(value: object) -> str:
    """A commit or blob id as git printed it; anything else garbles the file."""
    if isinstance(value, str) and _OBJECT_ID.fullmatch(value):
        return value
    raise ValueError(f"{value!r} is not an object id")


class ChangeIndex:
    """The changes of many commits in one scope; `load`, `add`, `walk`, `save`."""

    def __init__(self, directory: Path, scope: Sequence[str], code: str) -> None:
        self.scope = sorted(set(scope))
        self.code = code  # what reads the commits' changes from git: another is not trusted
        digest = hashlib.sha256(json.dumps(self.scope).encode()).hexdigest()[:32]
        self.path = directory / f"{digest}.json"
        self.tips: list[str] = []
        self.commits: dict[str, tuple[list[str], Changes]] = {}
        self._read: Stamp | None = None  # the version of the file loaded

    def load(self) -> ChangeIndex:
        self._read = stamp(self.path)  # before reading: never a later version's
        found = self._parse()
        if found is not None:
            self.tips, self.commits = found
        return self

    def _parse(self) -> tuple[list[str], dict[str, tuple[list[str], Changes]]] | None:
        """The tips and commits in the file now (None: missing, garbled or not ours)."""
        try:
            data = json.loads(self.path.read_bytes())
            if (
                not isinstance(data, dict)
                or data.get("format") != _FORMAT
                or data.get("scope") != self.scope
                or data.get("code") != self.code
            ):
                return None
            tips = [_object_id(t) for t in data["tips"]]
            commits = {
                _object_id(sha): (
                    [_object_id(p) for p in parents],
                    {str(f): None if b is None else _object_id(b) for f, b in changes},
                )
                for sha, (parents, changes) in data["commits"].items()
            }
        except FileNotFoundError:
            return None
        except Exception as exc:  # a garbled or foreign file is no entry, never a failure
            _log.debug("history index %s not used: %s", self.path, exc)
            return None
        return (tips, commits) if all(t in commits for t in tips) else None

    def add(self, start: str, found: Found, complete: bool) -> None:
        """Commits git listed from ``start`` (each with its parents). ``complete``: git
        listed all of them down to the tips, so ``start`` is a tip now."""
        self.commits.update(found)
        if complete and start in self.commits:
            self._tip(start)

    def close(self, start: str) -> None:
        """``start`` becomes a tip when the walk from it reaches the root or a tip through
        commits the file holds (no merge on the way)."""
        sha: str | None = start
        tips = set(self.tips)
        while sha is not None and sha not in tips:
            entry = self.commits.get(sha)
            if entry is None or len(entry[0]) > 1:
                return
            sha = entry[0][0] if entry[0] else None
        self._tip(start)

    def _tip(self, start: str) -> None:
        """``start`` first among the tips; tips it reaches through the file are dropped."""
        reached = self._reached(start)
        self.tips = [start, *(t for t in self.tips if t not in reached)][:MAX_TIPS]

    def _reached(self, start: str) -> set[str]:
        """``start`` and every commit the file holds that it reaches through the file."""
        reached: set[str] = set()
        todo = [start]
        while todo:
            sha = todo.pop()
            if sha in reached or sha not in self.commits:
                continue
            reached.add(sha)
            todo.extend(self.commits[sha][0])
        return reached

    def walk(
        self, start: str, paths: Sequence[str], limit: int | None
    ) -> tuple[Found, str | None] | None:
        """What ``git log --raw --max-count=limit start -- paths`` lists of the scope, newest
        first, and the first commit on the way the file lacks (None: the walk is done);
        None where it meets a merge (git answers then)."""
        shown: Found = {}
        sha: str | None = start
        while sha is not None and (limit is None or len(shown) < limit):
            entry = self.commits.get(sha)
            if entry is None:
                return shown, sha
            parents, changes = entry
            if len(parents) > 1:
                return None
            hit = {f: b for f, b in changes.items() if within(f, paths)}
            if hit:
                shown[sha] = (parents, hit)
            sha = parents[0] if parents else None
        return shown, None

    def save(self) -> None:
        """Write the file, with the commits and tips another command saved since this one
        loaded it (never fails a command)."""
        try:
            self._read = save_merged(self.path, self._read, self._data, prefix=".history-")
        except OSError as exc:
            _log.debug("history index %s not written: %s", self.path, exc)

    def _data(self, changed: bool) -> Data:
        """What `save` writes (`changed`: the file is another writer's since it was read)."""
        found = self._parse() if changed else None
        if found is not None:
            tips, commits = found
            self.commits = {**commits, **self.commits}
            for tip in tips:  # theirs after ours, but none another tip reaches
                if not any(tip in self._reached(t) for t in self.tips):
                    reached = self._reached(tip)
                    self.tips = [*(t for t in self.tips if t not in reached), tip][:MAX_TIPS]
        data = {
            "format": _FORMAT,
            "scope": self.scope,
            "code": self.code,
            "tips": self.tips,
            "commits": {sha: [p, list(c.items())] for sha, (p, c) in self.commits.items()},
        }
        return json.dumps(data, separators=(",", ":")).encode()
