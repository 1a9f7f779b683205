"""What the core needs from the config repo: its work tree and its template tags.

The core reads through this protocol so it stays free of Git process handling;
`configcenter.adapters.git_config_repo` implements it on GitPython.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol


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


class ConfigSource(Protocol):
    root: Path

    def head_commit(self) -> str | None:
        """The config repo's HEAD commit (None outside Git)."""
        ...

    def tags(self) -> Mapping[str, str]:
        """Template tags: "api/1.4.0" -> commit sha."""
        ...

    def template_tree(self, service: str, tag: str | None) -> TemplateTree | None:
        """templates/<service> at tag `service/tag`, or in the work tree when tag is None."""
        ...
