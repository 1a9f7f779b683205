"""What GitLab events make happen: a merged promotion applies its target, a push applies dev.

`serve` receives `POST /hooks/gitlab` and calls `handle_gitlab_webhook` with the
raw headers and body. The token is checked first (nothing runs for a wrong
one), then the config repo checkout that `ws_factory` opens is fast-forwarded
to the merged default branch, and the environment is applied through
`apply_env`, the same code path as `configcenter apply`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from configcenter.usecases.apply import ApplyOptions, ApplyResult, Reporter, apply_env
from configcenter.usecases.promote import PromotionError, open_git, parse_branch
from configcenter.usecases.webhooks import (
    GitLabEvent,
    UnsupportedEvent,
    parse_gitlab_event,
    verify_gitlab_token,
)
from configcenter.usecases.workspace import Workspace

WorkspaceFactory = Callable[[], Workspace]

if TYPE_CHECKING:
    from configcenter.adapters.config_git import ConfigGit


class WebhookUnauthorized(Exception):
    """The request did not carry the webhook secret (answer 401); nothing was run."""

    status = 401


def webhook_secret(ws: Workspace) -> str:
    """forge.webhook_token from configcenter.yaml, resolved and registered for masking."""
    from configcenter import wiring

    settings = ws.config.project.forge or {}
    ref = settings.get("webhook_token")
    if not isinstance(ref, dict) or "secret" not in ref:
        raise PromotionError(
            "forge.webhook_token is not set as a secret reference: add "
            'webhook_token: {secret: "env:GITLAB_WEBHOOK_TOKEN"} under forge: in '
            "configcenter.yaml and enter the same value as the webhook's Secret token in GitLab"
        )
    try:
        return wiring.resolve_secret(str(ref["secret"]), ws.redactor)
    except wiring.SecretError as error:
        raise PromotionError(f"forge.webhook_token: {error}") from None


def handle_gitlab_webhook(
    ws_factory: WorkspaceFactory,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None = None,
    reporter: Reporter | None = None,
) -> TriggerResults:
    """Check the token, parse the event, act on it. `secret` overrides forge.webhook_token."""
    expected = secret if secret is not None else webhook_secret(ws_factory())
    given = {k.lower(): v for k, v in headers.items()}.get("x-gitlab-token")
    if not verify_gitlab_token(expected, given):
        raise WebhookUnauthorized(
            "X-Gitlab-Token is missing or wrong: nothing was run. Set the webhook's Secret "
            "token in GitLab to the value forge.webhook_token points at"
        )
    try:
        event = parse_gitlab_event(headers, body)
    except UnsupportedEvent:
        return TriggerResults()
    return handle_gitlab_event(ws_factory, event, reporter)


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
    ws_source: WorkspaceFactory | Workspace,
    event: GitLabEvent,
    reporter: Reporter | None = None,
    *,
    polled: bool = False,
) -> TriggerResults:
    """Apply what the event asks for; an empty list for events that ask for nothing.

    `polled`: the push was found by serve's Git poll, not delivered (runs say so).

    A merged promotion request applies its target environment; a push to the
    default branch applies every environment with `auto_apply: true`. Given a
    factory, the checkout it opens is fast-forwarded first and a fresh
    Workspace reads the merged config; given a Workspace, the caller has
    already updated the checkout (serve does) and it is only checked.
    """
    factory: WorkspaceFactory = ws_source if callable(ws_source) else (lambda: ws_source)
    ws = factory()
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
    fetch = callable(ws_source)
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
        pull(git, default, event.merge_commit_sha, fetch=fetch)
        options = ApplyOptions(trigger="webhook", actor=f"gitlab merge request !{event.iid}")
        return TriggerResults([apply_env(factory(), parsed[1], options, reporter)])
    if event.branch != default:
        return TriggerResults(
            reason=f"push to {event.ref!r}: only pushes to the default branch {default!r} apply"
        )
    pull(git, default, event.after, fetch=fetch)
    fresh = factory()
    envs = [e for e in fresh.config.project.environments if fresh.config.environment(e).auto_apply]
    if not envs:
        return TriggerResults(reason=f"push to {default}: no environment has auto_apply: true")
    if polled:
        options = ApplyOptions(trigger="poll", actor=f"poll: {default} moved")
    else:
        options = ApplyOptions(trigger="webhook", actor=f"gitlab push to {default}")
    return TriggerResults(apply_env(fresh, env, options, reporter) for env in envs)


def pull(git: ConfigGit, default: str, expect: str | None, *, fetch: bool = True) -> None:
    """Fast-forward the checkout to origin's default branch, which must contain `expect`."""
    if fetch and git.has_origin():
        git.fetch("origin")
        current = git.current_branch()
        if current != default:
            raise PromotionError(
                f"the config repo checkout {git.root} is on {current or 'a detached HEAD'}, "
                f"not {default}: check out {default} there (serve applies the default branch)"
            )
        if not git.fast_forward(f"refs/remotes/origin/{default}"):
            raise PromotionError(
                f"cannot fast-forward {git.root} to origin/{default}: the checkout has local "
                "commits or changes; serve's checkout must only follow the remote"
            )
    if expect and not git.ok("merge-base", "--is-ancestor", expect, "HEAD"):
        raise PromotionError(
            f"commit {expect[:12]} from the webhook is not on {default} in {git.root} "
            "after fetching: check that the checkout's origin is the project that sent it"
        )
