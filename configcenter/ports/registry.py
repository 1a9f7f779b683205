"""The registry port: just enough of the OCI distribution API to skip known builds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

# The OCI distribution spec's grammar for repository names and tags.
_REPOSITORY_RE = re.compile(
    r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$"
)
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class RegistryCredentials:
    """Username and password (or token) for one registry; the secret never prints."""

    username: str
    password: str = field(repr=False)


class RegistryError(Exception):
    """The registry could not answer (unreachable, bad reply); never carries a secret."""


class RegistryAuthError(RegistryError):
    """The registry refused our credentials (or wants some we do not have)."""


def validate_repository(repository: str) -> None:
    """Reject names every registry would refuse, before any round trip."""
    if not _REPOSITORY_RE.match(repository):
        raise RegistryError(
            f"invalid image repository {repository!r}: use lowercase letters, digits and "
            "separators (. _ -) in path components joined by '/', e.g. 'shop/api'"
        )


def validate_tag(tag: str) -> None:
    if not _TAG_RE.match(tag):
        raise RegistryError(
            f"invalid image tag {tag!r}: up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
        )


class Registry(Protocol):
    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """Digest of repository:tag, or None when the tag does not exist.

        Raises RegistryAuthError when access is refused and RegistryError when the
        registry cannot be reached or answers something unexpected, so a caller
        never mistakes an outage for "not built yet".
        """
        ...

    def close(self) -> None:
        """Release connections; the registry is not used afterwards."""
        ...
