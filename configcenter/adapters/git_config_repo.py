"""The config repo as the core reads it: work tree files plus template tags from Git.

One `git cat-file --batch` process per repo (`CatFile`), so reading many tagged
template files costs a round trip each, not a process each. Every git command runs
in `git_env()`: a GIT_DIR or GIT_INDEX_FILE of a hook configcenter runs from never
points it at another repository.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import subprocess
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from configcenter.adapters.cache_files import Stamp, locked, stamp, write_pickle
from configcenter.adapters.git_env import git_env
from configcenter.adapters.git_refs import read_head, read_tags
from configcenter.adapters.work_tree import (
    StatDigests,
    list_repo_dir,
    read_repo_file,
    repo_path_kind,
    walk_repo_dir,
)
from configcenter.core.errors import UserError
from configcenter.core.limits import HARD_MAX_FILE_BYTES
from configcenter.core.source import FileTooLarge, RepoPathError, content_id


class WorkTreeTemplate:
    """templates/<service> as it is on disk (the HEAD pin).

    Links and other non-regular files are listed in `refused` and never read: a
    committed `app.conf.j2 -> ~/.ssh/id_rsa` must not put the key into a render.
    """

    def __init__(self, root: Path, refused_self: str | None = None) -> None:
        self.root = root
        # When templates/<service> itself is a link (or not a directory), nothing is read.
        self._refused_self = refused_self

    @cached_property
    def _scan(self) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
        if self._refused_self is not None:
            return {}, [("", self._refused_self)]
        names, refused = walk_repo_dir(self.root)
        files: dict[str, bytes] = {}
        for name in names:
            try:
                data = read_repo_file(self.root, name, MAX_FILE_BYTES)
            except RepoPathError as exc:  # replaced by a link since the walk
                refused.append((exc.rel, exc.kind))
                continue
            except FileTooLarge as exc:
                refused.append((name, f"file of {exc.size} bytes (the most is {exc.limit})"))
                continue
            if data is not None:
                files[name] = data
        return files, sorted(refused)

    @property
    def _files(self) -> dict[str, bytes]:
        return self._scan[0]

    @property
    def refused(self) -> Sequence[tuple[str, str]]:
        return self._scan[1]

    @cached_property
    def tree_id(self) -> str:
        return "worktree:" + content_id(self._files)

    def read(self, name: str) -> bytes | None:
        return self._files.get(name)

    def has(self, name: str) -> bool:
        return name in self._files

    def files(self) -> Mapping[str, bytes]:
        return self._files


#: No file of the config repo is read past this size, whatever configcenter.yaml says.
MAX_FILE_BYTES = HARD_MAX_FILE_BYTES

CACHE_VERSION = 3  # 2: tree entries carry their git mode; 3: one file per table
CACHE_LIMIT = 50_000  # entries per table; past it a table starts afresh


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "configcenter" / "config-repos"


class _DiskCache:
    """Content-addressed tables kept across runs: git objects by sha, YAML parses by digest.

    Every key names immutable content, so an entry can never be stale; a table that
    cannot be read is simply rebuilt. Each table is its own file (`<base>.<table>.pickle`,
    in the user's own cache dir, 0700), opened on first use: rendering one service after
    an edit reads a few Git objects, not the 18 MB of YAML parses of a 5,000-service repo.
    A table written by another process since it was read (serve and a command) is merged
    with it before it is written back, so neither writer's entries are lost.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self._tables: dict[str, dict[Any, Any]] = {}
        self._sizes: dict[str, int] = {}
        self._stamps: dict[str, Stamp | None] = {}

    def _path(self, name: str) -> Path:
        return self.base.with_name(f"{self.base.name}.{name}.pickle")

    def table(self, name: str) -> dict[Any, Any]:
        table = self._tables.get(name)
        if table is None:
            self._stamps[name] = stamp(self._path(name))
            table = self._tables[name] = self._load(name)
            self._sizes[name] = len(table)
        return table

    def _load(self, name: str) -> dict[Any, Any]:
        try:
            with open(self._path(name), "rb") as handle:
                data = pickle.load(handle)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            return {}
        table = data.get("table")
        return table if isinstance(table, dict) and len(table) < CACHE_LIMIT else {}

    def save(self) -> None:
        """Write back, atomically, each table something was added to."""
        # The one file of every table that version 2 wrote (an unusable cache directory:
        # the writes below skip it as well).
        with contextlib.suppress(OSError):
            self.base.with_name(f"{self.base.name}.pickle").unlink(missing_ok=True)
        for name, table in self._tables.items():
            if len(table) == self._sizes.get(name, 0):
                continue
            path = self._path(name)
            try:
                with locked(path):
                    if stamp(path) != self._stamps.get(name):
                        theirs = self._load(name)  # another writer's since we read it
                        if len(theirs) + len(table) < CACHE_LIMIT:
                            table.update((k, v) for k, v in theirs.items() if k not in table)
                    write_pickle(path, {"version": CACHE_VERSION, "table": table})
                    self._stamps[name] = stamp(path)
            except OSError:
                continue  # a cache is an optimisation: never fail a command over it
            self._sizes[name] = len(table)


class CatFile:
    """One `git cat-file --batch` process in a repository, started on the first read and
    ended (its input closed) when this object goes or the interpreter exits. Not
    thread-safe: the caller holds a lock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._proc: subprocess.Popen[bytes] | None = None

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            try:
                self._proc = subprocess.Popen(
                    ["git", "-C", str(self.root), "cat-file", "--batch"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    env=git_env(LC_ALL="C"),
                )
            except FileNotFoundError:
                raise UserError(
                    "git is not installed: install git (configcenter reads template tags with it)"
                ) from None
            weakref.finalize(self, _end, self._proc)
        return self._proc

    def read(self, sha: str) -> tuple[str, bytes]:
        """(type, content) of object `sha`."""
        proc = self._started()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(sha.encode("ascii") + b"\n")
            proc.stdin.flush()
            header = proc.stdout.readline().split()
            if len(header) == 3:
                size = int(header[2])
                data = proc.stdout.read(size)
                if len(data) == size and proc.stdout.read(1) == b"\n":
                    return header[1].decode(), data
        except (OSError, ValueError):
            pass
        _end(proc)
        self._proc = None
        raise UserError(
            f"git cannot read object {sha} in {self.root}",
            hint="the repository is damaged or was changed while reading: `git fsck` says",
        )


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


class _ObjectReader:
    """Git objects by sha through one persistent `cat-file --batch`, parsed trees cached.

    Trees are parsed once per sha, blobs read once per sha: looking up templates/<svc>
    for 500 services must not re-parse the 500-entry templates/ tree 500 times (it was
    4 s of a 4.7 s load through GitPython's Tree objects).
    """

    SMALL_BLOB = 64 * 1024  # larger blobs are read each time, not kept on disk

    def __init__(self, root: Path, cache: _DiskCache) -> None:
        self._cat = CatFile(root)  # git runs only on a cache miss
        # One `cat-file --batch` process: serve's page threads share a loaded config.
        self._lock = threading.Lock()
        self._commits: dict[str, str] = cache.table("commit_tree")
        self._trees: dict[str, dict[str, tuple[str, str]]] = cache.table("trees")
        self._blobs: dict[str, bytes] = cache.table("blobs")

    def _data(self, sha: str) -> tuple[str, bytes]:
        with self._lock:
            return self._cat.read(sha)

    def commit_tree(self, commit: str) -> str:
        tree = self._commits.get(commit)
        if tree is None:
            _, data = self._data(commit)
            tree = data.split(b"\n", 1)[0].removeprefix(b"tree ").decode()
            self._commits[commit] = tree
        return tree

    def tree(self, sha: str) -> dict[str, tuple[str, str]]:
        """Entries of a tree object: name -> (git mode, sha); mode 40000 is a tree."""
        entries = self._trees.get(sha)
        if entries is None:
            _, data = self._data(sha)
            entries = {}
            pos = 0
            while pos < len(data):
                space = data.index(b" ", pos)
                nul = data.index(b"\0", space)
                name = data[space + 1 : nul].decode("utf-8", "surrogateescape")
                entries[name] = (data[pos:space].decode(), data[nul + 1 : nul + 21].hex())
                pos = nul + 21
            self._trees[sha] = entries
        return entries

    def blob(self, sha: str) -> bytes:
        data = self._blobs.get(sha)
        if data is None:
            _, data = self._data(sha)
            if len(data) <= self.SMALL_BLOB:
                self._blobs[sha] = data
        return data

    def lookup(self, tree: str, path: str) -> tuple[str, str] | None:
        """(git mode, sha) of `path` under `tree`, or None when it is not there."""
        entry: tuple[str, str] | None = (TREE_MODE, tree)
        for part in path.split("/"):
            if entry is None or entry[0] != TREE_MODE:
                return None
            entry = self.tree(entry[1]).get(part)
        return entry


TREE_MODE = "40000"
BLOB_MODES = frozenset({"100644", "100755", "100664"})
OTHER_MODES = {"120000": "symbolic link", "160000": "submodule (gitlink)"}


def _is_blob(entry: tuple[str, str] | None) -> bool:
    return entry is not None and entry[0] in BLOB_MODES


class GitTemplate:
    """templates/<service> in a tagged commit; files are read on first use.

    A link committed in the tag is refused like one in the work tree (its target
    path is never used as content), and so is a submodule entry.
    """

    def __init__(
        self, reader: _ObjectReader, tree_id: str, refused_self: str | None = None
    ) -> None:
        self._reader = reader
        self._tree_id = tree_id
        self._cache: dict[str, bytes] | None = None
        self._refused: list[tuple[str, str]] | None = None
        self._refused_self = refused_self

    @property
    def tree_id(self) -> str:
        return self._tree_id

    def _walk(self) -> None:
        out: dict[str, bytes] = {}
        refused: list[tuple[str, str]] = []
        if self._refused_self is not None:
            refused.append(("", self._refused_self))
        else:
            pending = [("", self._tree_id)]
            while pending:
                prefix, sha = pending.pop()
                for name, (mode, child) in self._reader.tree(sha).items():
                    if mode == TREE_MODE:
                        pending.append((f"{prefix}{name}/", child))
                    elif mode in BLOB_MODES:
                        out[prefix + name] = self._reader.blob(child)
                    else:
                        refused.append((prefix + name, OTHER_MODES.get(mode, f"mode {mode} entry")))
        self._cache = dict(sorted(out.items()))
        self._refused = sorted(refused)

    def files(self) -> Mapping[str, bytes]:
        if self._cache is None:
            self._walk()
        assert self._cache is not None
        return self._cache

    @property
    def refused(self) -> Sequence[tuple[str, str]]:
        if self._refused is None:
            self._walk()
        assert self._refused is not None
        return self._refused

    def has(self, name: str) -> bool:
        if self._refused_self is not None:
            return False
        return _is_blob(self._reader.lookup(self._tree_id, name))

    def read(self, name: str) -> bytes | None:
        if self._cache is not None:
            return self._cache.get(name)
        if self._refused_self is not None:
            return None
        entry = self._reader.lookup(self._tree_id, name)
        if entry is None or not _is_blob(entry):
            return None
        return self._reader.blob(entry[1])


class GitConfigRepo:
    """A config repo on disk; Git is optional (no Git: no tags, HEAD pins only)."""

    #: A tagged template tree is read from the tag's commit, and Git objects never change:
    #: the same tags give the same trees (configcenter.core.load_trace relies on it).
    tagged_trees_immutable = True

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._is_git = (self.root / ".git").exists()

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(self.root), *args],
            capture_output=True,
            text=True,
            check=False,
            env=git_env(LC_ALL="C"),
        )

    def _git(self, *args: str) -> str:
        result = self._run(*args)
        if result.returncode != 0:
            return ""
        return result.stdout

    # -- the work tree, read as data (never following a link) ----------------------------------

    def read_file(self, rel: str, max_bytes: int) -> bytes | None:
        return read_repo_file(self.root, rel, max_bytes)

    def file_digest(self, rel: str, max_bytes: int) -> str | None:
        """sha256 hex of `read_file`'s answer, from the file's stat when it is unchanged
        (a kept load's replay checks 5,000 files without reading them)."""
        return self._stat_digests.digest(self.root, rel, max_bytes)

    def file_digester(self) -> Callable[[str, int], str | None]:
        """`file_digest` for a batch of files read at once (a kept load's replay): each
        directory on their way is checked once for the batch, not once per file."""
        checked: set[str] = set()
        return lambda rel, max_bytes: self._stat_digests.digest(self.root, rel, max_bytes, checked)

    @cached_property
    def _stat_digests(self) -> StatDigests:
        key = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return StatDigests(_cache_dir() / f"{key}.stat")

    def list_dir(self, rel: str) -> list[tuple[str, str]] | None:
        return list_repo_dir(self.root, rel)

    def path_kind(self, rel: str) -> str | None:
        return repo_path_kind(self.root, rel)

    def head_commit(self) -> str | None:
        if not self._is_git:
            return None
        known, head = read_head(self.root)  # from .git's files, unless git must be asked
        if known:
            return head
        return self._git("rev-parse", "--verify", "-q", "HEAD").strip() or None

    @cached_property
    def _tags(self) -> dict[str, str]:
        if not self._is_git:
            return {}
        packed = read_tags(self.root)  # from .git's files; None: git must be asked
        if packed is not None:
            return packed
        out = self._git(
            "for-each-ref",
            "--format=%(refname:strip=2)\t%(objectname)\t%(*objectname)",
            "refs/tags",
        )
        tags = {}
        for line in out.splitlines():
            name, obj, peeled = line.split("\t")
            tags[name] = peeled or obj
        return tags

    def tags(self) -> Mapping[str, str]:
        return self._tags

    def template_tree(self, service: str, tag: str | None) -> WorkTreeTemplate | GitTemplate | None:
        rel = f"templates/{service}"
        if tag is None:
            try:
                kind = repo_path_kind(self.root, rel)
            except RepoPathError as exc:
                kind = f"{exc.kind} on its way ({exc.rel})"
            if kind is None:
                return None
            path = self.root / "templates" / service
            return WorkTreeTemplate(path, None if kind == "directory" else kind)
        commit = self._tags.get(f"{service}/{tag}")
        if commit is None:
            return None
        reader = self._reader
        entry = reader.lookup(reader.commit_tree(commit), rel)
        if entry is None:
            return None
        if entry[0] != TREE_MODE:
            if entry[0] in BLOB_MODES:
                return None
            return GitTemplate(reader, "", OTHER_MODES.get(entry[0], f"mode {entry[0]} entry"))
        return GitTemplate(reader, entry[1])

    @cached_property
    def _disk_cache(self) -> _DiskCache:
        key = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return _DiskCache(_cache_dir() / key)

    @property
    def parse_cache(self) -> dict[Any, Any]:
        """YAML parses by content digest, for the core's loader."""
        return self._disk_cache.table("yaml")

    @property
    def consumption_cache(self) -> dict[str, tuple[str, ...]]:
        """The value names each template version reads, for the renderer."""
        return self._disk_cache.table("consumption")

    def save_caches(self) -> None:
        if "_disk_cache" in self.__dict__:
            self._disk_cache.save()
        if "_stat_digests" in self.__dict__:
            self._stat_digests.save()

    @cached_property
    def _reader(self) -> _ObjectReader:
        return _ObjectReader(self.root, self._disk_cache)

    def create_tag(self, name: str, message: str) -> str:
        """Create an annotated tag at HEAD; refuses to move an existing one."""
        if name in self._tags:
            raise UserError(f"tag '{name}' already exists; released tags never move")
        made = self._run("tag", "--annotate", "--message", message, "--", name, "HEAD")
        if made.returncode != 0:
            raise UserError(
                f"git could not create tag '{name}' in {self.root}: "
                + (made.stderr.strip().splitlines() or ["no message"])[-1],
                hint="set git's user.name and user.email (git config) if it asks for them",
            )
        self.__dict__.pop("_tags", None)
        return self._tags[name]
