"""Source checkouts for image builds, cached per repository URL.

Each source repository is kept as a bare mirror under
`<cache>/<sha256(url)[:16]>/repo.git` and fetched (never re-cloned) on later
builds. A build context is the tree of one commit (or a subdirectory of it),
exported once to `trees/<tree id>`: trees are content-addressed, so concurrent
builds of different refs of one repository never step on each other, and the
tree id itself is the digest of the context's content.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from configcenter.adapters.git_env import git_env
from configcenter.ports.source import PinnedSource, SourceCheckoutError

DEFAULT_CACHE = Path("~/.cache/configcenter/sources")
_HEX_RE = re.compile(r"^[0-9a-f]{7,64}$")


__all__ = ["GitSourceCheckouts", "ResolvedSource", "SourceCheckoutError"]


@dataclass(frozen=True)
class ResolvedSource:
    """A ref pinned to a commit, with the content id of the build context in it."""

    url: str
    ref: str
    commit: str  # full commit id
    subdir: str  # context directory inside the repository ("" for the root)
    tree: str  # git tree id of that directory: a digest of its whole content
    mirror: Path  # the cached bare repository


def redact_url(url: str) -> str:
    """The URL with any password or token in it replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None and not (parts.username and parts.scheme in ("http", "https")):
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    # An https URL's lone "user" part is usually a token (https://TOKEN@host/...).
    userinfo = f"{parts.username}:***" if parts.password is not None else "***"
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query, ""))


def cache_dir_for(url: str, cache_root: Path) -> Path:
    return cache_root.expanduser() / hashlib.sha256(url.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock: serialises fetches of one mirror across threads and processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _GitFailed(Exception):
    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


def _git_bytes(mirror: Path, *args: str) -> bytes:
    """git in the mirror (`--git-dir`), in `git_env()`, never asking on a terminal: what
    it printed; _GitFailed with git's stderr when it fails."""
    try:
        proc = subprocess.run(
            ["git", f"--git-dir={mirror}", *args],
            capture_output=True,
            check=False,
            env=git_env(LC_ALL="C", GIT_TERMINAL_PROMPT="0"),
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise SourceCheckoutError(
            "git is not installed: install git to build from source"
        ) from None
    if proc.returncode != 0:
        raise _GitFailed(proc.stderr.decode("utf-8", "replace"))
    return proc.stdout


def _git(mirror: Path, *args: str) -> str:
    return _git_bytes(mirror, *args).decode("utf-8", "replace")


def _clean_error(exc: Exception, url: str) -> str:
    """The last meaningful line of git's stderr, with the URL's secret masked."""
    stderr = getattr(exc, "stderr", "") or str(exc)
    lines = [ln.strip() for ln in str(stderr).splitlines() if ln.strip()]
    message = lines[-1] if lines else type(exc).__name__
    message = message.removeprefix("stderr: ").strip("'")
    parts = urlsplit(url) if "://" in url else None
    if parts is not None and parts.password:
        message = message.replace(parts.password, "***")
    elif parts is not None and parts.username and parts.scheme in ("http", "https"):
        message = message.replace(parts.username, "***")
    return message


def _normalise_subdir(subdir: str) -> str:
    path = PurePosixPath(subdir or ".")
    if path.is_absolute() or ".." in path.parts:
        raise SourceCheckoutError(
            f"invalid build context directory {subdir!r}: give a path inside the source "
            "repository, e.g. '.' or 'services/api'"
        )
    return "" if str(path) == "." else str(path)


def _fetch(url: str, mirror: Path) -> None:
    safe = redact_url(url)
    try:
        if not (mirror / "HEAD").exists():
            mirror.mkdir(parents=True, exist_ok=True)
            _git(mirror, "init", "--quiet", "--bare")
            _git(mirror, "remote", "add", "origin", url)
        _git(
            mirror,
            "fetch",
            "--quiet",
            "origin",
            "--prune",
            "--force",
            "--tags",
            "+refs/heads/*:refs/remotes/origin/*",
        )
    except _GitFailed as exc:
        raise SourceCheckoutError(
            f"cannot fetch source repo {safe}: {_clean_error(exc, url)}; check the URL "
            "in image.source.repo and that this machine can read it"
        ) from None


def _rev_parse(mirror: Path, expr: str) -> str | None:
    try:
        out = _git(mirror, "rev-parse", "--verify", "--quiet", "--end-of-options", expr)
    except _GitFailed:
        return None
    return out.strip() or None


def fetch_source(url: str, cache_root: Path = DEFAULT_CACHE) -> None:
    """Bring the cached mirror of `url` up to date (clone it the first time)."""
    base = cache_dir_for(url, cache_root)
    with _locked(base.with_suffix(".lock")):
        _fetch(url, base / "repo.git")


def resolve_source(
    url: str, ref: str, cache_root: Path = DEFAULT_CACHE, subdir: str = ".", *, fetch: bool = True
) -> ResolvedSource:
    """Pin `ref` (branch, tag or commit) to a commit, fetching `url` first unless told not to.

    `fetch=False` is for batches that fetched each repository once already.
    """
    if not url:
        raise SourceCheckoutError("image.source.repo is empty: give a git URL or path")
    if not ref:
        raise SourceCheckoutError(
            f"image.source.ref is empty for {redact_url(url)}: give a branch, tag or commit"
        )
    sub = _normalise_subdir(subdir)
    base = cache_dir_for(url, cache_root)
    mirror = base / "repo.git"
    with _locked(base.with_suffix(".lock")):
        if fetch or not (mirror / "HEAD").exists():
            _fetch(url, mirror)
        commit = _resolve_ref(mirror, ref)
        if commit is None and _HEX_RE.match(ref):
            # A commit no branch or tag reaches: some servers still hand it out by id.
            with contextlib.suppress(_GitFailed):
                _git(mirror, "fetch", "--quiet", "origin", ref)
            commit = _rev_parse(mirror, f"{ref}^{{commit}}")
    if commit is None:
        raise SourceCheckoutError(
            f"source repo {redact_url(url)} has no branch, tag or commit {ref!r}: "
            "push it, or fix image.source.ref"
        )
    tree = _tree_id(mirror, commit, sub)
    if tree is None:
        raise SourceCheckoutError(
            f"source repo {redact_url(url)} at {ref} ({commit[:12]}) has no directory "
            f"{sub!r}: fix the build context directory"
        )
    return ResolvedSource(url=url, ref=ref, commit=commit, subdir=sub, tree=tree, mirror=mirror)


def _resolve_ref(mirror: Path, ref: str) -> str | None:
    candidates = [f"refs/remotes/origin/{ref}", f"refs/tags/{ref}"]
    if ref.startswith("refs/heads/"):
        candidates.insert(0, "refs/remotes/origin/" + ref.removeprefix("refs/heads/"))
    elif ref.startswith("refs/"):
        candidates.insert(0, ref)
    if _HEX_RE.match(ref):
        candidates.append(ref)
    for candidate in candidates:
        commit = _rev_parse(mirror, f"{candidate}^{{commit}}")
        if commit:
            return commit
    return None


def _tree_id(mirror: Path, commit: str, subdir: str) -> str | None:
    """The tree id of `subdir` in `commit`, None when it is missing or not a directory."""
    expr = f"{commit}^{{tree}}" if not subdir else f"{commit}:{subdir}"
    tree = _rev_parse(mirror, expr)
    if tree is None:
        return None
    try:
        kind = _git(mirror, "cat-file", "-t", tree).strip()
    except _GitFailed:
        return None
    return tree if kind == "tree" else None


def export_tree(source: ResolvedSource) -> Path:
    """The context directory's files on disk, exported once per tree id and then reused."""
    trees = source.mirror.parent / "trees"
    target = trees / source.tree
    if target.is_dir():
        return target
    trees.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{source.tree[:12]}-", dir=trees))
    try:
        try:
            buffer = io.BytesIO(_git_bytes(source.mirror, "archive", "--format=tar", source.tree))
        except _GitFailed as exc:
            raise SourceCheckoutError(
                f"cannot export tree {source.tree[:12]} of source repo "
                f"{redact_url(source.url)}: {_clean_error(exc, source.url)}"
            ) from None
        with tarfile.open(fileobj=buffer) as archive:
            archive.extractall(staging, filter="tar")
        try:
            os.rename(staging, target)
        except OSError:
            # Another build exported the same tree first: same content, use theirs.
            if not target.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


class GitSourceCheckouts:
    """The source checkout port over the functions above, with one cache directory."""

    def __init__(self, cache_root: Path = DEFAULT_CACHE) -> None:
        self.cache_root = cache_root

    def fetch(self, url: str) -> None:
        fetch_source(url, self.cache_root)

    def resolve(
        self, url: str, ref: str, subdir: str = ".", *, fetch: bool = True
    ) -> ResolvedSource:
        return resolve_source(url, ref, self.cache_root, subdir, fetch=fetch)

    def export(self, source: PinnedSource) -> Path:
        mirror = cache_dir_for(source.url, self.cache_root) / "repo.git"
        pinned = ResolvedSource(
            url=source.url,
            ref=source.ref,
            commit=source.commit,
            subdir=source.subdir,
            tree=source.tree,
            mirror=mirror,
        )
        return export_tree(pinned)
