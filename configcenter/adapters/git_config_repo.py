"""The config repo as the core reads it: work tree files plus template tags from Git.

GitPython keeps one `git cat-file --batch` process per repo, so reading many
tagged template files costs a round trip each, not a process each.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any


class WorkTreeTemplate:
    """templates/<service> as it is on disk (the HEAD pin)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @cached_property
    def _files(self) -> dict[str, bytes]:
        return {
            p.relative_to(self.root).as_posix(): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }

    @cached_property
    def tree_id(self) -> str:
        h = hashlib.sha256()
        for name, data in self._files.items():
            h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return "worktree:" + h.hexdigest()

    def read(self, name: str) -> bytes | None:
        return self._files.get(name)

    def files(self) -> Mapping[str, bytes]:
        return self._files


class GitTemplate:
    """templates/<service> in a tagged commit; files are read on first use."""

    def __init__(self, tree: Any) -> None:
        self._tree = tree
        self._tree_id: str = tree.hexsha
        self._cache: dict[str, bytes] | None = None

    @property
    def tree_id(self) -> str:
        return self._tree_id

    def files(self) -> Mapping[str, bytes]:
        if self._cache is None:
            self._cache = {
                item.path[len(self._tree.path) + 1 :]: item.data_stream.read()
                for item in self._tree.traverse()
                if item.type == "blob"
            }
        return self._cache

    def read(self, name: str) -> bytes | None:
        if self._cache is not None:
            return self._cache.get(name)
        try:
            blob = self._tree / name
        except KeyError:
            return None
        if blob.type != "blob":
            return None
        data: bytes = blob.data_stream.read()
        return data


class GitConfigRepo:
    """A config repo on disk; Git is optional (no Git: no tags, HEAD pins only)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._repo: Any = None
        self._is_git = (self.root / ".git").exists()

    @property
    def repo(self) -> Any:
        if self._repo is None:
            import git  # GitPython: imported lazily, ~50 ms

            self._repo = git.Repo(self.root)
        return self._repo

    def _git(self, *args: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(self.root), *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            return ""
        return result.stdout

    def head_commit(self) -> str | None:
        if not self._is_git:
            return None
        return self._git("rev-parse", "--verify", "-q", "HEAD").strip() or None

    @cached_property
    def _tags(self) -> dict[str, str]:
        if not self._is_git:
            return {}
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
        if tag is None:
            path = self.root / "templates" / service
            return WorkTreeTemplate(path) if path.is_dir() else None
        commit = self._tags.get(f"{service}/{tag}")
        if commit is None:
            return None
        try:
            tree = self.repo.commit(commit).tree / f"templates/{service}"
        except KeyError:
            return None
        return GitTemplate(tree)

    def create_tag(self, name: str, message: str) -> str:
        """Create an annotated tag at HEAD; refuses to move an existing one."""
        if name in self._tags:
            raise ValueError(f"tag '{name}' already exists; released tags never move")
        self.repo.create_tag(name, message=message)
        self.__dict__.pop("_tags", None)
        return self._tags[name]
