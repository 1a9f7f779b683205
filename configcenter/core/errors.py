"""What goes wrong, typed: problems in a config repo (each at a file and line), user
errors, and platform failures, terminal or transient.

The CLI prints a `ConfigError`'s problems and a `UserError`'s message without a
traceback; a platform failure ends the rollout it happened in (rolled back,
recorded). Any other exception is a bug in configcenter and shows its traceback.
"""

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

    def __init__(self, problems: Iterable[Problem], *, strict: bool = False) -> None:
        self.problems = sorted(problems, key=lambda p: (p.source, p.message))
        #: Raised under --strict: its warnings are what stopped the command.
        self.strict = strict
        super().__init__("\n".join(str(p) for p in self.problems))

    def with_warnings(self, warnings: Iterable[Problem]) -> ConfigError:
        """The same errors with `warnings` beside them (those of the load the command
        went on from: a warning often explains the error, as a misspelt value name does)."""
        extra = sorted(
            (w for w in warnings if w not in self.problems), key=lambda p: (p.source, p.message)
        )
        merged = ConfigError(self.problems, strict=self.strict)
        merged.problems = [*self.problems, *extra]  # after the errors they go with
        merged.args = ("\n".join(str(p) for p in merged.problems),)
        return merged


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
            raise ConfigError(bad, strict=strict)


class UserError(ValueError):
    """Bad input the user can fix: names the file and line when known, and the fix.

    A ValueError so callers that caught ValueError keep working; but only a
    UserError (not any ValueError) is printed as a plain message by the CLI.
    """

    def __init__(self, message: str, *, file: str = "", line: int = 0, hint: str = "") -> None:
        self.message = message
        self.source = Source(file, line) if file else None
        self.hint = hint
        text = f"{self.source}: {message}" if self.source else message
        super().__init__(f"{text} (hint: {hint})" if hint else text)


class PlatformFailure(Exception):
    """A platform refused a request or cannot carry it out; trying again will not help."""


class TransientFailure(Exception):
    """Something configcenter talks to did not answer (network, lock); trying again may help."""
