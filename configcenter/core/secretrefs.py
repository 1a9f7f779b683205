"""Secret placeholders in rendered text: `${secret:KIND:REF}`.

A secret value renders as its placeholder wherever a template uses it (the ENV
list, another key of an `.env` output, the middle of a config file). The deploy
repo keeps the placeholder; a platform adapter finds the placeholders in what
it delivers and substitutes the resolved values at deploy time, so a running
container never sees a placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: What `SecretRef.__str__` renders. A reference never contains `}` or whitespace.
PLACEHOLDER = re.compile(r"\$\{secret:([a-z0-9]+:[^}\s]+)\}")
MARKER = "${secret:"


def has_refs(text: str) -> bool:
    return MARKER in text and PLACEHOLDER.search(text) is not None


def find_refs(text: str) -> list[str]:
    """The references (`env:NAME`, `file:/p`, `k8s:ns/n/k`) in `text`, each once, in order."""
    seen: dict[str, None] = {}
    if MARKER in text:
        for match in PLACEHOLDER.finditer(text):
            seen.setdefault(match.group(1), None)
    return list(seen)


def substitute(text: str, resolve: Callable[[str], str]) -> str:
    """`text` with every placeholder replaced by `resolve(ref)`."""
    if MARKER not in text:
        return text
    return PLACEHOLDER.sub(lambda match: resolve(match.group(1)), text)


@dataclass(frozen=True)
class SecretsRotated:
    """A platform's answer when none of the candidate generations holds the values a
    release's secret references resolve to now: which references rotated.

    Compared with the first candidate generation (the release's own). `refs` resolve to a
    value other than that generation holds; `together` are references that may have rotated
    but the platform cannot tell (they share one entry that differs, such as a config file
    holding two secrets, or the generation's Secrets are gone), and `why` says so. No value,
    and nothing derived from one, is ever part of it.
    """

    refs: tuple[str, ...] = ()
    together: tuple[str, ...] = ()
    why: str = ""


def separate_rotated(
    entries: Mapping[str, tuple[list[str], bool]], *, what: str = "entry"
) -> SecretsRotated:
    """Which references rotated, from a per-entry comparison with a generation.

    `entries` maps an entry's name (an environment key, a file: never a value) to the
    references its text holds and whether the generation holds exactly what it resolves to
    now. An entry that matches proves its references unchanged; one that differs and holds
    one reference not proven unchanged names that one; the others of a differing entry
    (not proven unchanged, not known to rotate) cannot be told apart.
    """
    unchanged = {ref for refs, same in entries.values() if same for ref in refs}
    rotated: dict[str, None] = {}
    unclear: dict[str, list[str]] = {}
    for name, (refs, same) in sorted(entries.items()):
        if same:
            continue
        suspects = [ref for ref in refs if ref not in unchanged]
        if len(suspects) == 1:
            rotated.setdefault(suspects[0], None)
        elif suspects:
            unclear[name] = suspects
    together: dict[str, None] = {}
    names: list[str] = []
    for name, suspects in unclear.items():
        left = [ref for ref in suspects if ref not in rotated]
        if left:
            names.append(name)
            together.update(dict.fromkeys(left))
    why = ""
    if together:
        holds = (
            f"{what} {names[0]} holds" if len(names) == 1 else f"{what}s {', '.join(names)} hold"
        )
        why = f"{holds} more than one secret, compared as a whole"
    return SecretsRotated(tuple(sorted(rotated)), tuple(sorted(together)), why)
