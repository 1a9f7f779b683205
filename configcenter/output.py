"""Printing for the CLI: plans, problems, tables. Colour only on a terminal (rich decides)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from configcenter.core.converge import PlatformServicePlan
from configcenter.core.errors import Problem
from configcenter.core.plan import Plan, ServicePlan, ValueChange
from configcenter.core.values import masked
from configcenter.ports.platform import RolloutStatus
from configcenter.usecases.apply import Reporter

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ACTION_STYLE = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "delete": ("-", "red"),
    "noop": ("=", "dim"),
    "blocked": ("!", "magenta"),
}


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


PROBLEM_LIMIT = 20  # problems printed as text; the rest are counted (--json lists them all)
LINE_LIMIT = 400  # characters of one message or hint printed as text


def _clip(text: str) -> str:
    if len(text) <= LINE_LIMIT:
        return text
    return text[:LINE_LIMIT] + f"... ({len(text) - LINE_LIMIT} more characters; --json has all)"


def print_problems(problems: Iterable[Problem], limit: int = PROBLEM_LIMIT) -> None:
    items = list(problems)
    for p in items[:limit]:
        style = "red" if p.severity == "error" else "yellow"
        line = Text()
        line.append(f"{p.source}: ", style="bold")
        line.append(f"{p.severity}: ", style=style)
        line.append(_clip(p.message))
        err.print(line)
        if p.hint:
            err.print(Text(f"    hint: {_clip(p.hint)}", style="dim"))
    if len(items) > limit:
        err.print(
            Text(f"... and {len(items) - limit} more problem(s) (--json lists them all)", "dim")
        )


def print_table(
    title: str | None,
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    styles: Mapping[int, Mapping[str, str]] | None = None,
) -> None:
    """A table: rich on a terminal; plain, aligned and never truncated otherwise (pipes, CI)."""
    rows = [tuple(str(c) for c in row) for row in rows]
    if out.is_terminal:
        from rich.table import Table

        table = Table(show_edge=False, title=title, title_justify="left")
        for index, column in enumerate(headers):
            table.add_column(column, overflow="fold", no_wrap=index < len(headers) - 1)
        for row in rows:
            cells = []
            for index, cell in enumerate(row):
                colour = (styles or {}).get(index, {}).get(cell, "")
                cells.append(f"[{colour}]{escape(cell)}[/{colour}]" if colour else escape(cell))
            table.add_row(*cells)
        out.print(table)
        return
    if title:
        sys.stdout.write(title + "\n")
    widths = [max(len(r[i]) for r in (tuple(headers), *rows)) for i in range(len(headers))]
    for row in (tuple(headers), *rows):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)] + [row[-1]]
        sys.stdout.write("  ".join(cells).rstrip() + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


class _Lines:
    """Lines to print in one go: plain strings are read as markup, as Console.print does."""

    def __init__(self) -> None:
        self.items: list[Text] = []

    def print(self, item: str | Text) -> None:
        self.items.append(Text.from_markup(item) if isinstance(item, str) else item)

    def flush(self) -> None:
        if self.items:
            out.print(Text("\n").join(self.items))
        self.items = []


def print_plan(
    plan: Plan,
    verbose_noop: bool = False,
    *,
    full: bool = False,
    unverified: Mapping[str, str] | None = None,
) -> None:
    """Only what changes by default; `full` lists unchanged services, every value, whole files."""
    changes = plan.changes
    blocked = [s for s in plan.services if s.action == "blocked"]
    unchanged = [s for s in plan.services if s.action == "noop"]
    commit = f" (config {plan.config_commit[:10]})" if plan.config_commit else ""
    summary = f"{len(changes)} to change, {len(blocked)} blocked, {len(unchanged)} unchanged"
    out.print(Text.assemble(("Plan for ", "bold"), (plan.env, "bold cyan"), commit, f": {summary}"))
    # One print for all services: a Console.print costs ~0.1 ms, and a plan of 500 creates
    # made 2,000 of them.
    lines = _Lines()
    for service in plan.services:
        if service.action == "noop" and not (full or verbose_noop):
            continue
        print_service_plan(
            service, verbose_noop or full, full=full, unverified=unverified, to=lines
        )
    if unchanged and not (full or verbose_noop):
        names = _names([s.service for s in unchanged])
        lines.print(Text(f"  = unchanged: {names}", style="dim"))
        # One line per reason, naming its services: a platform that cannot be reached
        # gives every service of the environment the same one.
        unknown: dict[str, list[str]] = {}
        for service in unchanged:
            if service.secrets_unknown:
                unknown.setdefault(service.secrets_unknown, []).append(service.service)
        for why, services in unknown.items():
            lines.print(
                Text(
                    f"  ? {_names(services)}: secrets not checked for rotation: {why}",
                    style="dim",
                )
            )
    lines.flush()
    if not changes and not blocked:
        out.print(Text("Nothing to do.", style="green"))


#: Services named on one summary line of a plan; the others are counted (--full lists all).
NAMED_ON_A_LINE = 20


def _names(services: list[str]) -> str:
    if len(services) <= NAMED_ON_A_LINE:
        return ", ".join(services)
    shown = ", ".join(services[:NAMED_ON_A_LINE])
    return f"{shown} and {len(services) - NAMED_ON_A_LINE:,} more ({len(services):,} in all)"


def print_service_plan(
    s: ServicePlan,
    verbose_noop: bool = False,
    *,
    full: bool = True,
    unverified: Mapping[str, str] | None = None,
    to: _Lines | None = None,
) -> None:
    """Print one service's plan (into `to` when given, else on stdout)."""
    printer: _Lines | Console = to if to is not None else out
    mark, style = ACTION_STYLE[s.action]
    head = Text.assemble(
        (f"  {mark} ", style), (s.service.ljust(16), "bold"), (s.action.ljust(8), style)
    )
    if s.reasons:
        head.append(" [" + ", ".join(s.reasons) + "]", style="dim")
    printer.print(head)
    if s.action == "noop" and not verbose_noop:
        return
    if s.blocked:
        printer.print(Text(f"      {s.blocked}", style="magenta"))
    if isinstance(s, PlatformServicePlan) and s.step is not None:
        printer.print(Text(f"      {s.step.why}", style="cyan"))
    if s.template_from != s.template_to:
        before, after = s.template_from or "(none)", s.template_to or "(none)"
        printer.print(f"      template {before} -> {after}")
    if s.image_from != s.image_to and (s.image_from or s.image_to):
        printer.print(f"      image    {s.image_from or '(none)'} -> {s.image_to or '(none)'}")
    if unverified and s.service in unverified:
        printer.print(
            Text(
                "      image    unverified: not pinned to a digest (registry unreachable)",
                style="yellow",
            )
        )
    if s.replicas:
        printer.print(f"      replicas: {s.replicas[0]} -> {s.replicas[1]}")
    for key in s.rotated:
        printer.print(Text(f"      ~ {key}: *** (rotated)", style="yellow"))
    if s.maybe_rotated:
        keys = ", ".join(s.maybe_rotated)
        printer.print(
            Text(
                f"      ~ {keys}: *** (may have rotated: the platform cannot tell them apart, "
                f"{s.maybe_rotated_why})",
                style="yellow",
            )
        )
    if s.secrets_unknown:
        printer.print(Text(f"      secrets: cannot tell whether they rotated: {s.secrets_unknown}"))
    stages = release_stage_lines(s)
    if stages:
        printer.print(Text("      stages   " + " -> ".join(stages), style="cyan"))
        resumed = resumed_release(s)
        if resumed:
            printer.print(
                Text(
                    f"               {resumed}'s outcome was never recorded: a stage Job the "
                    "platform shows it completed is not run again",
                    style="cyan",
                )
            )
    if s.action == "create" and not full:
        # Everything is new: counts, not every value and every line (--full lists them).
        values = len(s.added)
        files = ", ".join(s.diffs) or "none"
        printer.print(
            Text(f"      {values} value(s), files: {files}   (--full lists them)", style="dim")
        )
        return
    for label, items, sign, colour in (
        ("changed", s.changed, "~", "yellow"),
        ("added", s.added, "+", "green"),
        ("removed", s.removed, "-", "red"),
    ):
        for key, change in items.items():
            printer.print(_value_line(sign, key, change, colour, label))
    for name, diff in s.diffs.items():
        printer.print(Text(f"      {name}:", style="bold"))
        for line in diff.splitlines():
            colour = (
                "green"
                if line.startswith("+") and not line.startswith("+++")
                else "red"
                if line.startswith("-") and not line.startswith("---")
                else "cyan"
                if line.startswith("@@")
                else "dim"
            )
            printer.print(Text("        " + line, style=colour))


def release_stage_lines(s: ServicePlan) -> list[str]:
    """The stages this release will go through, when its template declares any (a catch-up
    of a recorded release: the stages it has not passed yet, as apply runs them)."""
    from configcenter.core.converge import PlatformServicePlan
    from configcenter.core.stages import still_to_run, template_stages

    if s.config is None or s.action not in ("create", "update"):
        return []
    template = s.config.template
    stages = template_stages(template.doc.data or {}, template.outputs, template.doc.source)
    step = s.step if isinstance(s, PlatformServicePlan) else None
    previous = s.previous
    if (
        step is not None
        and step.kind == "rollout"
        and previous is not None
        and previous.release is not None
        and previous.release.id == step.release
    ):
        stages = still_to_run(stages, previous.release.outcome)
    return [] if stages.empty else stages.describe()


def resumed_release(s: ServicePlan) -> str | None:
    """The release a catch-up rolls out again whose outcome was never recorded (apply skips
    its stage Jobs the platform shows completed: `JobPlatform.run_job`'s `resume`)."""
    from configcenter.core.converge import PlatformServicePlan

    step = s.step if isinstance(s, PlatformServicePlan) else None
    previous = s.previous
    if (
        step is None
        or step.kind not in ("rollout", "record")
        or previous is None
        or previous.release is None
        or previous.release.id != step.release
        or previous.release.outcome != "committed"
    ):
        return None
    return previous.release.id


def _value_line(sign: str, key: str, change: ValueChange, colour: str, label: str) -> Text:
    text = Text(f"      {sign} {key}: ", style=colour)
    if label == "changed":
        text.append(f"{_fmt(change.before)} -> {_fmt(change.after)}")
    elif label == "added":
        text.append(_fmt(change.after))
    else:
        text.append(_fmt(change.before))
    if change.source:
        text.append(f"   ({change.source})", style="dim")
    return text


def print_explain(rows: Iterable[Any], env: str, service: str) -> None:
    out.print(Text(f"{service} in {env}", style="bold"))
    for row in rows:
        entry = row.entry
        line = Text.assemble(("  " + row.key, "bold"), " = ", _fmt(masked(entry.value)))
        out.print(line)
        out.print(Text(f"      from {entry.source} ({entry.layer})", style="dim"))
        for old in reversed(entry.overrode):
            out.print(
                Text(
                    f"      overrides {_fmt(masked(old.value))} from {old.source} ({old.layer})",
                    style="dim",
                )
            )
        if not getattr(row, "consumed", True):
            out.print(
                Text(
                    f"      not consumed by {service}: not in its ENV list, no template of it "
                    "reads it",
                    style="dim",
                )
            )


_BUILD_STEP = re.compile(r"\bSTEP \d+/\d+|^#\d+ \[|^Step \d+/\d+|Writing manifest|Pushing|digest:")


class PrintingReporter(Reporter):
    """Prints apply/deploy progress as it happens."""

    def __init__(self, verbose: bool = False) -> None:
        self.console = err
        self.verbose = verbose
        self._last: dict[str, str] = {}

    def message(self, text: str) -> None:
        self.console.print(f"[dim]·[/dim] {escape(text)}", markup=True, highlight=False)

    def plan_ready(self, plan: Plan) -> None:
        print_plan(plan)

    def build_log(self, service: str, line: str) -> None:
        if not self.verbose:
            # One progress line per build step; the whole log is in the run (and -v).
            if _BUILD_STEP.search(line):
                self.console.print(
                    f"[dim]{escape(service)} |[/dim] {escape(line.strip()[:120])}",
                    markup=True,
                    highlight=False,
                )
            return
        if self.verbose:
            self.console.print(
                f"[dim]{escape(service)} |[/dim] {escape(line)}", markup=True, highlight=False
            )

    def rollout(self, service: str, status: RolloutStatus) -> None:
        line = (
            f"{service}: {status.state} {status.updated}/{status.desired} updated, "
            f"{status.ready} ready, {status.available} available"
            + (f" ({status.reason})" if status.reason else "")
        )
        if self._last.get(service) != line:
            self._last[service] = line
            self.console.print(f"[cyan]↻[/cyan] {escape(line)}", markup=True, highlight=False)


class QuietReporter(PrintingReporter):
    """For --json: nothing but the JSON on stdout."""

    def message(self, text: str) -> None:
        return None

    def plan_ready(self, plan: Plan) -> None:
        return None

    def rollout(self, service: str, status: RolloutStatus) -> None:
        return None


def _print_diff_lines(diff: str, indent: str = "      ") -> None:
    for line in diff.splitlines():
        colour = (
            "green"
            if line.startswith("+") and not line.startswith("+++")
            else "red"
            if line.startswith("-") and not line.startswith("---")
            else "cyan"
            if line.startswith("@@")
            else "dim"
        )
        out.print(Text(indent + line, style=colour))


def print_env_diff(result: Any) -> None:
    """`diff ENV1 ENV2`: per service, what differs, with where each value came from."""
    left, right = result.left, result.right
    differing = [s for s in result.services if not s.same]
    out.print(
        Text.assemble(
            ("Diff ", "bold"),
            (left, "bold cyan"),
            " -> ",
            (right, "bold cyan"),
            f": {len(differing)} service(s) differ, {len(result.services) - len(differing)} same",
        )
    )
    for s in result.services:
        if s.same:
            out.print(Text(f"  = {s.service}", style="dim"))
            continue
        out.print(Text(f"  ~ {s.service}", style="bold yellow"))
        if s.only_in:
            out.print(f"      only in {s.only_in}")
            continue
        for name, (a, b) in s.fields.items():
            out.print(f"      {name.ljust(8)} {_fmt(a)} -> {_fmt(b)}")
        for key, (a, b) in s.values.items():
            line = Text(f"      {key}: ", style="yellow")
            line.append(f"{_fmt(a.value) if a else '(none)'} -> {_fmt(b.value) if b else '(none)'}")
            where = [f"{left}: {a.source}" if a else "", f"{right}: {b.source}" if b else ""]
            line.append("   (" + "; ".join(w for w in where if w) + ")", style="dim")
            out.print(line)
        for name, diff in s.files.items():
            out.print(Text(f"      {name}:", style="bold"))
            _print_diff_lines(diff, "        ")
    for name, why in sorted(result.unverified.items()):
        err.print(Text(f"warning: {name}: image not pinned to a digest ({why})", "yellow"))


def print_release(view: Any, files: bool = True) -> None:
    out.print(Text.assemble(("Release ", "bold"), (view.release, "bold cyan"), f" in {view.env}"))
    for label, value in (
        ("service", view.service),
        ("outcome", view.outcome + (f": {view.reason}" if view.reason else "")),
        ("at", view.at),
        ("commit", view.commit),
        ("template", view.template),
        ("image", view.image),
        ("replicas", str(view.replicas)),
    ):
        out.print(f"  {label.ljust(9)}{value}")
    out.print("  values")
    for key, value in view.values.items():
        out.print(f"    {key} = {_fmt(value)}")
    if files:
        for name, data in view.files.items():
            out.print(Text(f"# ---- {view.env}/{view.service}/{name}", style="bold"))
            out.print(data.decode("utf-8", "replace"), end="", markup=False, highlight=False)
    else:
        out.print("  files    " + ", ".join(view.files))


def print_release_diff(changes: Any) -> None:
    a, b = changes.before, changes.after
    out.print(
        Text.assemble(
            ("Changes ", "bold"), (a.release, "cyan"), " -> ", (b.release, "cyan"), f" in {a.env}"
        )
    )
    if not (changes.fields or changes.changed or changes.added or changes.removed or changes.files):
        out.print(Text("  no difference in template, image, replicas, values or files", "green"))
    for name, (x, y) in changes.fields.items():
        if name == "secrets_generation":  # the values are never shown, not even hashed
            out.print(f"  secrets  generation {x} -> {y} (secret values rotated)")
            continue
        out.print(f"  {name.ljust(9)}{_fmt(x)} -> {_fmt(y)}")
    for key, (x, y) in changes.changed.items():
        out.print(Text(f"  ~ {key}: {_fmt(x)} -> {_fmt(y)}", style="yellow"))
    for key, y in changes.added.items():
        out.print(Text(f"  + {key}: {_fmt(y)}", style="green"))
    for key, x in changes.removed.items():
        out.print(Text(f"  - {key}: {_fmt(x)}", style="red"))
    for name, diff in changes.files.items():
        out.print(Text(f"  {name}:", style="bold"))
        _print_diff_lines(diff, "    ")
