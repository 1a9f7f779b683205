"""Problems found in a config repo, each pointing at a file and line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Source:
    """Where a value came from: a path relative to the config repo, and a 1-based line."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Problem:
    source: Source
    message: str
    hint: str = ""
    severity: Severity = "error"

    def __str__(self) -> str:
        text = f"{self.source}: {self.severity}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class ConfigError(Exception):
    """The config repo cannot be used as it is; carries every problem found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.source, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class ProblemList:
    """Collects problems while loading, so one run reports all of them at once."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def error(self, source: Source, message: str, hint: str = "") -> None:
        self.items.append(Problem(source, message, hint, "error"))

    def warning(self, source: Source, message: str, hint: str = "") -> None:
        self.items.append(Problem(source, message, hint, "warning"))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "warning"]

    def raise_if_errors(self, strict: bool = False) -> None:
        bad = self.items if strict else self.errors
        if bad:
            raise ConfigError(bad)
