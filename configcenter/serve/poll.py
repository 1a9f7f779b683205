"""Git polling, the fallback to push webhooks: a lost delivery only delays an apply.

Every `serve.poll_interval` the leader queues one `poll` job. A worker asks the
config repo's remote for the followed branch's head (`git ls-remote`, nothing
is fetched); when it differs from the checkout's HEAD the job is handled as the
push webhook GitLab would have sent for it: the same handler, which fetches
under the environment locks and applies through `handle_gitlab_event`, and
which marks queued webhook pushes it covered as done. An unchanged head is an
`ignored` job and runs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from configcenter.ports.jobstore import Job

if TYPE_CHECKING:
    from configcenter.serve.engine import Engine
    from configcenter.serve.handlers import JobOutcome

#: The default of serve.poll_interval (seconds): Argo CD polls every 3 minutes too.
DEFAULT_POLL_INTERVAL = 180.0
#: The longest asking the remote may take.
GIT_TIMEOUT = 120.0


def poll_job(interval: float, now: float) -> Job:
    """The poll job of the interval slot `now` falls in; its id dedupes it across replicas."""
    slot = math.floor(now / interval)
    return Job(id=f"poll:{interval:g}:{slot}", source="schedule", kind="poll")


def run_poll(engine: Engine, job: Job, run_job: Callable[[Engine, Job], JobOutcome]) -> JobOutcome:
    """`run_job` handles the push a moved head stands for (passed in: no import cycle)."""
    git = engine.config_git
    if not git.is_clone():
        return "ignored", [], "the config repo is not a Git clone: nothing to poll"
    upstream = git.upstream(timeout=GIT_TIMEOUT)
    if upstream is None or "/" not in upstream:
        return "ignored", [], "the config repo's branch has no upstream: nothing to poll"
    remote, branch = upstream.split("/", 1)
    # serve polls the config repo's upstream: a failure names the remote and the fix.
    remote_head = git.remote_head(remote, branch, timeout=GIT_TIMEOUT)
    head = git.rev("HEAD") or ""
    if remote_head == head:
        return "ignored", [], f"{upstream} is at {head[:10]}, as applied"
    push = Job(
        id=job.id,
        source="gitlab",
        kind="push",
        payload={
            "ref": f"refs/heads/{branch}",
            "before": head or None,
            "after": remote_head,
            "actor": "poll",
        },
    )
    state, runs, note = run_job(engine, push)
    return state, runs, f"polled {upstream}: {head[:10] or '?'} -> {remote_head[:10]}; {note}"
