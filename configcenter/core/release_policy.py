"""The release policy: what a rollout's end makes of a service's state record.

A release is rolled out (pre-deploy jobs, apply, wait, verification); when it is
over, the policy decides what comes next:

* healthy: the release is the service's last good one;
* failed with an earlier good release: go back to it, by rolling it out again
  (`GoBack(roll_out=True)`), or, when nothing of the failed release reached the
  platform (a pre-deploy job failed), by putting only its record back
  (`roll_out=False`);
* failed without one: the release is left failed (and blocked until its inputs
  change or `--retry`).

After going back, `after_going_back` says how the release ended (rolled back,
or failed when the earlier release did not become healthy either).

Pure: the use cases (`configcenter.usecases.apply`) roll out, read the earlier
release's record and files from the deploy repo, and write what is decided here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from configcenter.core.state import Release, ServiceState

Outcome = Literal["healthy", "failed", "rolled_back"]


def failure_reason(reason: str, message: str = "") -> str:
    """How a failed rollout reads in logs and records: `reason: message`."""
    return reason + (f": {message}" if message else "")


@dataclass(frozen=True)
class Settled:
    """The release's rollout is over: how it ended and the service's record from now on."""

    outcome: Outcome
    release: str  # the id of the release rolled out
    reason: str
    record: ServiceState
    #: The record is the earlier good release's: its files go back to the deploy repo too.
    restored: bool = False


@dataclass(frozen=True)
class GoBack:
    """The release failed and an earlier good release exists: go back to it."""

    to: Release  # the last good release
    release: Release  # the failed one
    reason: str
    #: True: roll `to` out again. False: nothing of the failed release was applied (the
    #: platform still runs `to`), so only the deploy repo's record goes back.
    roll_out: bool


def healthy(current: ServiceState) -> Settled:
    """`current`'s release became healthy: it is the last good release from now on."""
    release = _release(current)
    good = replace(release, outcome="healthy")
    return Settled("healthy", release.id, "", replace(current, release=good, last_good=good))


def left_failed(current: ServiceState, reason: str) -> Settled:
    """`current`'s release failed and stays the recorded one (failed, so it is blocked)."""
    release = _release(current)
    failed = replace(release, outcome="failed", reason=reason)
    last_failed = failed
    good = current.last_good
    if good is not None and good.id == release.id and current.last_failed is not None:
        # The last good release failed to come back (a catch-up refused by the platform):
        # the release that failed before keeps its inputs blocked, never retried by it.
        last_failed = current.last_failed
    return Settled(
        "failed", release.id, reason, replace(current, release=failed, last_failed=last_failed)
    )


def after_rollout(
    current: ServiceState, is_healthy: bool, reason: str = "", *, applied: bool = True
) -> Settled | GoBack:
    """What comes after rolling out `current`'s release.

    `is_healthy`: the rollout (and its verification) passed. `reason`: why not.
    `applied`: anything of the release reached the platform (False when a pre-deploy
    job failed, before the workload was applied).
    """
    release = _release(current)
    if applied and is_healthy:
        return healthy(current)
    last_good = current.last_good
    if last_good is None or last_good.id == release.id:
        return left_failed(current, reason)
    return GoBack(last_good, release, reason, roll_out=applied)


def after_going_back(
    current: ServiceState,
    back: GoBack,
    snapshot: ServiceState,
    is_healthy: bool = True,
    reason: str = "",
) -> Settled:
    """How the failed release ended once `back.to` was rolled out again (or, for
    `roll_out=False`, only recorded again).

    `snapshot`: the record `back.to` was committed with. `is_healthy` / `reason`: the
    outcome of rolling `back.to` out (unused when it was not rolled out).
    """
    failed = replace(back.release, outcome="failed", reason=back.reason)
    if not back.roll_out:
        # The platform still runs the last good release: the record goes back to it, with
        # this release failed (so the same inputs are blocked).
        kept = replace(back.to, outcome="healthy")
        record = replace(snapshot, release=kept, last_good=kept, last_failed=failed)
        return Settled("failed", back.release.id, back.reason, record, restored=True)
    if not is_healthy:
        why = f"{back.reason}; rollback: {reason}"
        not_back = replace(back.release, outcome="failed", reason=why)
        record = replace(current, release=not_back, last_failed=not_back)
        return Settled("failed", back.release.id, why, record)
    rolled_back = replace(back.release, outcome="rolled_back", reason=back.reason)
    restored = replace(back.to, outcome="healthy")
    record = replace(snapshot, release=restored, last_good=restored, last_failed=rolled_back)
    return Settled("rolled_back", back.release.id, back.reason, record, restored=True)


def after_watch(current: ServiceState, is_healthy: bool, reason: str = "") -> Settled:
    """A live release whose outcome was never recorded ended: record it, no rollback (the
    release the apply commits next replaces it either way)."""
    return healthy(current) if is_healthy else left_failed(current, reason)


def rolled_back_to(
    current: ServiceState,
    snapshot: ServiceState,
    target: str,
    *,
    verified: bool,
    by: str,
    at: str,
) -> ServiceState:
    """The record after `configcenter rollback` to release `target`.

    `snapshot`: the record `target` was committed with. `verified`: it was rolled out and
    became healthy (else it was only committed). The release rolled back from stays
    blocked (`rolled_back`) until its inputs change or `--retry` (unless a release that
    failed after it was made is blocked: that one stays); the restored release
    was good before and is what runs (or is committed) now. `at`: when, for a record
    that has no release.
    """
    release = _release(current)
    restored = replace(snapshot.release or Release(target, "committed", at), id=target)
    good = replace(restored, outcome="healthy" if verified else restored.outcome)
    left = replace(release, outcome="rolled_back", reason=f"{_BY_HAND}{target} by {by}")
    failed = current.last_failed
    if failed is not None and failed.id != release.id and failed.at > release.at:
        # The config moved on to inputs that failed after this release was made: those are
        # what it asks for, so they stay blocked (blocking this one would retry them).
        left = failed
    return replace(snapshot, release=good, last_good=good, last_failed=left)


#: How `rolled_back_to` begins the reason of the release it rolled back from.
_BY_HAND = "rolled back to "


def rolled_back_by_hand(release: Release) -> bool:
    """Whether `release` left because someone ran `rollback` (it may have been healthy),
    not because it failed and apply put the last good release back."""
    return release.outcome == "rolled_back" and release.reason.startswith(_BY_HAND)


def _release(current: ServiceState) -> Release:
    if current.release is None:
        raise ValueError("the service's record has no release to roll out")
    return current.release
