"""`render --out DIR`: the rendered files as DIR/<service>/<file>, and nothing else.

DIR is new, empty, or one an earlier `render --out` wrote: its marker file (RENDER_MARKER)
says so, and keeps a manifest of what that render left there (every folder and file,
with each file's content digest, size, mode, times and inode). When everything in DIR
is still exactly what the manifest recorded, a render again leaves the files whose
content is the same in place and writes, removes or adds only the others (a warm
render of 500 services then writes almost nothing). Anything else (a file edited,
added, removed, replaced by a link, its mode changed; a manifest that cannot be read)
and DIR is emptied and written again in full. Either way DIR ends with the same
folders and files, byte for byte, as a render into a new directory.

Links are never followed: a link anywhere in DIR is something unexpected (everything
is removed, the link itself, never what it points to), and every file is created
exclusively without following links (O_EXCL | O_NOFOLLOW).

A file changed within the same timestamp tick as the marker was written would keep the
size and times the manifest recorded ("racy", as git calls it): such files are
compared by content.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from configcenter.core.errors import UserError
from configcenter.core.render import Rendered

RENDER_MARKER = ".configcenter-render"
_MARKER_TEXT = (
    "written by configcenter render --out; the next render --out here replaces everything\n"
)
_MANIFEST_VERSION = 1
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class _File:
    digest: str
    size: int
    mode: int
    mtime_ns: int
    ctime_ns: int
    ino: int

    def row(self) -> list[str | int]:
        return [self.digest, self.size, self.mode, self.mtime_ns, self.ctime_ns, self.ino]


@dataclass
class _Manifest:
    """What a render left in DIR: files and folders by path relative to DIR ('a/b')."""

    umask: int  # the process's, when they were made: it decides their modes
    files: dict[str, _File] = field(default_factory=dict)
    dirs: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (mode, inode)

    def text(self) -> str:
        rows = {
            "version": _MANIFEST_VERSION,
            "umask": self.umask,
            "files": {rel: f.row() for rel, f in sorted(self.files.items())},
            "dirs": {rel: list(d) for rel, d in sorted(self.dirs.items())},
        }
        return _MARKER_TEXT + json.dumps(rows, separators=(",", ":")) + "\n"


def write_rendered(rendered: list[Rendered], out: Path) -> list[str]:
    """Write DIR/<service>/<file> (see the module's doc); the paths of every rendered file."""
    if out.is_symlink():
        raise UserError(f"{out} is a symbolic link; render --out writes only into a real directory")
    wanted = {
        f"{item.service}/{name}": data for item in rendered for name, data in item.files.items()
    }
    base = str(out)
    paths = [os.path.join(base, rel) for rel in wanted]  # outputs are clean relative paths
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{out} exists and is not a directory")
        kept = _as_recorded(out)
        if kept is not None:
            _update(out, kept, wanted)
            return paths
        entries = list(out.iterdir())
        if entries and not (out / RENDER_MARKER).is_file():
            raise UserError(
                f"{out} is not empty and was not written by render --out; "
                "pass a new or empty directory (nothing was written)"
            )
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    # The marker first: a render stopped half-way leaves a directory the next one may empty.
    _write_marker(out, _MARKER_TEXT)
    manifest = _Manifest(_umask())
    _mkdirs(out, _folders(wanted), manifest)
    for rel, data in wanted.items():
        manifest.files[rel] = _create(out / rel, data)
    _write_marker(out, manifest.text())
    return paths


def _folders(files: dict[str, bytes]) -> set[str]:
    folders: set[str] = set()
    for rel in files:
        parent = rel.rpartition("/")[0]
        while parent and parent not in folders:
            folders.add(parent)
            parent = parent.rpartition("/")[0]
    return folders


def _umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _create(path: Path, data: bytes) -> _File:
    fd = os.open(path, _NEW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        st = os.fstat(fd)
    return _File(_digest(data), st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _mkdirs(out: Path, folders: set[str], manifest: _Manifest) -> None:
    for rel in sorted(folders, key=lambda r: r.count("/")):  # parents before children
        path = out / rel
        path.mkdir()
        st = os.lstat(path)
        manifest.dirs[rel] = (st.st_mode, st.st_ino)


def _write_marker(out: Path, text: str) -> None:
    """Replace the marker whole (a rename never follows a link at its target)."""
    tmp = out / f"{RENDER_MARKER}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, _NEW, 0o666)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, out / RENDER_MARKER)


def _read_manifest(out: Path) -> tuple[_Manifest, int] | None:
    """The marker's manifest and the marker's own modification time; None without one."""
    try:
        fd = os.open(out / RENDER_MARKER, _READ)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        body = handle.read().partition(b"\n")[2]
    try:
        rows = json.loads(body)
        if rows.get("version") != _MANIFEST_VERSION:
            return None
        files = {rel: _File(*row) for rel, row in rows["files"].items()}
        dirs = {rel: (int(d[0]), int(d[1])) for rel, d in rows["dirs"].items()}
        manifest = _Manifest(int(rows["umask"]), files, dirs)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return manifest, st.st_mtime_ns


def _walk(out: Path) -> list[tuple[str, os.stat_result | None]]:
    """Every entry under `out` with its lstat, never following links (a link, or anything
    but a folder or a regular file, comes with None)."""
    found: list[tuple[str, os.stat_result | None]] = []
    folders = [""]
    base = str(out)
    while folders:
        rel = folders.pop()
        with os.scandir(os.path.join(base, rel) if rel else base) as entries:
            for entry in entries:
                path = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    folders.append(path)
                elif not stat.S_ISREG(st.st_mode):
                    found.append((path, None))
                    continue
                found.append((path, st))
    return found


def _as_recorded(out: Path) -> _Manifest | None:
    """The manifest, when `out` holds exactly what it records; None for anything else."""
    found = _read_manifest(out)
    if found is None:
        return None
    manifest, marked_ns = found
    if manifest.umask != _umask():  # new files and folders would get other modes
        return None
    seen = 0
    racy: list[tuple[str, _File]] = []
    try:
        listing = _walk(out)
    except OSError:  # a folder that cannot be listed: the full write says what is wrong
        return None
    for rel, st in listing:
        if rel == RENDER_MARKER:
            continue
        if st is None:
            return None
        seen += 1
        if stat.S_ISDIR(st.st_mode):
            if manifest.dirs.get(rel) != (st.st_mode, st.st_ino):
                return None
            continue
        recorded = manifest.files.get(rel)
        if recorded is None or (
            recorded.size,
            recorded.mode,
            recorded.mtime_ns,
            recorded.ctime_ns,
            recorded.ino,
        ) != (st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
            return None
        if recorded.mtime_ns >= marked_ns or recorded.ctime_ns >= marked_ns:
            racy.append((rel, recorded))
    if seen != len(manifest.files) + len(manifest.dirs):
        return None
    for rel, recorded in racy:
        try:
            fd = os.open(out / rel, _READ)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            if _digest(handle.read()) != recorded.digest:
                return None
    if racy:  # checked now: a later change shows in their times (the marker is newer)
        _write_marker(out, manifest.text())
    return manifest


def _update(out: Path, manifest: _Manifest, wanted: dict[str, bytes]) -> None:
    """Make `out` (as `manifest` records it) hold `wanted`, touching only what differs."""
    write = {
        rel: data
        for rel, data in wanted.items()
        if rel not in manifest.files or manifest.files[rel].digest != _digest(data)
    }
    remove = [rel for rel in manifest.files if rel not in wanted or rel in write]
    folders = _folders(wanted)
    if not write and not remove and folders == set(manifest.dirs):
        return
    # Until the new manifest is written, the old one must not vouch for anything.
    _write_marker(out, _MARKER_TEXT)
    for rel in remove:
        (out / rel).unlink()
        del manifest.files[rel]
    for rel in sorted(set(manifest.dirs) - folders, key=lambda r: -r.count("/")):
        (out / rel).rmdir()  # children first; empty once their files are removed
        del manifest.dirs[rel]
    _mkdirs(out, folders - set(manifest.dirs), manifest)
    for rel, data in write.items():
        manifest.files[rel] = _create(out / rel, data)
    _write_marker(out, manifest.text())
