"""HEAD and the tags of a Git checkout read from its files, as git reads them, without
starting git: every command that loads the config asks both, and two `git` processes
are a tenth of a no-op plan at 5,000 services.

Only the plain "files" ref storage of a checkout's own `.git` directory is read
(gitrepository-layout(5)): `HEAD`, loose refs under `refs/`, and `packed-refs` written
"fully-peeled" (every annotated tag's target on the `^` line after it). Anything else
(a linked worktree's `.git` file, reftable, a symbolic ref other than HEAD, a loose tag
whose object type only the object database knows, a line this reader does not expect)
answers None, and the caller asks git itself. A loose ref is read before `packed-refs`,
as git does, so a ref updated after packing is seen.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def _read(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError, ValueError):
        raise _Unsure from None


class _Unsure(Exception):
    """The files hold something this reader does not read: ask git."""


def _git_dir(root: Path) -> Path:
    git_dir = root / ".git"
    if git_dir.is_symlink() or not git_dir.is_dir():
        raise _Unsure  # a linked worktree or submodule (a `gitdir:` file), or no repo
    if (git_dir / "reftable").exists() or (git_dir / "commondir").exists():
        raise _Unsure
    return git_dir


def _packed(git_dir: Path) -> dict[str, tuple[str, str | None]]:
    """refname -> (object, peeled target or None) from `packed-refs`."""
    text = _read(git_dir / "packed-refs")
    if text is None:
        return {}
    lines = text.splitlines()
    if lines and lines[0].startswith("#"):
        traits = lines[0].removeprefix("# pack-refs with:").split()
        if "fully-peeled" not in traits:
            raise _Unsure  # a tag without a `^` line might still be annotated
        lines = lines[1:]
    elif lines:
        raise _Unsure  # no header: written by something that does not peel
    refs: dict[str, tuple[str, str | None]] = {}
    last: str | None = None
    for line in lines:
        if line.startswith("^"):
            peeled = line[1:]
            if last is None or not _SHA.fullmatch(peeled):
                raise _Unsure
            refs[last] = (refs[last][0], peeled)
            last = None
            continue
        sha, _, name = line.partition(" ")
        if not _SHA.fullmatch(sha) or not name.startswith("refs/"):
            raise _Unsure
        refs[name] = (sha, None)
        last = name
    return refs


def _loose_files(directory: Path) -> bool:
    """Whether any file (a loose ref) is below `directory`."""
    return any(files for _path, _dirs, files in os.walk(directory, onerror=_raise))


def _raise(error: OSError) -> None:
    if not isinstance(error, FileNotFoundError):
        raise _Unsure from None


def read_head(root: Path) -> tuple[bool, str | None]:
    """(True, HEAD's commit id) read from the files, the id None when HEAD names a branch
    with no commit yet (as `rev-parse --verify -q HEAD` answers); (False, None) when git
    must be asked."""
    ask_git = (False, None)
    try:
        git_dir = _git_dir(root)
        if (git_dir / "HEAD").is_symlink():
            return ask_git
        head = _read(git_dir / "HEAD")
        if head is None:
            return ask_git
        head = head.strip()
        if _SHA.fullmatch(head):
            return True, head  # detached
        if not head.startswith("ref: refs/"):
            return ask_git
        name = head.removeprefix("ref: ")
        loose = _read(git_dir / name)
        if loose is not None:
            loose = loose.strip()
            return (True, loose) if _SHA.fullmatch(loose) else ask_git  # a symref chain
        found = _packed(git_dir).get(name)
        return True, found[0] if found is not None else None
    except _Unsure:
        return ask_git


def read_tags(root: Path) -> dict[str, str] | None:
    """Tag name -> the commit (or object) it names, peeled as `for-each-ref`'s
    `%(*objectname)` peels; None when git must be asked (a loose tag ref, say)."""
    try:
        git_dir = _git_dir(root)
        if _loose_files(git_dir / "refs" / "tags"):
            return None  # its object may be an annotated tag: only git can peel it
        prefix = "refs/tags/"
        return {
            name.removeprefix(prefix): peeled or sha
            for name, (sha, peeled) in sorted(_packed(git_dir).items())
            if name.startswith(prefix)
        }
    except _Unsure:
        return None
