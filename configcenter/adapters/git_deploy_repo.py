"""The deploy repo on Git: a bare cache of one remote branch, written with git plumbing.

Why this shape:

* The cache is a bare repository with no working tree, so a crash can never leave a
  half-written file; a commit is either fully in the object store or not referenced.
* A commit is one ``git fast-import`` stream (blobs, deletions, commit object), which
  writes 7,500 files in a fraction of a second where an index-based ``add`` takes
  seconds. The stream must end with ``done``, so a stream cut short by a crash is
  refused as a whole and no ref moves.
* Reads of many files are one ``git cat-file --batch`` round trip; so are the files
  that many commits changed (``log_changes`` + ``read_blobs``), so the history of a
  path is two ``git log`` passes and one batch read, not one process per commit.
  The history of state records comes from the history index (``history_index.py``:
  each commit's changed records, kept by commit id), so git compares each commit's
  trees with its parent's once, not at every ``history``.
* The remote URL is passed on each command line and never stored in the cache's
  config or ``FETCH_HEAD``, and is redacted in every error, so a token in an https URL
  does not land on disk or in logs.
* Refs are read straight from the ref files (no process per ``head()``), and a sync
  whose ``ls-remote`` finds the branch where the cache has it fetches nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import pickle
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from configcenter.adapters import history_index
from configcenter.adapters.cache_files import Data, Stamp, pickled, save_merged, stamp
from configcenter.adapters.git_env import git_env
from configcenter.adapters.history_index import ChangeIndex, Found, within
from configcenter.crashpoints import crash_point
from configcenter.ports.deploy_repo import (
    Changes,
    CommitInfo,
    DeployRepoError,
    DeployRepoLockTimeout,
    DeployRepoUnreachable,
    InvalidDeployPath,
)

logger = logging.getLogger(__name__)

DEFAULT_AUTHOR = "configcenter <configcenter@localhost>"
#: A holder refreshes the lock every quarter of this while it lives (heartbeat), so a lock
#: silent for longer is dead whatever host wrote it: a replica restarted under a new hostname
#: with its predecessor's cache takes the lock over within this, inside the 60 s a waiter waits.
DEFAULT_LOCK_EXPIRY = 45.0
DEFAULT_NETWORK_TIMEOUT = 300.0
#: Commands that only read (plan) give up on an unresponsive remote sooner.
DEFAULT_PLAN_NETWORK_TIMEOUT = 30.0
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
LOCK_FILE = "configcenter.lock"
#: Written into the cache once its bare repository is complete (see `_ensure_cache`).
INITIALISED = "configcenter.initialised"
#: The history index's files, inside the cache (`adapters/history_index.py`).
HISTORY_INDEX_DIR = "configcenter-history"
#: Listings (path -> blob id) of commits' trees, kept in the cache: a commit's tree never
#: changes, so an entry can never be stale; the newest `_LISTINGS_KEPT` stay.
LISTINGS_FILE = "configcenter-listings.pickle"
_LISTINGS_KEPT = 8
#: Commits the history index asks git for at once: first few (a new commit or two on a
#: known head), then four times more each time the walk needs more, up to the most.
_FIRST_FILL = 64
_MAX_FILL = 4096

# Every crash point in this adapter, in the order an apply passes them. The crash
# tests run one child process per name, so a new step boundary must be listed here.
CRASH_POINTS: tuple[str, ...] = (
    "deploy_repo.lock.acquired",
    "deploy_repo.sync.after_ls_remote",
    "deploy_repo.sync.after_fetch",
    "deploy_repo.commit.before_import",
    "deploy_repo.commit.mid_import",
    "deploy_repo.commit.after_import",
    "deploy_repo.push.before_push",
    "deploy_repo.push.after_push",
    "deploy_repo.push.after_ref_update",
    "deploy_repo.lock.before_release",
)

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_URL_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@]*)@")
_SCP_LIKE = re.compile(r"^[^/:]+:")
_AUTHOR = re.compile(r"^(?P<name>[^<>\n]+?)\s*<(?P<email>[^<>\n]*)>$")
_BATCH_HEADER = re.compile(rb"[0-9a-f]{40,64} (?P<type>blob|tree|commit|tag) (?P<size>\d+)$")
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_REV_CHARS = re.compile(r"[\x00-\x20\x7f:?*\[\\]")
_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_LOG_FIELDS = 6
# Up to this many paths, read_many asks cat-file for "rev:path" directly (one process);
# beyond it, resolving blob ids with one ls-tree first is much faster.
_DIRECT_LOOKUPS = 32
# Each commit's changed files (blob ids in full, no rename pairs, paths unquoted) after a
# line "\x01<sha> <parents>"; the root commit's files too, whatever log.showRoot says.
_RAW_LOG = (
    "-c", "core.quotePath=false", "-c", "log.showRoot=true", "log", "--raw", "--no-abbrev",
    "--no-renames", "--format=%x01%H %P",
)  # fmt: skip
_LOG_FORMAT = (
    "%H%x00%an <%ae>%x00%aI%x00%s%x00%b%x00"
    "%(trailers:only,unfold,separator=%x1f,key_value_separator=%x1e)"
)


def redact_url(url: str) -> str:
    """``url`` with any password or token in it replaced by ``***``."""
    match = _URL_USERINFO.match(url)
    if not match:
        return url
    user, sep, _secret = match["userinfo"].partition(":")
    shown = f"{user}:***" if sep else "***"
    return f"{match['scheme']}{shown}@{url[match.end() :]}"


#: Credentials of the deploy repo URL reach git through these variables and the credential
#: helper below, never its command line (which every user of the host can read in /proc).
_USER_VAR = "CONFIGCENTER_GIT_USERNAME"
_SECRET_VAR = "CONFIGCENTER_GIT_PASSWORD"
_HELPER = (
    '!f() { test "$1" = get || return 0; '
    f'printf "username=%s\\npassword=%s\\n" "${_USER_VAR}" "${_SECRET_VAR}"; }}; f'
)


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``https://user:token@host/x`` -> (``https://host/x``, user, token); others unchanged."""
    match = _URL_USERINFO.match(url)
    if not match:
        return url, None, None
    user, sep, secret = match["userinfo"].partition(":")
    from urllib.parse import unquote

    return (
        f"{match['scheme']}{url[match.end() :]}",
        unquote(user),
        unquote(secret) if sep else "",
    )


def credential_env(base: Mapping[str, str], user: str, secret: str) -> dict[str, str]:
    """Variables making git answer credential requests from the environment only:
    other helpers are reset (an empty helper clears the list), then ours reads the
    two variables. Added after any GIT_CONFIG_COUNT settings already present."""
    env = dict(base)
    try:
        count = int(env.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        count = 0
    for offset, value in enumerate(("", _HELPER)):
        env[f"GIT_CONFIG_KEY_{count + offset}"] = "credential.helper"
        env[f"GIT_CONFIG_VALUE_{count + offset}"] = value
    env["GIT_CONFIG_COUNT"] = str(count + 2)
    env[_USER_VAR] = user
    env[_SECRET_VAR] = secret
    return env


def default_cache_dir(url: str) -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/configcenter/deploy/<sha256(url)[:16]>``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(base) / "configcenter" / "deploy" / digest


def _check_url(url: str) -> None:
    if not url or url != url.strip() or "\n" in url:
        raise DeployRepoError(
            f"deploy repo url {redact_url(url)!r} is empty or has surrounding whitespace; "
            "set deploy_repo.url in configcenter.yaml to a path or git URL"
        )
    if url.startswith("-"):
        raise DeployRepoError(
            f"deploy repo url {redact_url(url)!r} starts with '-', which git would read as an "
            "option; set deploy_repo.url to a path or git URL"
        )
    if _URL_SCHEME.match(url) or _SCP_LIKE.match(url) or os.path.isabs(url):
        return
    raise DeployRepoError(
        f"deploy repo url {url!r} is a relative path; resolve it against the config "
        "repo directory (an absolute path) before opening the deploy repo"
    )


def _check_branch(branch: str) -> None:
    bad = (
        not branch
        or _BAD_REF_CHARS.search(branch) is not None
        or branch.startswith(("-", "/"))
        or branch.endswith(("/", ".", ".lock"))
        or ".." in branch
        or "//" in branch
        or "@{" in branch
    )
    if bad:
        raise DeployRepoError(
            f"deploy repo branch {branch!r} is not a valid git branch name; "
            "set deploy_repo.branch in configcenter.yaml to a name such as 'main'"
        )


def _check_path(path: object, what: str = "path") -> str:
    """A clean repository-relative path, or an error saying what is wrong with it."""
    if not isinstance(path, str) or not path:
        raise InvalidDeployPath(f"deploy repo {what} must be a non-empty string, got {path!r}")
    if _CONTROL.search(path):
        raise InvalidDeployPath(
            f"deploy repo {what} {path!r} contains a control character (newline, tab, ...); "
            "rename the file"
        )
    # Substring tests on "/path/" instead of a loop over parts: this runs for every
    # one of thousands of files in a bulk commit or read.
    wrapped = f"/{path}/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped:
        raise InvalidDeployPath(
            f"deploy repo {what} {path!r} must be relative and normalised, like "
            "'dev/api/app.env' (no leading '/', no empty, '.' or '..' parts)"
        )
    if "/.git/" in wrapped.lower():
        raise InvalidDeployPath(f"deploy repo {what} {path!r} has a '.git' part, which git refuses")
    return path


def _hostname() -> str:
    """This machine's name, as lock records carry it (socket is imported only for locks:
    ~5 ms of every command's start-up otherwise)."""
    import socket

    return socket.gethostname()


def _check_prefix(prefix: str | None) -> str:
    """A directory prefix ('' for the whole repo), with any trailing '/' removed."""
    if prefix is None or prefix.strip("/") == "":
        return ""
    return _check_path(prefix.rstrip("/"), "prefix")


def _check_rev(rev: str) -> str:
    if not rev or rev.startswith("-") or _BAD_REV_CHARS.search(rev):
        raise DeployRepoError(
            f"revision {rev!r} is not a commit sha or ref name; pass a sha from head() or log()"
        )
    return rev


def _quote(path: str) -> bytes:
    """A C-style quoted path for fast-import, safe for any character we allow."""
    raw = path.encode("utf-8").replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + raw + b'"'


def _ident(author: str) -> tuple[str, str]:
    match = _AUTHOR.match(author.strip())
    if not match:
        raise DeployRepoError(
            f"commit author {author!r} must look like 'Name <email>', e.g. "
            "'configcenter <configcenter@example.com>'"
        )
    return match["name"], match["email"]


def _split_changes(
    changes: Changes,
) -> tuple[list[str], list[str], list[tuple[str, bytes]]]:
    """Prefix deletions, file deletions and writes, each checked."""
    prefixes: list[str] = []
    deletes: list[str] = []
    writes: list[tuple[str, bytes]] = []
    for key, value in changes.items():
        if isinstance(key, str) and key.endswith("/"):
            if value is not None:
                raise InvalidDeployPath(
                    f"change {key!r} ends with '/', so it names a directory: only None "
                    "(delete the directory) is allowed; write files at paths like "
                    f"'{key}app.env'"
                )
            if not key.strip("/"):
                raise InvalidDeployPath(
                    f"change {key!r} would delete the whole repository; delete each "
                    "directory with delete_prefix('<env>/<service>') instead"
                )
            prefixes.append(_check_prefix(key))
        elif value is None:
            deletes.append(_check_path(key))
        elif isinstance(value, bytes | bytearray | memoryview):
            writes.append((_check_path(key), bytes(value)))
        else:
            raise InvalidDeployPath(
                f"content for {key!r} must be bytes (encode text with .encode('utf-8')) "
                f"or None to delete it, got {type(value).__name__}"
            )
    written = {path for path, _ in writes}
    for path in written:
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in written:
                raise InvalidDeployPath(
                    f"changes write both file {parent!r} and {path!r} inside it; "
                    "a path cannot be a file and a directory at once"
                )
    return prefixes, deletes, writes


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of ``pid`` from /proc, to spot zombies and reused pids."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        # PermissionError: it exists but belongs to another user; /proc decides below.
        with contextlib.suppress(PermissionError):
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, started = stat
    return state not in ("Z", "X") and (start is None or started == start)


def _parse_log(output: bytes) -> list[CommitInfo]:
    """Commits from ``git log -z --format=_LOG_FORMAT`` output."""
    fields = output.decode("utf-8", "replace").split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    commits = []
    for i in range(0, len(fields) - _LOG_FIELDS + 1, _LOG_FIELDS):
        sha, author, date, subject, body, trailers = fields[i : i + _LOG_FIELDS]
        pairs = tuple(
            (key.strip(), value.strip())
            for key, _sep, value in (t.partition("\x1e") for t in trailers.split("\x1f"))
            if key.strip()
        )
        commits.append(
            CommitInfo(
                sha=sha.strip(),
                author=author,
                date=datetime.fromisoformat(date),
                subject=subject,
                body=body.strip(),
                trailers=pairs,
            )
        )
    return commits


@functools.cache
def _index_code() -> str:
    """The history index's entries are what this module's git commands and parsing make."""
    digest = hashlib.sha256()
    for module in (__file__, history_index.__file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()


def _read_listings(path: Path) -> dict[tuple[str, tuple[str, ...]], dict[str, bytes]]:
    """The listings kept in `path` ({} when it is missing, garbled or foreign)."""
    with contextlib.suppress(Exception):
        with open(path, "rb") as handle:
            data = pickle.load(handle)
        if isinstance(data, dict) and data.get("version") == 1:
            entries = data.get("entries")
            if isinstance(entries, dict):
                return entries
    return {}


def _parse_raw(output: bytes, wanted: Sequence[str]) -> Found:
    """Commit -> (parents, changes at or under ``wanted``; all when empty) from ``git log
    --raw --no-abbrev --format=%x01%H %P`` output, in git's order."""
    found: Found = {}
    current: dict[str, str | None] = {}
    for line in output.decode("utf-8", "surrogateescape").splitlines():
        if line.startswith("\x01"):
            sha, *parents = line[1:].split()
            current = {}
            found[sha] = (parents, current)
            continue
        meta, tab, path = line.partition("\t")
        if not tab or not meta.startswith(":"):
            continue
        if wanted and not within(path, wanted):
            continue
        fields = meta.split()  # :old_mode new_mode old_blob new_blob status
        if len(fields) >= 5:
            current[path] = None if fields[4].startswith("D") else fields[3]
    return found


class GitDeployRepo:
    """The deploy repo port on a Git remote (a bare repo path or any git URL)."""

    def __init__(
        self,
        url: str,
        branch: str,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        author: str = DEFAULT_AUTHOR,
        lock_expiry: float = DEFAULT_LOCK_EXPIRY,
        network_timeout: float = DEFAULT_NETWORK_TIMEOUT,
        history_index: bool = True,
    ) -> None:
        _check_url(url)
        _check_branch(branch)
        _ident(author)
        self.url = url
        self.branch = branch
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(url)
        self.author = author
        self.lock_expiry = lock_expiry
        self.network_timeout = network_timeout
        #: log_changes of paths under its ``under`` uses the history index (False: git alone)
        self.history_index = history_index
        self._tracking_ref = f"refs/remotes/origin/{branch}"
        self._staged_ref = f"refs/configcenter/staged/{branch}"
        self._cache_ready = False
        self._lock_token: str | None = None
        self._kept_listings: dict[tuple[str, tuple[str, ...]], dict[str, bytes]] | None = None
        self._listings_read: Stamp | None = None  # the version of LISTINGS_FILE read
        # Literal pathspecs: a prefix like "dev/*" or ":x" names a path, not a pattern.
        self._env = git_env(LC_ALL="C", GIT_TERMINAL_PROMPT="0", GIT_LITERAL_PATHSPECS="1")
        # The URL git sees has no credentials; a token in the URL goes through the helper.
        self._remote, user, secret = split_credentials(url)
        if user is not None and secret is not None:
            self._env = credential_env(self._env, user, secret)

    def __repr__(self) -> str:
        return f"GitDeployRepo({redact_url(self.url)!r}, {self.branch!r}, {str(self.cache_dir)!r})"

    # -- plumbing -----------------------------------------------------------------

    def _redact(self, text: str) -> str:
        """Text from git with the URL's credentials removed, however git printed them."""
        text = text.replace(self.url, redact_url(self.url))
        match = _URL_USERINFO.match(self.url)
        if match:
            secret = match["userinfo"].partition(":")[2] or match["userinfo"]
            if len(secret) >= 3:
                text = text.replace(secret, "***")
        return text

    def _ensure_cache(self) -> None:
        """Create the bare cache repository on first use (``git init``; no GitPython, whose
        import alone is ~50 ms of every command's start-up).

        Serve's workers and API and other processes may open a new cache at the same
        moment: it is made under the cache's short flock, and a marker written last says it
        is complete, so nobody sees (or makes) half of one."""
        if self._cache_ready:
            return
        if not (self.cache_dir / INITIALISED).exists():
            self._make_cache_dir()
            with self._guard():
                if not (self.cache_dir / INITIALISED).exists():
                    self._init_cache()
        self._cache_ready = True

    def _init_cache(self) -> None:
        """`git init --bare` (again, harmlessly, over one an older version made), auto-gc in
        the foreground so it never races our next command, then the marker that says done."""
        for args in (
            ["init", "--quiet", "--bare", str(self.cache_dir)],
            [f"--git-dir={self.cache_dir}", "config", "gc.autoDetach", "false"],
        ):
            proc = subprocess.run(["git", *args], capture_output=True, env=self._env)
            if proc.returncode != 0:
                raise DeployRepoError(
                    f"cannot create the deploy repo cache {self.cache_dir}: "
                    f"{self._stderr(proc)}. Set XDG_CACHE_HOME to a writable directory"
                )
        (self.cache_dir / INITIALISED).touch()

    def _make_cache_dir(self) -> None:
        """The deploy repo cache is needed (it holds the clone): a clear error when it cannot
        be made, never an OSError traceback."""
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(self.cache_dir, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as exc:
            raise DeployRepoError(
                f"deploy repo cache {self.cache_dir} cannot be written: {exc.strerror or exc}. "
                "Set XDG_CACHE_HOME to a writable directory"
            ) from None

    def _git(
        self,
        *args: str,
        stdin: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        self._ensure_cache()
        cmd = ["git", f"--git-dir={self.cache_dir}", *args]
        try:
            proc = subprocess.run(
                cmd, input=stdin, capture_output=True, env=self._env, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise DeployRepoUnreachable(
                f"git {args[0]} against deploy repo {redact_url(self.url)} did not finish "
                f"within {timeout:.0f}s; check the network and the deploy_repo.url"
            ) from exc
        if check and proc.returncode != 0:
            raise DeployRepoError(
                f"git {args[0]} failed in deploy repo cache {self.cache_dir}: {self._stderr(proc)}"
            )
        return proc

    def _stderr(self, proc: subprocess.CompletedProcess[bytes]) -> str:
        text = proc.stderr.decode("utf-8", "replace").strip() or f"exit {proc.returncode}"
        return self._redact(text)

    def _is_commit(self, rev: str) -> bool:
        return self._git("cat-file", "-e", f"{rev}^{{commit}}", check=False).returncode == 0

    def _resolve_commit(self, rev: str) -> str:
        proc = self._git("rev-parse", "--verify", "-q", f"{rev}^{{commit}}", check=False)
        if proc.returncode != 0:
            raise DeployRepoError(
                f"{rev!r} is not a commit in deploy repo cache {self.cache_dir}; call sync() "
                "and commit on the head it returns"
            )
        return proc.stdout.decode().strip()

    def _rev_or_head(self, rev: str | None) -> str | None:
        return self.head() if rev is None else _check_rev(rev)

    # -- remote -------------------------------------------------------------------

    def sync(self) -> str | None:
        """Fetch the remote branch; ls-remote first, because only it tells "empty" apart."""
        remote_ref = f"refs/heads/{self.branch}"
        probe = self._git(
            "ls-remote", "--exit-code", self._remote, remote_ref,
            check=False, timeout=self.network_timeout,
        )  # fmt: skip
        crash_point("deploy_repo.sync.after_ls_remote")
        if probe.returncode == 2:
            if self.head() is not None:
                self._git("update-ref", "-d", self._tracking_ref)
            return None
        if probe.returncode != 0:
            raise DeployRepoUnreachable(
                f"cannot reach deploy repo {redact_url(self.url)}: {self._stderr(probe)}. "
                "Check deploy_repo.url in configcenter.yaml, the network and credentials"
            )
        listed = probe.stdout.split(b"\t", 1)[0].decode("ascii", "replace").strip()
        current = self.head()
        if current is not None and listed == current:
            # The remote branch is where the cache has it (the ref only ever moves to a
            # commit already in the cache): a fetch would bring nothing.
            crash_point("deploy_repo.sync.after_fetch")
            return current
        fetch = self._git(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
            self._remote, f"+{remote_ref}:{self._tracking_ref}",
            check=False, timeout=self.network_timeout,
        )  # fmt: skip
        if fetch.returncode != 0:
            raise DeployRepoUnreachable(
                f"cannot fetch branch {self.branch!r} from deploy repo "
                f"{redact_url(self.url)}: {self._stderr(fetch)}"
            )
        crash_point("deploy_repo.sync.after_fetch")
        return self.head()

    def head(self) -> str | None:
        """Read from the ref files (loose, then ``packed-refs``): no process, so it is cheap
        to call often."""
        if not self._cache_ready and not (self.cache_dir / "HEAD").exists():
            return None
        return self._read_ref(self._tracking_ref)

    def _read_ref(self, ref: str, depth: int = 0) -> str | None:
        """The sha a ref names, as git resolves it: its loose file (following ``ref:``
        links), else its line in ``packed-refs``; None when it does not exist."""
        try:
            text = (self.cache_dir / ref).read_text("utf-8").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            text = ""
        if text.startswith("ref: ") and depth < 5:
            return self._read_ref(text[len("ref: ") :].strip(), depth + 1)
        if _FULL_SHA.fullmatch(text):
            return text
        try:
            packed = (self.cache_dir / "packed-refs").read_text("utf-8")
        except FileNotFoundError:
            return None
        for line in packed.splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and _FULL_SHA.fullmatch(sha):
                return sha
        return None

    def push(self, sha: str) -> bool:
        """Push and read the outcome from ``--porcelain`` flags, not from prose."""
        if not self._is_commit(_check_rev(sha)):
            raise DeployRepoError(
                f"cannot push {sha!r}: it is not a commit in deploy repo cache {self.cache_dir}; "
                "push the sha that commit() returned"
            )
        target = f"refs/heads/{self.branch}"
        crash_point("deploy_repo.push.before_push")
        proc = self._git(
            "push", "--porcelain", self._remote, f"{sha}:{target}",
            check=False, timeout=self.network_timeout,
        )  # fmt: skip
        status = None
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            fields = line.split("\t")
            if len(fields) >= 3 and len(fields[0]) == 1 and fields[1].endswith(":" + target):
                status = (fields[0], fields[2])
        if status is None:
            raise DeployRepoUnreachable(
                f"cannot push to deploy repo {redact_url(self.url)}: {self._stderr(proc)}"
            )
        flag, summary = status
        if flag == "!":
            if summary.startswith("[rejected]") and (
                "non-fast-forward" in summary or "fetch first" in summary
            ):
                return False
            raise DeployRepoError(
                f"deploy repo {redact_url(self.url)} refused the push to {self.branch!r}: "
                f"{self._redact(summary)}; {self._stderr(proc)}"
            )
        crash_point("deploy_repo.push.after_push")
        self._git("update-ref", self._tracking_ref, sha)
        crash_point("deploy_repo.push.after_ref_update")
        return True

    # -- reading ------------------------------------------------------------------

    def read(self, path: str, rev: str | None = None) -> bytes | None:
        return self.read_many([path], rev).get(path)

    def read_many(self, paths: Sequence[str], rev: str | None = None) -> dict[str, bytes]:
        """All paths in one ``cat-file --batch`` round.

        Few paths are looked up as ``rev:path``. Many are first resolved to blob ids by
        one ``ls-tree``, because git walks the trees from the commit for every
        ``rev:path`` request: 7,500 such lookups take ~1 s, the two-step way ~0.1 s.
        """
        wanted = list(dict.fromkeys(_check_path(p) for p in paths))
        start = self._rev_or_head(rev)
        if start is None or not wanted:
            return {}
        if len(wanted) <= _DIRECT_LOOKUPS:
            requests = [f"{start}^{{commit}}".encode()]
            requests += [f"{start}:{p}".encode() for p in wanted]
            objects = self._cat_batch(requests)
            if objects[0] is None or objects[0][0] != b"commit":
                raise DeployRepoError(
                    f"revision {rev!r} is not a commit in deploy repo cache "
                    f"{self.cache_dir}; pass a sha from head() or log(), after sync()"
                )
            pairs = zip(wanted, objects[1:], strict=True)
            return {p: obj[1] for p, obj in pairs if obj is not None and obj[0] == b"blob"}
        blobs = self._blob_ids(start, sorted({p.split("/", 1)[0] for p in wanted}))
        present = [p for p in wanted if p in blobs]
        objects = self._cat_batch([blobs[p] for p in present])
        pairs = zip(present, objects, strict=True)
        return {p: obj[1] for p, obj in pairs if obj is not None and obj[0] == b"blob"}

    def _cat_batch(self, requests: list[bytes]) -> list[tuple[bytes, bytes] | None]:
        """(type, content) of each requested object, None where git has no such object."""
        out = self._git("cat-file", "--batch", "--buffer", stdin=b"\n".join(requests) + b"\n")
        data = out.stdout
        pos = 0
        result: list[tuple[bytes, bytes] | None] = []
        for _request in requests:
            end = data.index(b"\n", pos)
            header = _BATCH_HEADER.match(data, pos, end)
            pos = end + 1
            if header is None:  # "<request> missing" (or ambiguous): no content follows
                result.append(None)
                continue
            size = int(header["size"])
            result.append((header["type"], data[pos : pos + size]))
            pos += size + 1
        return result

    def _blob_ids(self, start: str, tops: list[str]) -> dict[str, bytes]:
        """Path -> blob id for every file under the top-level entries ``tops`` at ``start``
        (a full commit id's listing is kept: a plan at 5,000 services starts no ls-tree)."""
        key = (start, tuple(tops))
        kept = self._listings().get(key) if _FULL_SHA.fullmatch(start) else None
        if kept is not None:
            return dict(kept)
        blobs = self._list_blobs(start, tops)
        if _FULL_SHA.fullmatch(start):
            self._keep_listing(key, blobs)
        return blobs

    def _listings(self) -> dict[tuple[str, tuple[str, ...]], dict[str, bytes]]:
        if self._kept_listings is None:
            path = self.cache_dir / LISTINGS_FILE
            self._listings_read = stamp(path)  # before reading: never a later version's
            self._kept_listings = _read_listings(path)
        return self._kept_listings

    def _keep_listing(self, key: tuple[str, tuple[str, ...]], blobs: dict[str, bytes]) -> None:
        listings = self._listings()
        listings.pop(key, None)
        listings[key] = dict(blobs)
        for old in list(listings)[:-_LISTINGS_KEPT]:
            del listings[old]
        path = self.cache_dir / LISTINGS_FILE

        def data(changed: bool) -> Data:
            # Another command's listings since this one read the file: theirs, then ours.
            fresh = _read_listings(path) if changed else {}
            merged = {k: v for k, v in fresh.items() if k not in listings}
            merged.update(listings)
            listings.clear()
            listings.update(list(merged.items())[-_LISTINGS_KEPT:])
            return pickled({"version": 1, "entries": listings})

        with contextlib.suppress(OSError):  # a cache: never fails a command
            self._listings_read = save_merged(path, self._listings_read, data, ".listings-")

    def _list_blobs(self, start: str, tops: list[str]) -> dict[str, bytes]:
        proc = self._git("ls-tree", "-r", "-z", start, "--", *tops, check=False)
        if proc.returncode != 0:
            raise DeployRepoError(
                f"revision {start!r} is not a commit in deploy repo cache {self.cache_dir}: "
                f"{self._stderr(proc)}; pass a sha from head() or log(), after sync()"
            )
        blobs: dict[str, bytes] = {}
        for record in proc.stdout.split(b"\0"):
            meta, _tab, name = record.partition(b"\t")
            fields = meta.split(b" ")
            if len(fields) == 3 and fields[1] == b"blob":
                blobs[name.decode("utf-8", "surrogateescape")] = fields[2]
        return blobs

    def read_under(self, prefixes: Sequence[str], rev: str | None = None) -> dict[str, bytes]:
        """Every file at or under each of ``prefixes``: one ``ls-tree`` and one ``cat-file``."""
        clean = [p for p in dict.fromkeys(_check_prefix(p) for p in prefixes) if p]
        start = self._rev_or_head(rev)
        if start is None or not clean:
            return {}
        blobs = self._blob_ids(start, clean)
        present = sorted(p for p in blobs if any(p == c or p.startswith(c + "/") for c in clean))
        objects = self._cat_batch([blobs[p] for p in present]) if present else []
        pairs = zip(present, objects, strict=True)
        return {p: obj[1] for p, obj in pairs if obj is not None and obj[0] == b"blob"}

    def blob_ids(self, prefixes: Sequence[str], rev: str | None = None) -> dict[str, str]:
        """Path -> blob id of every file at or under ``prefixes``: one ``ls-tree``."""
        clean = [p for p in dict.fromkeys(_check_prefix(p) for p in prefixes) if p]
        start = self._rev_or_head(rev)
        if start is None or not clean:
            return {}
        blobs = self._blob_ids(start, clean)
        return {
            p: blob.decode("ascii")
            for p, blob in sorted(blobs.items())
            if any(p == c or p.startswith(c + "/") for c in clean)
        }

    def read_blobs(self, ids: Sequence[str]) -> dict[str, bytes]:
        """Blobs by id (as ``log_changes`` names them) in one ``cat-file --batch``."""
        wanted = list(dict.fromkeys(ids))
        for blob in wanted:
            if not _FULL_SHA.fullmatch(blob):
                raise DeployRepoError(f"{blob!r} is not a full blob id; pass ids from log_changes")
        if not wanted:
            return {}
        objects = self._cat_batch([b.encode() for b in wanted])
        return {
            blob: obj[1]
            for blob, obj in zip(wanted, objects, strict=True)
            if obj is not None and obj[0] == b"blob"
        }

    def log_changes(
        self,
        paths: Sequence[str],
        limit: int | None = 50,
        rev: str | None = None,
        under: Sequence[str] = (),
    ) -> list[tuple[CommitInfo, dict[str, str | None]]]:
        """Commits touching any of ``paths``, newest first, each with the files it changed.

        The files are those at or under ``under`` (all when empty): path -> the new
        blob id (``read_blobs`` reads them), None where the commit deleted it. Two git
        processes however many commits: ``log --raw`` finds the commits and their changed
        blobs (the one pass that compares trees), ``log --no-walk`` reads their messages.
        When every path lies under ``under``, the commits come from the history index
        (`adapters/history_index.py`: each commit's changes in ``under``, kept by commit
        id), and ``log --raw`` compares only commits it has not seen before.
        """
        clean = [p for p in dict.fromkeys(_check_prefix(p) for p in paths) if p]
        start = self._rev_or_head(rev)
        if start is None:
            return []
        if limit is not None and limit < 0:
            limit = None  # as git's --max-count=-1
        wanted = [_check_prefix(u) for u in under]
        changed: dict[str, dict[str, str | None]] | None = None
        if (
            self.history_index
            and _FULL_SHA.fullmatch(start)
            and clean
            and all(u for u in wanted)
            and all(within(p, wanted) for p in clean)
        ):
            changed = self._indexed_changes(start, clean, limit, wanted)
        if changed is None:
            changed = self._raw_changes(start, clean, limit, wanted)
        if not changed:
            return []
        # The messages of exactly those commits, in that order: no second walk comparing
        # trees (at 5,000 services a path-limited walk of 1,000 commits is ~0.5 s of git).
        listed = self._git(
            "log", "--no-walk=unsorted", "-z", f"--format={_LOG_FORMAT}", "--stdin",
            stdin="\n".join(changed).encode() + b"\n", check=False,
        )  # fmt: skip
        if listed.returncode != 0:
            raise DeployRepoError(
                f"cannot read history at revision {start!r} in deploy repo cache "
                f"{self.cache_dir}: {self._stderr(listed)}"
            )
        return [(info, changed.get(info.sha, {})) for info in _parse_log(listed.stdout)]

    def _raw_changes(
        self, start: str, paths: list[str], limit: int | None, wanted: list[str]
    ) -> dict[str, dict[str, str | None]]:
        """``git log --raw start -- paths``: commit -> its changes at or under ``wanted``."""
        args = [f"--max-count={limit}"] if limit is not None else []
        proc = self._git(*_RAW_LOG, *args, start, "--", *paths, check=False)
        if proc.returncode != 0:
            raise DeployRepoError(
                f"cannot read history at revision {start!r} in deploy repo cache "
                f"{self.cache_dir}: {self._stderr(proc)}"
            )
        return {
            sha: changes for sha, (_parents, changes) in _parse_raw(proc.stdout, wanted).items()
        }

    def _indexed_changes(
        self, start: str, paths: list[str], limit: int | None, wanted: list[str]
    ) -> dict[str, dict[str, str | None]] | None:
        """The history index's answer, or None when git must answer: a merge on the way,
        ``start`` is not a commit, git failed.

        Where the walk from ``start`` meets a commit the index lacks, git lists that
        commit and its ancestors up to the index's tips, however few touch ``paths`` (the
        index serves every path of its scope), at most ``chunk`` of them at a time so
        that a short history of a long branch compares about as many commits as plain
        ``git log --max-count`` would."""
        index = ChangeIndex(self.cache_dir / HISTORY_INDEX_DIR, wanted, _index_code()).load()
        chunk, filled = _FIRST_FILL, False
        answer: Found | None = None
        while True:
            walked = index.walk(start, paths, limit)
            if walked is None:
                break  # a merge: what was filled is kept, so the next walk meets it sooner
            found, missing = walked
            if missing is None:
                answer = found
                break
            proc = self._git(
                *_RAW_LOG, "--full-history", "--sparse", "--ignore-missing",
                f"--max-count={chunk}", "--stdin", "--", *wanted,
                stdin="".join([f"{missing}\n", *(f"^{t}\n" for t in index.tips)]).encode(),
                check=False,
            )  # fmt: skip
            listed = _parse_raw(proc.stdout, wanted) if proc.returncode == 0 else {}
            if missing not in listed:
                break
            index.add(missing, listed, complete=len(listed) < chunk)
            chunk, filled = min(chunk * 4, _MAX_FILL), True
        if filled:
            index.close(start)
            index.save()
        if answer is None:
            return None
        return {sha: changes for sha, (_parents, changes) in answer.items()}

    def list_files(self, prefix: str = "", rev: str | None = None) -> list[str]:
        clean = _check_prefix(prefix)
        start = self._rev_or_head(rev)
        if start is None:
            return []
        args = ["ls-tree", "-r", "-z", "--name-only", start]
        if clean:
            args += ["--", clean]
        proc = self._git(*args, check=False)
        if proc.returncode != 0:
            raise DeployRepoError(
                f"cannot list {clean or 'files'} at revision {start!r} in deploy repo cache "
                f"{self.cache_dir}: {self._stderr(proc)}; pass a sha from head() or log()"
            )
        names = [n.decode("utf-8", "surrogateescape") for n in proc.stdout.split(b"\0") if n]
        if clean:
            names = [n for n in names if n == clean or n.startswith(clean + "/")]
        return sorted(names)

    def log(
        self,
        prefix: str | None = None,
        limit: int | None = 50,
        grep: str | None = None,
        rev: str | None = None,
    ) -> list[CommitInfo]:
        """One ``git log`` with NUL-separated fields and trailers parsed by git itself."""
        clean = _check_prefix(prefix)
        if limit is not None and limit < 1:
            raise DeployRepoError(f"log limit must be at least 1 (None for all), got {limit}")
        start = self._rev_or_head(rev)
        if start is None:
            return []
        return self._log([clean] if clean else [], limit, grep, start)

    def _log(
        self, paths: list[str], limit: int | None, grep: str | None, start: str
    ) -> list[CommitInfo]:
        if limit is not None and limit < 1:
            raise DeployRepoError(f"log limit must be at least 1 (None for all), got {limit}")
        args = ["log", "-z", f"--format={_LOG_FORMAT}"]
        if limit is not None:
            args.append(f"--max-count={limit}")
        if grep is not None:
            args += ["--fixed-strings", f"--grep={grep}"]
        args += [start, "--", *paths]
        proc = self._git(*args, check=False)
        if proc.returncode != 0:
            raise DeployRepoError(
                f"cannot read history at revision {start!r} in deploy repo cache "
                f"{self.cache_dir}: {self._stderr(proc)}"
            )
        return _parse_log(proc.stdout)

    # -- writing ------------------------------------------------------------------

    def commit(
        self,
        changes: Changes,
        message: str,
        parent: str | None,
        author: str | None = None,
    ) -> str | None:
        """Write blobs, deletions and the commit as one ``fast-import`` stream."""
        prefixes, deletes, writes = _split_changes(changes)
        if not message.strip() or "\0" in message:
            raise DeployRepoError(
                "commit message is empty or contains a NUL byte; say in text what the commit "
                "changes (compose_message builds one with trailers)"
            )
        if parent is not None and not _FULL_SHA.fullmatch(parent):
            # fast-import's "from" takes a sha or a ref, not a revision expression.
            parent = self._resolve_commit(_check_rev(parent))
        name, email = _ident(author or self.author)
        now = datetime.now().astimezone()
        offset = now.strftime("%z")
        stamp = f"{name} <{email}> {int(now.timestamp())} {offset}".encode()
        body = message.encode("utf-8")
        head: list[bytes] = [
            b"reset " + self._staged_ref.encode() + b"\n",
            b"commit " + self._staged_ref.encode() + b"\n",
            b"author " + stamp + b"\n",
            b"committer " + stamp + b"\n",
            b"data %d\n" % len(body),
            body + b"\n",
        ]
        if parent is not None:
            head.append(b"from " + parent.encode() + b"\n")
        for path in prefixes + deletes:
            head.append(b"D " + _quote(path) + b"\n")
        blobs: list[bytes] = []
        for path, data in writes:
            blobs.append(b"M 100644 inline " + _quote(path) + b"\ndata %d\n" % len(data))
            blobs.append(data)
            blobs.append(b"\n")
        half = len(blobs) // 2
        first = b"".join(head + blobs[:half])
        second = b"".join([*blobs[half:], b"\ndone\n"])

        self._ensure_cache()
        crash_point("deploy_repo.commit.before_import")
        self._fast_import(first, second, parent)
        crash_point("deploy_repo.commit.after_import")
        revs = [self._staged_ref, f"{self._staged_ref}^{{tree}}"]
        if parent is not None:
            revs.append(f"{parent}^{{tree}}")
        out = self._git("rev-parse", *revs).stdout.decode().split()
        sha, tree = out[0], out[1]
        parent_tree = out[2] if parent is not None else EMPTY_TREE
        return None if tree == parent_tree else sha

    def _fast_import(self, first: bytes, second: bytes, parent: str | None) -> None:
        cmd = [
            "git", f"--git-dir={self.cache_dir}", "fast-import",
            "--quiet", "--done", "--force", "--date-format=raw",
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self._env,
        )
        assert proc.stdin is not None and proc.stderr is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(first)
            proc.stdin.flush()
            crash_point("deploy_repo.commit.mid_import")
            proc.stdin.write(second)
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        err = proc.stderr.read().decode("utf-8", "replace").strip()
        proc.stderr.close()
        if proc.wait() == 0:
            return
        if parent is not None and not self._is_commit(parent):
            raise DeployRepoError(
                f"parent {parent!r} is not a commit in deploy repo cache {self.cache_dir}; "
                "call sync() and commit on the head it returns"
            )
        raise DeployRepoError(
            f"git fast-import failed in deploy repo cache {self.cache_dir}: {self._redact(err)}"
        )

    # -- locking ------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, timeout: float = 60.0) -> Iterator[None]:
        """Hold the cache lock; dead or expired owners are taken over with a warning.

        While held, a heartbeat thread refreshes the lock's time every quarter of the
        expiry, so expiry means "owner silent for that long" (gone, or on another host
        and stuck), never "this apply is merely slow".
        """
        if self._lock_token is not None:
            raise DeployRepoError(
                f"lock() on {self.cache_dir} is already held by this object; it is not "
                "reentrant, so take it once around the whole apply"
            )
        self._make_cache_dir()
        token = self._acquire(timeout)
        self._lock_token = token
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(token, stop), name="deploy-repo-lock", daemon=True
        )
        beat.start()
        try:
            crash_point("deploy_repo.lock.acquired")
            yield
            crash_point("deploy_repo.lock.before_release")
        finally:
            stop.set()
            beat.join()
            self._lock_token = None
            self._release(token)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """A short flock serialising inspect-and-write, so two takeovers cannot both win."""
        with open(self.cache_dir / (LOCK_FILE + ".guard"), "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_lock(self) -> dict[str, Any] | None:
        try:
            raw = (self.cache_dir / LOCK_FILE).read_text()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            int(record["pid"]), str(record["host"]), float(record["time"])
        except (ValueError, KeyError, TypeError):
            return {"corrupt": raw[:200]}
        return record

    def _write_lock(self, record: dict[str, Any]) -> None:
        """Write-then-rename, so the lock file is never seen half-written; the temporary
        file is removed whatever happens (a full or read-only disk)."""
        path = self.cache_dir / LOCK_FILE
        tmp = path.with_name(f"{LOCK_FILE}.{record['token']}.tmp")
        try:
            tmp.write_text(json.dumps(record))
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise DeployRepoError(
                f"cannot write the lock file in deploy repo cache {self.cache_dir}: "
                f"{exc.strerror or exc}. Free space there, or set XDG_CACHE_HOME to a writable "
                "directory"
            ) from None

    def _stale_reason(self, record: dict[str, Any]) -> str | None:
        if "corrupt" in record:
            return f"its content is unreadable ({record['corrupt']!r})"
        silent = time.time() - float(record["time"])
        if silent > self.lock_expiry:
            return (
                f"its owner has been silent {silent:.0f}s, past the {self.lock_expiry:.0f}s expiry"
            )
        if record["host"] == _hostname() and not _pid_alive(
            int(record["pid"]), record.get("pid_start")
        ):
            return f"its owner pid {record['pid']} is no longer running"
        return None

    @staticmethod
    def _describe(record: dict[str, Any]) -> str:
        if "corrupt" in record:
            return "an unreadable owner"
        since = float(record.get("since", record["time"]))
        stamp = datetime.fromtimestamp(since).astimezone().isoformat(timespec="seconds")
        return f"pid {record['pid']} on host {record['host']} since {stamp}"

    def _acquire(self, timeout: float) -> str:
        token = uuid.uuid4().hex
        pid = os.getpid()
        stat = _proc_stat(pid)
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            with self._guard():
                record = self._read_lock()
                reason = None if record is None else self._stale_reason(record)
                if record is None or reason is not None:
                    if record is not None:
                        logger.warning(
                            "taking over the deploy repo cache lock %s held by %s: %s",
                            self.cache_dir / LOCK_FILE, self._describe(record), reason,
                        )  # fmt: skip
                    now = time.time()
                    self._write_lock(
                        {
                            "pid": pid,
                            "host": _hostname(),
                            "pid_start": stat[1] if stat else None,
                            "since": now,
                            "time": now,
                            "token": token,
                        }
                    )
                    return token
            if time.monotonic() >= deadline:
                raise DeployRepoLockTimeout(
                    f"deploy repo cache {self.cache_dir} is locked by {self._describe(record)} "
                    f"(lock file {self.cache_dir / LOCK_FILE}); waited {timeout:.0f}s. Wait for "
                    "that apply to finish, or remove the lock file if that process is gone"
                )
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.5)

    def _heartbeat(self, token: str, stop: threading.Event) -> None:
        interval = min(max(self.lock_expiry / 4, 0.05), 60.0)
        while not stop.wait(interval):
            try:
                with self._guard():
                    record = self._read_lock()
                    if record is None or record.get("token") != token:
                        return  # taken over: _release reports it
                    record["time"] = time.time()
                    self._write_lock(record)
            except (OSError, DeployRepoError) as exc:
                # The next beat tries again; past the expiry another apply may take over.
                logger.warning("cannot refresh the deploy repo cache lock: %s", exc)

    def _release(self, token: str) -> None:
        path = self.cache_dir / LOCK_FILE
        with self._guard():
            record = self._read_lock()
            if record is not None and record.get("token") == token:
                path.unlink()
                return
        logger.warning(
            "deploy repo cache lock %s was taken over by %s while we held it; "
            "its owner judged us gone (lock_expiry %.0fs)",
            path, "nobody" if record is None else self._describe(record), self.lock_expiry,
        )  # fmt: skip
