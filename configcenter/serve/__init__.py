"""`configcenter serve`: webhooks, the reconcile schedule, the status API and page.

One process with SQLite serves a team. Past one machine, point every replica
at one PostgreSQL run store (runs and the job queue live there) and give them
a Lease (`--lease-namespace`): only the lease holder runs the schedule, and an
advisory lock per environment keeps two replicas from running one env at once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from configcenter.core.errors import UserError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from types import FrameType

    from starlette.applications import Starlette

    from configcenter.serve.engine import Engine
    from configcenter.serve.metrics import Metrics
    from configcenter.serve.store_metrics import RecordedRuns
    from configcenter.usecases.workspace import Workspace


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    kubeconfig: str | None = None
    lease_namespace: str | None = None
    lease_name: str = "configcenter-serve"
    lease_duration: float = 15.0
    workers: int = 2
    identity: str | None = None


def build(ws: Workspace, options: ServeOptions) -> tuple[Engine, Starlette]:
    """The engine and the app, not started: settings are checked here, before listening."""
    from configcenter.serve.app import create_app
    from configcenter.serve.engine import Engine, default_identity, parse_interval
    from configcenter.serve.leader import Leadership, SoleLeader
    from configcenter.serve.metrics import Metrics
    from configcenter.serve.settings import load_settings
    from configcenter.serve.store_metrics import RecordedRuns
    from configcenter.wiring import open_job_store, open_lease_leader

    # A push may have broken an environment's files (serve checked it out, or the
    # operator did): serve must still start, or neither a webhook nor the poll could
    # bring the fix. configcenter.yaml (the settings) must load.
    ws.without_environments_if_broken(
        lambda message: log.warning(
            "%s; serve starts anyway: webhooks and the poll bring the fix",
            ws.redactor.redact(message),
        )
    )
    config = ws.config
    settings = load_settings(config, ws.redactor)
    for env in config.project.environments:
        if env not in config.environments:
            continue  # its files do not load: the schedule says so until they do
        raw = config.environment(env).reconcile_interval
        if raw:
            parse_interval(raw, f"environments/{env}/_env.yaml reconcile.interval")
    identity = options.identity or default_identity()
    leader: Leadership = SoleLeader()
    if options.lease_namespace:
        leader = open_lease_leader(
            identity,
            options.lease_namespace,
            options.lease_name,
            kubeconfig=options.kubeconfig,
            duration=options.lease_duration,
        )
    elif options.kubeconfig:
        raise UserError(
            "--kubeconfig is only used for the leader Lease: add --lease-namespace NS "
            "(platforms keep their own kubeconfig in configcenter.yaml)"
        )
    jobs = open_job_store(ws.effective_run_store_url)
    metrics = Metrics()

    def collect(m: Metrics) -> None:
        for state, count in jobs.counts().items():
            m.set("configcenter_jobs", float(count), state=state)
        m.set("configcenter_leader", 1.0 if leader.is_leader() else 0.0)

    metrics.collectors.append(collect)
    engine = Engine(ws, jobs, leader, metrics, identity=identity, workers=options.workers)
    metrics.collectors.append(lambda m: collect_services(engine, m))
    recorded = RecordedRuns()
    metrics.collectors.append(lambda m: _collect_recorded(engine, recorded, m))
    engine.poll_interval = settings.poll_interval
    if settings.channels:
        from configcenter.serve.notify import Notifier

        notifier = Notifier(
            settings.channels, config.project.name, settings.public_url, ws.redactor
        )
        engine.notifier = notifier
        engine.observers.append(lambda job: notifier.after_job(engine, job))
    app = create_app(engine, settings)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(engine.start)
        try:
            yield
        finally:
            await run_in_threadpool(engine.stop)
            jobs.close()

    app.router.lifespan_context = lifespan
    return engine, app


def collect_services(engine: Engine, m: Metrics) -> None:
    """Per service: status and drift state as one-hot gauges, and its drift entry count;
    per environment the drift its last reconcile found (configcenter_drift)."""
    from configcenter.serve import status
    from configcenter.serve.store_metrics import collect_drift

    names = ("configcenter_service_status", "configcenter_service_sync")
    try:
        ws = engine.page_workspace()
        cells = [
            (env, c) for env in ws.config.project.environments for c in status.services(ws, env)
        ]
    except Exception as exc:  # the scrape still answers; the reason is one log line
        log.warning("metrics: per-service gauges skipped: %s", engine.redactor.redact(str(exc)))
        return
    for name in (*names, "configcenter_service_drift_entries"):
        m.clear(name)
    collect_drift(ws, m)
    for env, cell in cells:
        service = cell["service"]
        for state in status.STATUSES:
            value = 1.0 if cell["status"] == state else 0.0
            m.set(names[0], value, env=env, service=service, status=state)
        for state in status.DRIFT_STATES:
            value = 1.0 if cell["drift"]["state"] == state else 0.0
            m.set(names[1], value, env=env, service=service, state=state)
        m.set(
            "configcenter_service_drift_entries",
            float(cell["drift"]["count"]),
            env=env,
            service=service,
        )


def _collect_recorded(engine: Engine, recorded: RecordedRuns, m: Metrics) -> None:
    try:
        recorded.collect(engine.run_store, m)
    except Exception as exc:  # the scrape still answers; the reason is one log line
        log.warning("metrics: recorded runs skipped: %s", engine.redactor.redact(str(exc)))


def run_server(ws: Workspace, options: ServeOptions) -> None:
    """Serve until SIGINT/SIGTERM; running jobs get up to 30 s to finish."""
    import uvicorn

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    engine, app = build(ws, options)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            engine.draining.set()  # the console's live streams end instead of holding us up
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    Server(config).run()
