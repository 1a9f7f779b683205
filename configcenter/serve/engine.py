"""serve's engine: workers that carry out queued jobs, and the reconcile schedule.

Jobs call the same use cases the CLI calls (`apply_env`, `reconcile`), each in
a fresh Workspace so every run sees the config repo as it is now. One run at a
time per environment: a lock per env in this process and, with PostgreSQL, an
advisory lock per env across replicas. Only the leader enqueues and runs the
schedule; any replica takes webhook jobs.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from configcenter.core.errors import ConfigError, PlatformFailure, TransientFailure, UserError
from configcenter.core.redact import Redactor
from configcenter.core.render import RenderedStore
from configcenter.core.schema import parse_duration
from configcenter.ports.jobstore import Job, JobStore
from configcenter.serve.leader import Leadership
from configcenter.serve.metrics import Metrics
from configcenter.usecases.workspace import Workspace

if TYPE_CHECKING:
    from pathlib import Path

    from configcenter.adapters.config_git import ConfigGit
    from configcenter.core.errors import ProblemList
    from configcenter.core.model import Config
    from configcenter.ports.config_repo import ConfigRepo
    from configcenter.ports.runstore import Run, RunStore
    from configcenter.serve.notify import Notifier

log = logging.getLogger(__name__)

#: A replica that has not beaten for this long is gone; its running jobs are queued again
#: and its running runs are closed as failed (replicas beat every 0.5 s).
STALE_REPLICA_SECONDS = 60.0
#: The longest a git step in the config repo (fetch, merge) may take.
GIT_TIMEOUT = 300.0
#: How often the leader looks for runs and jobs of replicas that stopped beating.
REAP_EVERY_SECONDS = 5.0
#: The same schedule problem (a config that does not load) is logged again after this.
SCHEDULE_WARN_EVERY_SECONDS = 60.0
#: Failures a user or operator fixes (config, credentials, a platform that cannot be
#: reached): logged as one line per job, not with a traceback.
EXPECTED_ERRORS = (UserError, ConfigError, PlatformFailure, TransientFailure)
#: The run detail naming the replica that runs it.
REPLICA_DETAIL = "replica"


def _open_render_cache() -> RenderedStore:
    from configcenter import wiring
    from configcenter.usecases.workspace import cache_home

    return wiring.open_render_cache(cache_home() / "rendered")


def parse_interval(raw: str, where: str) -> float:
    """`30s`, `5m`, `1h` (a bare number is seconds): the config's one duration parser."""
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise UserError(f"{where}: reconcile interval {exc}") from None


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ServeWorkspace(Workspace):
    """A Workspace whose run store and redactor are the server's, shared by every run.

    Runs it starts carry the replica's identity, so when the replica dies (on any
    host) the leader can close them by its missing heartbeat, not by a pid.
    """

    def __init__(
        self,
        base: Workspace,
        store: RunStore,
        redactor: Redactor,
        identity: str = "",
        run_details: Mapping[str, object] | None = None,
        rendered: RenderedStore | None = None,
    ) -> None:
        super().__init__(base.root, base.deploy_repo_url, base.run_store_url, base.strict)
        self._store = store
        self._shared_redactor = redactor
        self._identity = identity
        self._run_details = dict(run_details or {})
        if rendered is not None:
            self.__dict__["_rendered_files"] = rendered  # the Workspace's cached_property

    def start_run(
        self,
        kind: str,
        env: str,
        services: Sequence[str],
        trigger: str,
        actor: str,
        details: dict[str, object] | None = None,
    ) -> Run:
        tagged = {**(details or {}), **self._run_details}
        if self._identity:
            tagged[REPLICA_DETAIL] = self._identity
        return super().start_run(kind, env, services, trigger, actor, tagged)

    @property
    def run_store(self) -> RunStore:
        return self._store

    @property
    def redactor(self) -> Redactor:
        return self._shared_redactor


class SharedRenderedFiles:
    """The kept rendered files of every job and page of one serve process, as the CLI keeps
    them between commands (`Workspace.save_caches`).

    One store for all threads, behind a lock, so concurrent jobs neither lose each other's
    records nor write a pack while another thread adds to it. Each `save` writes what was
    added (atomically: a pack is replaced whole) and starts a new store, which reads the
    packs again when first asked: a long-lived server keeps in memory only what it used
    since its last save, and never stops keeping new records.
    """

    def __init__(self, opener: Callable[[], RenderedStore]) -> None:
        self._opener = opener
        self._lock = threading.Lock()
        self._store: RenderedStore | None = None

    def _current(self) -> RenderedStore:
        if self._store is None:
            self._store = self._opener()
        return self._store

    def get(self, group: str, key: str) -> Mapping[str, bytes] | None:
        with self._lock:
            return self._current().get(group, key)

    def put(self, group: str, key: str, files: Mapping[str, bytes]) -> None:
        with self._lock:
            self._current().put(group, key, files)

    def save(self) -> None:
        with self._lock:
            if self._store is None:
                return
            try:
                self._store.save()
            finally:
                self._store = None


class LoadedConfigs:
    """Loaded configs of the config repo checkout, kept by what the load read.

    The key is the checkout's HEAD commit, every tag (template versions are read from
    them), strict mode and the environments loaded; a checkout whose work tree differs
    from HEAD in any way (a modified, untracked or ignored file) has no key and is
    loaded afresh each time. A poll or webhook that fast-forwards the checkout, or a
    tag that moves, makes a new key: a kept config is never served stale.
    """

    #: The commit served now and the one before (a no-op plan of 5,000 services, config
    #: included, peaks at ~400 MiB: keep few).
    KEEP = 2

    def __init__(self, git: ConfigGit) -> None:
        self._git = git
        self._kept: OrderedDict[tuple[object, ...], tuple[ConfigRepo, ProblemList, Config]] = (
            OrderedDict()
        )

    def key(
        self, root: Path, strict: bool, focus: tuple[str, ...] | None
    ) -> tuple[object, ...] | None:
        if not self._git.is_clone():
            return None
        state = self._git.checkout_state(timeout=GIT_TIMEOUT)
        if state is None:
            return None
        head, tags = state
        return (str(root), head, tags, strict, focus)

    def get(self, key: tuple[object, ...]) -> tuple[ConfigRepo, ProblemList, Config] | None:
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
        return kept

    def put(self, key: tuple[object, ...], loaded: tuple[ConfigRepo, ProblemList, Config]) -> None:
        self._kept[key] = loaded
        self._kept.move_to_end(key)
        while len(self._kept) > self.KEEP:
            self._kept.popitem(last=False)


@dataclass
class EngineStatus:
    started: float = field(default_factory=time.monotonic)
    last_schedule: dict[str, float] = field(default_factory=dict)


class Engine:
    def __init__(
        self,
        base: Workspace,
        jobs: JobStore,
        leader: Leadership,
        metrics: Metrics,
        *,
        identity: str,
        workers: int = 2,
    ) -> None:
        self.base = base
        self.jobs = jobs
        self.leader = leader
        self.metrics = metrics
        self.identity = identity
        self.workers = max(1, workers)
        self.redactor = base.redactor
        self.status = EngineStatus()
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._env_locks: dict[str, threading.Lock] = {}
        self._env_locks_guard = threading.Lock()
        self._config_lock = threading.Lock()
        self._next_reap = 0.0
        #: The last schedule problem logged, and when (logged again when it changes, or
        #: once a minute: the tick runs twice a second).
        self._schedule_problem: tuple[str, float] | None = None
        #: serve.poll_interval in seconds (None: no polling); the first poll is at the
        #: first boundary of the interval's wall-clock slots after start, not at start.
        self.poll_interval: float | None = None
        self._started_at = time.time()
        #: Called with each job once it is finished (notifications look for new facts).
        self.observers: list[Callable[[Job], object]] = []
        self.notifier: Notifier | None = None
        #: The HMAC key console actions' plan digests are checked with (serve/actions.py).
        self.action_key: bytes | None = None
        #: Set when the server is asked to stop: live streams end (serve/stream.py), so
        #: open console pages do not hold the shutdown up; browsers reconnect elsewhere.
        self.draining = threading.Event()
        #: The rendered files every workspace of this process renders through, kept on
        #: disk after each job (`save_caches`).
        self.rendered = SharedRenderedFiles(_open_render_cache)
        #: The workspaces the job running in this thread opened (their caches are kept).
        self._opened = threading.local()
        self._cache_lock = threading.Lock()

    @cached_property
    def run_store(self) -> RunStore:
        return self.base.run_store

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._warn_if_cannot_fetch()
        requeued = self.jobs.requeue_mine(self.identity)
        if not self.jobs.shared:
            # One process owns a SQLite queue: whatever was running died with the last one.
            requeued += self.jobs.requeue_orphaned(0)
        if requeued:
            log.info("requeued %d job(s) left running by a previous start", len(requeued))
        closed = self.close_dead_runs(lambda replica: replica == self.identity)
        if closed:
            log.info("closed %d run(s) left running by a previous start", len(closed))
        self.leader.start()
        self.jobs.heartbeat(self.identity, self.leader.is_leader())
        for index in range(self.workers):
            thread = threading.Thread(
                target=self._work, name=f"configcenter-worker-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        ticker = threading.Thread(target=self._tick, name="configcenter-schedule", daemon=True)
        ticker.start()
        self._threads.append(ticker)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self.leader.stop()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def submit(self, job: Job, *, again_if_failed: bool = False) -> bool:
        """Queue a job; False for a duplicate. Workers are woken at once.

        `again_if_failed`: a webhook delivered again after its job failed runs again.
        """
        new = self.jobs.add(job, again_if_failed=again_if_failed)
        if new:
            self.wake()
        return new

    # -- scheduling ------------------------------------------------------------------------

    def _tick(self) -> None:
        while not self._stop.is_set():
            try:
                leader = self.leader.is_leader()
                self.jobs.heartbeat(self.identity, leader)
                self.metrics.set("configcenter_leader", 1.0 if leader else 0.0)
                if leader:
                    if time.monotonic() >= self._next_reap:
                        self._next_reap = time.monotonic() + REAP_EVERY_SECONDS
                        self.reap_dead_replicas()
                    self._schedule()
            except Exception as exc:
                self._warn_schedule(self.redactor.redact(str(exc)))
            else:
                self._schedule_problem = None
            self._stop.wait(0.5)

    def _warn_schedule(self, problem: str) -> None:
        now = time.monotonic()
        last = self._schedule_problem
        if last is not None and last[0] == problem and now - last[1] < SCHEDULE_WARN_EVERY_SECONDS:
            return
        self._schedule_problem = (problem, now)
        log.warning("schedule: %s", problem)

    def reap_dead_replicas(
        self, stale_after: float = STALE_REPLICA_SECONDS
    ) -> tuple[list[str], list[str]]:
        """Jobs and runs of replicas silent for `stale_after` seconds: requeued / closed.

        Replicas beat into the shared store (serve_replicas.seen_at); a replica
        that stopped (killed, its node gone) is recognised there whatever host
        it ran on. Returns (requeued job ids, closed run ids).
        """
        jobs = self.jobs.requeue_orphaned(stale_after)
        dead = self.jobs.silent_replicas(stale_after)
        runs = self.close_dead_runs(
            lambda replica: replica != self.identity and replica in dead,
            f"no heartbeat for {stale_after:g}s",
        )
        if jobs or runs:
            log.warning(
                "replica(s) %s stopped: requeued %d job(s), closed %d run(s)",
                ", ".join(sorted(dead)) or "?",
                len(jobs),
                len(runs),
            )
        return jobs, runs

    def close_dead_runs(
        self, is_dead: Callable[[str], bool], why: str = "it restarted"
    ) -> list[str]:
        """Finish as failed the `running` runs whose replica `is_dead`."""
        from configcenter.ports.runstore import finish_abandoned

        def dead_replica(run: Run) -> str | None:
            replica = run.details.get(REPLICA_DETAIL)
            if not isinstance(replica, str) or not is_dead(replica):
                return None
            return f"serve replica {replica} stopped before the run ended ({why})"

        return finish_abandoned(self.run_store, self.run_store.list(limit=500), dead_replica)

    def _schedule(self) -> None:
        """Queue `schedule:<env>:<slot>` once per interval; the id dedupes across replicas.

        The poll is queued even when the config does not load (a push broke it): the
        poll is what brings the fix when its webhook is lost.
        """
        now = time.time()
        try:
            self._schedule_reconciles(now)
        finally:
            self.schedule_poll(now)

    def _schedule_reconciles(self, now: float) -> None:
        config = self.page_workspace().config
        for env in config.project.environments:
            raw = config.environment(env).reconcile_interval
            if not raw:
                continue
            interval = parse_interval(raw, f"environments/{env}/_env.yaml")
            slot = math.floor(now / interval)
            job = Job(
                id=f"schedule:{env}:{interval:g}:{slot}",
                source="schedule",
                kind="reconcile",
                env=env,
                payload={"heal": config.environment(env).reconcile_heal},
            )
            if self.submit(job):
                self.status.last_schedule[env] = now

    def schedule_poll(self, now: float) -> bool:
        """Queue this interval's Git poll (serve.poll_interval); False when none is due."""
        from configcenter.serve.poll import poll_job

        interval = self.poll_interval
        if not interval or math.floor(now / interval) <= math.floor(self._started_at / interval):
            return False
        return self.submit(poll_job(interval, now))

    # -- workers ---------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.jobs.claim(self.identity, schedule=self.leader.is_leader())
            except Exception as exc:
                log.warning("claiming a job: %s", self.redactor.redact(str(exc)))
                job = None
            if job is None:
                with self._wake:
                    self._wake.wait(timeout=1.0)
                continue
            self._execute(job)

    def _execute(self, job: Job) -> None:
        from configcenter.serve import handlers

        self._opened.workspaces = []
        try:
            state, runs, note = handlers.run_job(self, job)
        except EXPECTED_ERRORS as exc:
            # Bad config, a platform that refuses or cannot be reached: one line, no traceback.
            note = self.redactor.redact(f"{type(exc).__name__}: {exc}")
            log.warning("job %s failed: %s", job.id, note.splitlines()[0] if note else "")
            state, runs = "failed", []
        except Exception as exc:
            log.exception("job %s failed", job.id)
            state, runs, note = "failed", [], self.redactor.redact(f"{type(exc).__name__}: {exc}")
        self.save_caches()
        self.jobs.finish(job.id, state, runs, note[:2000])
        for observe in self.observers:
            try:
                observe(job)
            except Exception as exc:
                log.warning("after job %s: %s", job.id, self.redactor.redact(str(exc)))

    def save_caches(self) -> None:
        """Keep what the job that ran in this thread learnt, as the CLI does after each
        command: its workspaces' config repo caches and the rendered files. A cache that
        cannot be written costs a render next time, never the job."""
        opened: list[Workspace] = getattr(self._opened, "workspaces", None) or []
        self._opened.workspaces = []
        try:
            with self._cache_lock:  # one writer of the config repo's cache file at a time
                for ws in opened:
                    ws.save_caches()
            self.rendered.save()
        except Exception as exc:
            log.warning("keeping caches: %s", self.redactor.redact(str(exc)))

    def record_run(self, kind: str, outcome: str, seconds: float) -> None:
        self.metrics.inc("configcenter_runs_total", kind=kind, outcome=outcome)
        self.metrics.observe_duration(seconds, kind=kind)

    # -- helpers for handlers --------------------------------------------------------------

    def fresh_workspace(
        self,
        run_details: Mapping[str, object] | None = None,
        focus: tuple[str, ...] | None = None,
        services: tuple[str, ...] | None = None,
    ) -> ServeWorkspace:
        """A Workspace that loads the config repo anew (as it is on disk now); the runs it
        starts carry `run_details` (a console action's job id). `focus` loads only those
        environments (`()`: configcenter.yaml alone); `services=()` loads the environments'
        settings without their services (never to plan or apply from)."""
        ws = ServeWorkspace(
            self.base, self.run_store, self.redactor, self.identity, run_details, self.rendered
        )
        ws.focus = focus
        ws.services = services
        opened = getattr(self._opened, "workspaces", None)
        if opened is not None:
            opened.append(ws)
        with self._config_lock:
            _ = ws.config
        return ws

    def page_workspace(self, focus: tuple[str, ...] | None = None) -> ServeWorkspace:
        """A Workspace for what only reads (pages, the API, metrics, the schedule, notify
        checks): the config as loaded for the config repo commit serve has checked out,
        loaded once per commit (see `LoadedConfigs`). Jobs that apply load afresh.

        A config that does not load raises as in `fresh_workspace` (and is loaded again
        on the next request: only loads that succeeded are kept).
        """
        ws = ServeWorkspace(
            self.base, self.run_store, self.redactor, self.identity, rendered=self.rendered
        )
        ws.focus = focus
        with self._config_lock:
            key = self._loaded.key(self.base.root, self.base.strict, focus)
            kept = self._loaded.get(key) if key is not None else None
            if kept is not None:
                ws.adopt(*kept)
                return ws
            config = ws.config
            if key is not None:
                self._loaded.put(key, (ws.source, ws.problems, config))
        return ws

    @cached_property
    def _loaded(self) -> LoadedConfigs:
        from configcenter import wiring

        return LoadedConfigs(wiring.open_config_git(self.base.root, RuntimeError))

    @contextmanager
    def env_lock(self, env: str) -> Iterator[None]:
        with self._env_locks_guard:
            lock = self._env_locks.setdefault(env, threading.Lock())
        with lock, self.jobs.env_lock(env):
            yield

    @cached_property
    def config_git(self) -> ConfigGit:
        """git in serve's config repo checkout (the one config repo Git adapter)."""
        from configcenter import wiring

        return wiring.open_config_git(self.base.root, RuntimeError)

    def _warn_if_cannot_fetch(self) -> None:
        """One WARNING at start when the checkout cannot follow the config project."""
        root = self.base.root
        try:
            git = self.config_git
            if not git.is_clone():
                why = "is not a Git clone"
                fix = "serve a clone of the config project (git clone URL)"
            elif git.upstream(timeout=GIT_TIMEOUT) is None:
                why = "has a branch with no upstream"
                fix = "git branch --set-upstream-to origin/<default branch>, or serve a clone"
            else:
                return
        except Exception as exc:  # git itself failing is the first job's to report
            log.debug("checking %s: %s", root, exc)
            return
        log.warning(
            "config repo %s %s: webhooks and polls cannot fetch new commits, so pushes and "
            "merges apply what it holds now (no upstream to follow); %s",
            root,
            why,
            fix,
        )

    def update_config_repo(self) -> str:
        """Fast-forward the config repo's branch to its upstream; returns a note."""
        root = self.base.root
        with self._config_lock:
            git = self.config_git
            if not git.is_clone():
                return "the config repo is not a Git clone; used as it is"
            upstream = git.upstream(timeout=GIT_TIMEOUT)
            if upstream is None:
                return "the config repo's branch has no upstream; used as it is"
            git.fetch(upstream.split("/", 1)[0], force_tags=True, timeout=GIT_TIMEOUT)
            if not git.fast_forward("@{u}", timeout=GIT_TIMEOUT):
                raise RuntimeError(
                    f"{root} cannot fast-forward to {upstream}: it has local commits; "
                    "serve needs a clean clone of the config repo"
                )
            head = git.rev("HEAD") or "?"
            return f"config repo at {head[:10]} ({upstream})"

    def current_branch(self) -> str | None:
        return self.config_git.current_branch()
