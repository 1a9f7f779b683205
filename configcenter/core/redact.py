"""Masking of resolved secret values in text that leaves the process.

Secrets are resolved only at deploy time; whoever resolves one registers its
value here, and every log line, record and error that could carry it is passed
through `redact` before it is stored or shown.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

MASK = "***"
#: Shorter values are not masked: hiding every "on" or "1" would wreck logs
#: while protecting nothing worth the name.
MIN_SECRET_LENGTH = 4


class Redactor:
    """Replaces registered secret values with `***`; safe to share between threads."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for value in values:
            self.register(value)

    def register(self, value: str) -> None:
        """Remember a resolved secret; values under 4 characters are ignored."""
        if not isinstance(value, str):
            raise TypeError(f"secret values must be str, got {type(value).__name__}")
        candidates = {value, value.strip()}
        with self._lock:
            added = {v for v in candidates if len(v) >= MIN_SECRET_LENGTH} - self._values
            if not added:
                return
            self._values |= added
            # Longest first, so a secret that contains another is masked whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def redact(self, text: str) -> str:
        with self._lock:
            pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def redact_data(self, data: object) -> object:
        """Redact every string (keys too) inside JSON-like data: dicts, lists, tuples."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, Mapping):
            return {
                (self.redact(k) if isinstance(k, str) else k): self.redact_data(v)
                for k, v in data.items()
            }
        if isinstance(data, list | tuple):
            return [self.redact_data(v) for v in data]
        return data
