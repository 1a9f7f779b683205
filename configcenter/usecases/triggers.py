"""What GitLab events make happen: a merged promotion applies its target, a push applies dev.

There is one webhook path. `serve` answers `POST /hooks/gitlab` (the token is
checked there, nothing is stored for a wrong one), stores the delivery as a job,
and a worker fast-forwards its config repo checkout to the upstream, then calls
`handle_gitlab_event` with a Workspace of it. The environment is applied through
`apply_env`, the same code path as `configcenter apply`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from configcenter.usecases.apply import ApplyOptions, ApplyResult, Reporter, apply_env
from configcenter.usecases.promote import PromotionError, open_git, parse_branch
from configcenter.usecases.webhooks import GitLabEvent
from configcenter.usecases.workspace import Workspace

if TYPE_CHECKING:
    from configcenter.adapters.config_git import ConfigGit


class TriggerResults(list[ApplyResult]):
    """The applies an event caused, in order; `runs` and `summary` are for serve's job log.

    `reason` says why an event applied nothing.
    """

    def __init__(self, results: Iterable[ApplyResult] = (), *, reason: str = "") -> None:
        super().__init__(results)
        self.reason = reason

    @property
    def runs(self) -> list[str]:
        return [r.run_id for r in self if r.run_id]

    @property
    def summary(self) -> str:
        if not self:
            return self.reason or "nothing to apply"
        return "; ".join(
            f"{r.env}: {r.outcome}" + (f" ({r.commit[:10]})" if r.commit else "") for r in self
        )


def handle_gitlab_event(
    ws: Workspace,
    event: GitLabEvent,
    reporter: Reporter | None = None,
    *,
    polled: bool = False,
) -> TriggerResults:
    """Apply what the event asks for; an empty list for events that ask for nothing.

    `polled`: the push was found by serve's Git poll, not delivered (runs say so).

    A merged promotion request applies its target environment; a push to the
    default branch applies every environment with `auto_apply: true`. The
    caller (serve) has already fast-forwarded the checkout `ws` reads; the
    event's commit is only checked to be on the default branch there.
    """
    config = ws.config
    forge = config.project.forge or {}
    configured = str(forge.get("project", "") or "")
    if forge.get("kind") == "gitlab" and not event.matches_project(configured):
        where = f"{event.project or '?'} (id {event.project_id})"
        return TriggerResults(
            reason=f"the event is about project {where}, not forge.project {configured!r}"
        )
    git = open_git(ws.root)
    default = git.default_branch()
    if event.kind == "merge_request":
        if not event.merged:
            return TriggerResults(
                reason=f"merge request !{event.iid} {event.action or 'event'} "
                f"(state {event.state}) is not its merge: only the merge applies a target"
            )
        if event.target_branch != default or event.source_branch is None:
            return TriggerResults(
                reason=f"merge request !{event.iid} targets {event.target_branch!r}, "
                f"not the default branch {default!r}"
            )
        parsed = parse_branch(event.source_branch, config.project.environments)
        if parsed is None:
            return TriggerResults(
                reason=f"merge request !{event.iid} from {event.source_branch!r} "
                "is not a promotion branch"
            )
        check_contains(git, default, event.merge_commit_sha)
        options = ApplyOptions(
            trigger="webhook", actor=f"gitlab merge request !{event.iid}{by(event)}"
        )
        return TriggerResults([apply_env(ws, parsed[1], options, reporter)])
    if event.branch != default:
        return TriggerResults(
            reason=f"push to {event.ref!r}: only pushes to the default branch {default!r} apply"
        )
    check_contains(git, default, event.after)
    # The caller may have loaded only the auto_apply environments (serve's push job).
    envs = [
        e
        for e in config.project.environments
        if e in config.environments and config.environment(e).auto_apply
    ]
    if not envs:
        return TriggerResults(reason=f"push to {default}: no environment has auto_apply: true")
    if polled:
        options = ApplyOptions(trigger="poll", actor=f"poll: {default} moved")
    else:
        options = ApplyOptions(trigger="webhook", actor=f"gitlab push to {default}{by(event)}")
    return TriggerResults(apply_env(ws, env, options, reporter) for env in envs)


def by(event: GitLabEvent) -> str:
    """` by <user>` for a run's actor, when GitLab named who pushed or merged."""
    return f" by {event.user}" if event.user else ""


def check_contains(git: ConfigGit, default: str, expect: str | None) -> None:
    """The checkout (already fast-forwarded by serve) must contain the event's commit."""
    if expect and not git.ok("merge-base", "--is-ancestor", expect, "HEAD"):
        raise PromotionError(
            f"commit {expect[:12]} from the webhook is not on {default} in {git.root} "
            "after fetching: check that the checkout's origin is the project that sent it"
        )
