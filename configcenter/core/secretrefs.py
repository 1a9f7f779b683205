"""Secret placeholders in rendered text: `${secret:KIND:REF}`.

A secret value renders as its placeholder wherever a template uses it (the ENV
list, another key of an `.env` output, the middle of a config file). The deploy
repo keeps the placeholder; a platform adapter finds the placeholders in what
it delivers and substitutes the resolved values at deploy time, so a running
container never sees a placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Callable

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
