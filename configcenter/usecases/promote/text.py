"""The texts of a promotion: its merge request's title and description (Markdown:
what changes and why, the target's plan computed against the promoted tree, and
a machine-readable block), its commit message and what the command says."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from configcenter.core.plan import Plan, ServicePlan, ValueChange
from configcenter.core.promotion import Pin, Skipped
from configcenter.ports.deploy_repo import compose_message
from configcenter.ports.forge import MergeRequest
from configcenter.usecases.promote.result import PromotionResult

MARKER = "configcenter-promotion"


#: GitLab rejects descriptions over 1,048,576 characters; diffs are cut well before.
MAX_DIFF_CHARS = 200_000


def title(source: str, target: str, pins: Sequence[Pin]) -> str:
    parts = [f"{p.service} {p.template}" for p in pins]
    title = f"Promote {source} -> {target}: " + ", ".join(parts)
    return title if len(title) <= 200 else f"Promote {source} -> {target}: {len(pins)} services"


def commit_message(source: str, target: str, pins: Sequence[Pin], rebuilt: bool) -> str:
    lines = [
        f"Carries what {source} runs successfully (its last good releases) to {target}.",
        "Values stay per environment and are not copied.",
        "",
    ]
    for p in pins:
        line = f"- {p.service}: template {p.template_before} -> {p.template}"
        if p.image is not None and p.image != p.image_before:
            line += f", image {p.image}"
        lines.append(line + f" ({source} release {p.release.id}, {p.release.outcome})")
    if rebuilt:
        lines += ["", "The branch conflicted with the default branch and was rebuilt from it."]
    trailers = [("Configcenter-Promotion", f"{source} -> {target}")]
    trailers += [("Configcenter-Release", f"{p.service} {p.release.id}") for p in pins]
    return compose_message(title(source, target, pins), "\n".join(lines), trailers)


def nothing_message(source: str, target: str, skipped: Sequence[Skipped], candidates: int) -> str:
    if candidates:
        text = (
            f"Nothing to promote from {source} to {target}: {target} already pins what "
            f"{source} runs successfully."
        )
    else:
        text = f"Nothing to promote from {source} to {target}: no good release to carry."
    if skipped:
        text += " Skipped: " + "; ".join(f"{s.service}: {s.reason}" for s in skipped) + "."
    return text


def done_message(
    result: PromotionResult,
    mr: MergeRequest,
    root: Path,
    pushed_to_origin: bool,
    local_branches: bool,
) -> str:
    """What promote says when done; `local_branches`: the forge keeps merge requests as
    branches of the config repo checkout (the local forge), merged by a command."""
    verb = {"opened": "Opened", "updated": "Updated", "unchanged": "Unchanged:"}[result.status]
    draft = " (draft: see the missing ENV keys)" if result.draft else ""
    downgrades = [f"{p.service}: {d}" for p in result.pins for d in p.downgrades]
    first = (
        f"Downgrade of {result.target} (allowed by --allow-downgrade): "
        + "; ".join(downgrades)
        + ". "
        if downgrades
        else ""
    )
    if local_branches:
        text = (
            f"{first}{verb} local merge request !{mr.iid} for {result.branch} -> "
            f"{result.target_branch}{draft}. To merge it: {mr.web_url}"
        )
        if pushed_to_origin:
            text += f" && git -C {shlex.quote(str(root))} push origin {result.target_branch}"
        return text
    return f"{first}{verb} merge request !{mr.iid}{draft}: {mr.web_url}"


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return "`" + str(text).replace("|", "\\|").replace("`", "'") + "`" if text != "" else "—"


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in `text`, so a diff cannot close it."""
    ticks = 3
    while "`" * ticks in text:
        ticks += 1
    return "`" * ticks


def describe(
    result: PromotionResult, plan: Plan | None, problems: Sequence[str], approvals: int | None
) -> str:
    """The merge request description: what changes and why, the target's plan, a JSON block."""
    src, dst = result.source, result.target
    out = [
        f"## Promote {src} → {dst}",
        "",
        f"Carries what **{src}** runs successfully (its last good releases in the deploy "
        f"repo) to **{dst}**: template tags and images only. Values stay per environment: "
        "nothing of the source's values is copied.",
        "",
        "| service | template | image | carried release |",
        "| --- | --- | --- | --- |",
    ]
    for p in result.pins:
        image = (
            f"{_cell(p.image_before)} → {_cell(p.image)}"
            if p.image is not None and p.image != p.image_before
            else _cell(p.image_before) + " (kept)"
        )
        out.append(
            f"| {p.service} | {_cell(p.template_before)} → {_cell(p.template)} | {image} | "
            f"{p.release.id} ({p.release.outcome}, {p.release.at}) |"
        )
    downgraded = [p for p in result.pins if p.downgrades]
    if downgraded:
        out += [
            "",
            f"> **Downgrade: merging takes {dst} back to older pins than it has now.**",
            ">",
            *(f"> - {p.service}: {d}" for p in downgraded for d in p.downgrades),
        ]
    notes = [f"- **{p.service}**: {n}" for p in result.pins for n in p.notes]
    if notes:
        out += ["", "Passed over:", *notes]
    if result.skipped:
        out += ["", "Not promoted:"]
        out += [f"- **{s.service}**: {s.reason}" for s in result.skipped]
    if result.missing:
        out += [
            "",
            f"> **Draft: {dst} lacks ENV keys the promoted templates need.** Add each one "
            f"under `values:` in `environments/{dst}/<service>.yaml` or "
            f"`environments/{dst}/_env.yaml` on this branch (values are never copied from "
            f"{src}), then run `configcenter promote {src} {dst}` again.",
            ">",
        ]
        for name, keys in result.missing.items():
            out.append(
                f"> - {name}: " + ", ".join(f"`{k}`" for k in keys) + f" (template {name}/"
                f"{next(p.template for p in result.pins if p.service == name)})"
            )
    if approvals:
        out += [
            "",
            f"Approvals required: **{approvals}** (promotion.approvals in configcenter.yaml).",
        ]
    if result.rebuilt:
        out += [
            "",
            "The branch conflicted with the default branch and was rebuilt from it "
            "(force-pushed with a lease); earlier versions are in this request's history.",
        ]
    out += ["", f"### Plan for {dst} after merge", ""]
    if plan is None:
        out.append(f"Not computed: {dst} does not load with these pins yet:")
        out += [f"- `{p}`" for p in problems]
    else:
        out += _describe_plan(plan)
    data = {
        "from": src,
        "to": dst,
        "branch": result.branch,
        "target_branch": result.target_branch,
        "services": {
            p.service: {
                "template": p.template,
                "image": p.image or p.image_before,
                "release": p.release.id,
            }
            for p in result.pins
        },
        "skipped": {s.service: s.reason for s in result.skipped},
        "missing_env_keys": result.missing,
        "downgrades": {
            p.service: [d.to_json() for d in p.downgrades] for p in result.pins if p.downgrades
        },
        "approvals": approvals or 0,
    }
    block = json.dumps(data, sort_keys=True).replace(">", "\\u003e")
    out += ["", f"<!-- {MARKER}", block, "-->", ""]
    return "\n".join(out)


def _describe_plan(plan: Plan) -> list[str]:
    changes = plan.changes
    blocked = [s for s in plan.services if s.action == "blocked"]
    out = [
        f"Merging applies {plan.env} (`configcenter apply {plan.env}`): {len(changes)} to "
        f"change, {len(blocked)} blocked, "
        f"{len(plan.services) - len(changes) - len(blocked)} unchanged.",
    ]
    budget = MAX_DIFF_CHARS
    for s in plan.services:
        if s.action == "noop":
            continue
        out += [
            "",
            f"#### {s.service}: {s.action}" + (f" ({', '.join(s.reasons)})" if s.reasons else ""),
        ]
        if s.blocked:
            out.append(f"Blocked: {s.blocked}")
        if s.template_from != s.template_to:
            out.append(f"- template: {_cell(s.template_from or '')} → {_cell(s.template_to or '')}")
        if "image" in s.reasons:
            out.append(f"- image: {_cell(s.image_from or '')} → {_cell(s.image_to or '')}")
        if s.replicas is not None:
            out.append(f"- replicas: {s.replicas[0]} → {s.replicas[1]}")
        out += _values_table(s)
        if s.diffs:
            out += ["", f"<details><summary>Rendered file diffs ({len(s.diffs)})</summary>", ""]
            for name, diff in s.diffs.items():
                if len(diff) > budget:
                    out += [
                        f"`{name}`: diff left out ({len(diff)} characters); see "
                        f"`configcenter plan {plan.env}`",
                        "",
                    ]
                    continue
                budget -= len(diff)
                fence = _fence(diff)
                out += [f"`{name}`", "", f"{fence}diff", diff.rstrip("\n"), fence, ""]
            out.append("</details>")
    return out


def _values_table(s: ServicePlan) -> list[str]:
    rows: list[tuple[str, str, ValueChange]] = [
        *(("changed", k, v) for k, v in s.changed.items()),
        *(("added", k, v) for k, v in s.added.items()),
        *(("removed", k, v) for k, v in s.removed.items()),
    ]
    if not rows:
        return []
    out = ["", "| value | change | from | to | source |", "| --- | --- | --- | --- | --- |"]
    for kind, key, change in rows:
        before = "—" if kind == "added" else _cell(change.before)
        after = "—" if kind == "removed" else _cell(change.after)
        out.append(f"| `{key}` | {kind} | {before} | {after} | {change.source or '—'} |")
    return out
