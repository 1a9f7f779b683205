"""What the core needs from the config repo: its work tree and its template tags.

The core reads through `ConfigSource` only, so it stays free of file and Git
handling: `configcenter.adapters.git_config_repo` implements it on the work tree
and Git; `MemorySource` below holds a config repo in memory (for tests
that need files, not Git).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from configcenter.core.yamldoc import ParseCache


class TemplateTree(Protocol):
    """The files of one template version (a tag's tree, or the work tree for HEAD)."""

    @property
    def tree_id(self) -> str:
        """Content id: the git tree sha, or a digest of the work-tree files."""
        ...

    def read(self, name: str) -> bytes | None: ...

    def has(self, name: str) -> bool:
        """Whether file `name` exists, without reading it (loading checks every output)."""
        ...

    def files(self) -> Mapping[str, bytes]: ...

    @property
    def refused(self) -> Sequence[tuple[str, str]]:
        """Entries that are not regular files (links, submodules, ...): (name, kind).

        They are never read: `read`, `has` and `files` leave them out. A name of ""
        means the template directory itself.
        """
        ...


class ConfigSource(Protocol):
    root: Path

    @property
    def parse_cache(self) -> ParseCache | None:
        """YAML parses kept by content digest across runs; None to parse every time."""
        ...

    def read_file(self, rel: str, max_bytes: int) -> bytes | None:
        """The bytes of regular file `rel` of the work tree; None when it does not exist.

        Raises RepoPathError when `rel` or a directory on its way is a link or not a
        regular file, FileTooLarge past `max_bytes`.
        """
        ...

    def list_dir(self, rel: str) -> list[tuple[str, str]] | None:
        """(name, kind) of every entry of work-tree directory `rel`, sorted; None when absent.

        Raises RepoPathError when `rel`, or a directory on its way, is not a directory.
        """
        ...

    def path_kind(self, rel: str) -> str | None:
        """What `rel` is in the work tree ("file", "directory", "symbolic link", ...); None
        when absent.

        Raises RepoPathError when a directory on its way is a link or not a directory.
        """
        ...

    def head_commit(self) -> str | None:
        """The config repo's HEAD commit (None outside Git)."""
        ...

    def tags(self) -> Mapping[str, str]:
        """Template tags: "api/1.4.0" -> commit sha."""
        ...

    def template_tree(self, service: str, tag: str | None) -> TemplateTree | None:
        """templates/<service> at tag `service/tag`, or in the work tree when tag is None."""
        ...


# -- what a source refuses to read -----------------------------------------------------------------
#
# A committer controls every path in the config repo, links included: a source never follows
# a link and reads only regular files (configcenter.adapters.work_tree on disk).


class RepoPathError(Exception):
    """A path in the config repo is a link or another non-regular file; carries where."""

    def __init__(self, rel: str, kind: str) -> None:
        self.rel = rel
        self.kind = kind
        super().__init__(f"{rel} is a {kind}")


class FileTooLarge(Exception):
    def __init__(self, rel: str, size: int, limit: int) -> None:
        self.rel = rel
        self.size = size
        self.limit = limit
        super().__init__(f"{rel} is {size} bytes, over the limit of {limit}")


LINK_HINT = (
    "configcenter reads the config repo as plain files and never follows links: replace the "
    "link with a regular file (git rm the link, commit the file itself)"
)


# -- a config repo in memory ----------------------------------------------------------------------


def content_id(files: Mapping[str, bytes]) -> str:
    """A digest of a template's files (names and contents), for trees Git has not hashed."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


class MemoryTree:
    """One template version's files, in memory."""

    def __init__(self, files: Mapping[str, bytes], refused: Sequence[tuple[str, str]] = ()) -> None:
        self._files = dict(files)
        self._refused = list(refused)

    @property
    def tree_id(self) -> str:
        return "memory:" + content_id(self._files)

    def read(self, name: str) -> bytes | None:
        return self._files.get(name)

    def has(self, name: str) -> bool:
        return name in self._files

    def files(self) -> Mapping[str, bytes]:
        return self._files

    @property
    def refused(self) -> Sequence[tuple[str, str]]:
        return self._refused


class MemorySource:
    """A config repo held in memory: work-tree files by path, and released templates.

    `files` maps repository paths (`environments/dev/api.yaml`) to their bytes (or
    text); directories are implied by the paths. `tags` maps a template tag
    (`api/1.0.0`) to the files of templates/<service> at that tag, by name inside
    it (`template.yaml`, `app.env.j2`). `head` is the commit HEAD stands for (None:
    not a Git repo). Nothing is read from disk: `root` only names the repo in
    messages.
    """

    def __init__(
        self,
        files: Mapping[str, bytes | str],
        tags: Mapping[str, Mapping[str, bytes | str]] | None = None,
        *,
        head: str | None = None,
        root: Path = Path("/config-repo"),
    ) -> None:
        self.root = root
        self.head = head
        self._files = {_clean(rel): _bytes(data) for rel, data in files.items()}
        self._tags = {
            tag: {_clean(name): _bytes(data) for name, data in tree.items()}
            for tag, tree in (tags or {}).items()
        }
        self._dirs = {
            str(parent)
            for rel in self._files
            for parent in PurePosixPath(rel).parents
            if str(parent) != "."
        }

    @property
    def parse_cache(self) -> ParseCache | None:
        return None

    def path_kind(self, rel: str) -> str | None:
        rel = _clean(rel)
        for parent in reversed(PurePosixPath(rel).parents):
            if str(parent) != "." and str(parent) in self._files:
                raise RepoPathError(str(parent), "file")  # as on disk: not a directory
        if rel in self._files:
            return "file"
        return "directory" if rel in self._dirs or rel == "" else None

    def read_file(self, rel: str, max_bytes: int) -> bytes | None:
        kind = self.path_kind(rel)
        if kind is None:
            return None
        if kind != "file":
            raise RepoPathError(rel, kind)
        data = self._files[_clean(rel)]
        if len(data) > max_bytes:
            raise FileTooLarge(rel, len(data), max_bytes)
        return data

    def list_dir(self, rel: str) -> list[tuple[str, str]] | None:
        rel = _clean(rel)
        kind = self.path_kind(rel)
        if kind is None:
            return None
        if kind != "directory":
            raise RepoPathError(rel, kind)
        prefix = f"{rel}/" if rel else ""
        names = {
            path[len(prefix) :].split("/", 1)[0]
            for path in (*self._files, *self._dirs)
            if path.startswith(prefix) and path != rel
        }
        return sorted((name, self.path_kind(prefix + name) or "file") for name in names)

    def head_commit(self) -> str | None:
        return self.head

    def tags(self) -> Mapping[str, str]:
        """Each tag's commit: a digest of its files, so equal trees share a commit."""
        return {tag: content_id(tree)[:40] for tag, tree in self._tags.items()}

    def template_tree(self, service: str, tag: str | None) -> MemoryTree | None:
        if tag is not None:
            tree = self._tags.get(f"{service}/{tag}")
            return None if tree is None else MemoryTree(tree)
        rel = f"templates/{service}"
        kind = self.path_kind(rel)
        if kind is None:
            return None
        if kind != "directory":
            return MemoryTree({}, [("", kind)])
        prefix = rel + "/"
        return MemoryTree(
            {
                path[len(prefix) :]: data
                for path, data in self._files.items()
                if path.startswith(prefix)
            }
        )


def _clean(rel: str) -> str:
    return rel.strip("/")


def _bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data
