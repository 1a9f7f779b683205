"""Deploy-time resolution of secret references (`env:NAME`, `file:/path`).

Platform adapters call `resolve_secret` only at the moment they hand a value to
the platform, so values never reach Git, plans or records. Errors name the
reference and what to fix, never the value. `k8s:` references are not
resolved here: only the Kubernetes adapter can read them, in the cluster.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from configcenter.core.errors import UserError
from configcenter.core.kinds import REGISTRY

#: Schemes this module resolves; other adapters may support more (k8s:).
SUPPORTED_SCHEMES = ("env", "file")
#: Every scheme a config repo may use, so a typo is told apart from a
#: platform-specific reference.
KNOWN_SCHEMES = REGISTRY.kinds("secret_backend")
#: A secret file larger than this is almost certainly the wrong file.
MAX_FILE_BYTES = 1024 * 1024


class SecretError(UserError):
    """A secret reference cannot be resolved; the message names the ref, never a value."""

    def __init__(self, ref: str, problem: str, fix: str = "") -> None:
        self.ref = ref
        self.problem = problem
        self.fix = fix
        text = f"secret {ref!r}: {problem}"
        super().__init__(f"{text}; {fix}" if fix else text)


def secret_scheme(ref: str) -> str:
    """The scheme of a reference (`env`, `file`, `k8s`), checked for shape."""
    if not isinstance(ref, str) or ":" not in ref:
        raise SecretError(
            str(ref),
            "is not a secret reference",
            "write it as env:NAME, file:/absolute/path or k8s:namespace/name/key",
        )
    scheme, _, rest = ref.partition(":")
    if scheme not in KNOWN_SCHEMES:
        raise SecretError(
            ref,
            f"unknown scheme {scheme!r}",
            "use env:NAME, file:/absolute/path or k8s:namespace/name/key",
        )
    if not rest:
        raise SecretError(ref, f"nothing after '{scheme}:'", "name what to read")
    return scheme


def resolve_secret(ref: str, *, on_resolved: Callable[[str], None] | None = None) -> str:
    """Read the value a reference points at.

    `on_resolved` receives the value before it is returned, so a caller can
    register it for masking (see `configcenter.core.redact`) in one place.
    """
    scheme = secret_scheme(ref)
    rest = ref.partition(":")[2]
    if scheme == "env":
        value = _from_env(ref, rest)
    elif scheme == "file":
        value = _from_file(ref, rest)
    else:
        raise SecretError(
            ref,
            f"'{scheme}:' references can only be resolved by the Kubernetes adapter",
            "use env:NAME or file:/absolute/path for this platform",
        )
    if on_resolved is not None:
        on_resolved(value)
    return value


def _from_env(ref: str, name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise SecretError(
            ref, f"{name!r} is not an environment variable name", "use letters, digits and _"
        )
    value = os.environ.get(name)
    if value is None:
        raise SecretError(
            ref,
            f"environment variable {name} is not set",
            f"export {name} in the environment configcenter runs in",
        )
    if value == "":
        raise SecretError(
            ref, f"environment variable {name} is empty", f"give {name} the secret's value"
        )
    return value


def _from_file(ref: str, raw_path: str) -> str:
    path = Path(raw_path)
    if not path.is_absolute():
        raise SecretError(
            ref,
            "file references must be absolute paths",
            f"write file:/full/path/to/{path.name or 'secret'}",
        )
    try:
        if not path.is_file():
            problem = "is a directory" if path.is_dir() else "does not exist"
            raise SecretError(ref, f"{path} {problem}", "point it at a readable regular file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SecretError(
                ref, f"{path} is larger than {MAX_FILE_BYTES} bytes", "point it at the secret file"
            )
        data = path.read_bytes()
    except PermissionError:
        raise SecretError(
            ref, f"{path} is not readable by this user", "fix the file's permissions"
        ) from None
    except OSError as exc:
        raise SecretError(ref, f"{path} cannot be read ({exc.strerror})") from None
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(ref, f"{path} is not UTF-8 text", "store the secret as text") from None
    # Files written by editors and `echo` end in a newline that is not part of the secret.
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    if value == "":
        raise SecretError(ref, f"{path} is empty", "write the secret's value into it")
    return value
