"""Live console: run logs over Server-Sent Events, and status changes without a reload.

`/events/runs/{run}` sends a run's log as it is appended to the run store and
ends with the run; `/events/jobs/{job}` does the same for a console action
(its state, then the run it started, its log, and the end). Event ids are
offsets into the log, so a browser that reconnects (EventSource does so by
itself, sending Last-Event-ID) gets the rest, never a line twice.
`/events/status` says `change` whenever the newest runs or the job queue
change; live.js then fetches the page again and swaps its live parts (the
matrix, the runs, the actions), so what a cell says follows the runs without
a reload. Everything is read from the run store and the job queue, so any
replica streams any run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from configcenter.ports.jobstore import Job
    from configcenter.ports.runstore import Run
    from configcenter.serve.engine import Engine

#: How often a stream looks at the run store (seconds).
POLL_SECONDS = 0.5
#: A status stream ends after this long; the browser reconnects (so a serve that is
#: stopping is not held up by open pages for more than this).
STATUS_STREAM_SECONDS = 60.0
#: A log stream of a run that never ends gives up after this long (the browser reconnects).
LOG_STREAM_SECONDS = 600.0
HEARTBEAT_SECONDS = 15.0
FINISHED_JOB_STATES = ("done", "failed", "ignored")
#: The run detail that names the console action (job) a run belongs to.
JOB_DETAIL = "job"

LIVE_JS = r"""(function () {
  "use strict";
  var script = document.currentScript;
  var root = (script && script.dataset.root) || "./";

  var LIVE = "#matrix, #runs, #current, #releases, [data-live]";

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var changed = 0;
    document.querySelectorAll(LIVE).forEach(function (old) {
      if (!old.id) { return; }
      var fresh = doc.getElementById(old.id);
      if (fresh && fresh.outerHTML !== old.outerHTML) {
        old.replaceWith(document.importNode(fresh, true));
        changed += 1;
      }
    });
    if (changed) {
      document.documentElement.dataset.refreshed =
        String(Number(document.documentElement.dataset.refreshed || "0") + 1);
    }
  }

  function refresh() {
    fetch(location.href, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html) { swap(html); } })
      .catch(function () {});
  }

  if (document.querySelector(LIVE) && window.EventSource) {
    var status = new EventSource(root + "events/status");
    status.addEventListener("change", refresh);
  }

  var log = document.querySelector("[data-stream]");
  if (log && window.EventSource) {
    var stream = new EventSource(log.dataset.stream + "?offset=" + (log.dataset.offset || "0"));
    var state = document.getElementById("state");
    var outcome = document.getElementById("outcome");
    var run = document.getElementById("run");
    log.dataset.streaming = "1";
    stream.addEventListener("job", function (e) {
      var data = JSON.parse(e.data);
      if (state) { state.textContent = data.state; state.dataset.state = data.state; }
    });
    stream.addEventListener("run", function (e) {
      var data = JSON.parse(e.data);
      if (run) {
        run.textContent = "";
        var a = document.createElement("a");
        a.href = root + "runs/" + encodeURIComponent(data.id);
        a.textContent = data.id + " (" + data.kind + ")";
        run.appendChild(a);
      }
    });
    stream.addEventListener("log", function (e) {
      var data = JSON.parse(e.data);
      var stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(document.createTextNode(data.text));
      if (stick) { log.scrollTop = log.scrollHeight; }
    });
    stream.addEventListener("end", function (e) {
      var data = JSON.parse(e.data);
      stream.close();
      log.dataset.streaming = "0";
      log.dataset.ended = data.outcome || data.state || "ended";
      if (state && data.state) { state.textContent = data.state; state.dataset.state = data.state; }
      if (outcome) {
        outcome.textContent = [data.outcome, data.note].filter(Boolean).join(": ");
        outcome.dataset.outcome = data.outcome || data.state || "";
      }
      if (!state) {
        // A run's page: draw it again as it ended (outcome, services, error, details).
        fetch(location.href, {credentials: "same-origin", cache: "no-store"})
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (html) {
            if (!html) { return; }
            var doc = new DOMParser().parseFromString(html, "text/html");
            var fresh = doc.querySelector("main");
            var old = document.querySelector("main");
            if (fresh && old) { old.replaceWith(document.importNode(fresh, true)); }
            document.documentElement.dataset.ended = data.outcome || "ended";
          })
          .catch(function () {});
      }
    });
  }
})();
"""


def sse(event: str, data: dict[str, Any], event_id: str | None = None) -> str:
    """One Server-Sent Event; data is one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _offset(request: Request) -> int:
    """Where the browser's log ends: Last-Event-ID on a reconnect, else ?offset= (the page
    drew the log up to there)."""
    raw = request.headers.get("last-event-id") or request.query_params.get("offset", "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 12 else 0


def _stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def run_log_events(
    engine: Engine, run_id: str, offset: int, first: Run | None = None
) -> AsyncIterator[str]:
    """The run's log from `offset` as it grows; `end` once the run has an outcome."""
    yield "retry: 1000\n\n"
    deadline = time.monotonic() + LOG_STREAM_SECONDS
    beat = time.monotonic() + HEARTBEAT_SECONDS
    run = first
    while True:
        if run is None:
            run = await run_in_threadpool(engine.run_store.get, run_id)
        if run is None:
            yield sse("end", {"outcome": None, "note": "no such run"})
            return
        if len(run.log) > offset:
            yield sse("log", {"text": run.log[offset:]}, str(len(run.log)))
            offset = len(run.log)
        if run.outcome != "running":
            yield sse("end", {"outcome": run.outcome, "run": run.id})
            return
        if time.monotonic() > deadline or engine.draining.is_set():
            return  # the browser reconnects (here or to another replica) and resumes
        if time.monotonic() > beat:
            beat = time.monotonic() + HEARTBEAT_SECONDS
            yield ": still running\n\n"
        await asyncio.sleep(POLL_SECONDS)
        run = None


def _job_run(engine: Engine, job: Job) -> Run | None:
    """The run a console job started: named by the job when it finished, else found by the
    job id its runs carry in their details."""
    for run_id in job.runs:
        run = engine.run_store.get(run_id)
        if run is not None:
            return run
    for run in engine.run_store.list(env=job.env or None, limit=30):
        if run.details.get(JOB_DETAIL) == job.id:
            return engine.run_store.get(run.id)
    return None


async def job_events(engine: Engine, job_id: str, offset: int) -> AsyncIterator[str]:
    """A console action: `job` on each state, `run` once it started one, its `log`, `end`."""
    yield "retry: 1000\n\n"
    deadline = time.monotonic() + LOG_STREAM_SECONDS
    last_state = None
    run_id: str | None = None
    while True:
        job = await run_in_threadpool(engine.jobs.get, job_id)
        if job is None:
            yield sse("end", {"state": "missing", "note": "no such action"})
            return
        if job.state != last_state:
            last_state = job.state
            yield sse("job", {"state": job.state})
        if run_id is None:
            run = await run_in_threadpool(_job_run, engine, job)
        else:
            run = await run_in_threadpool(engine.run_store.get, run_id)
        if run is not None:
            if run_id is None:
                run_id = run.id
                yield sse("run", {"id": run.id, "kind": run.kind})
            if len(run.log) > offset:
                yield sse("log", {"text": run.log[offset:]}, str(len(run.log)))
                offset = len(run.log)
        run_over = run is None or run.outcome != "running"
        if job.state in FINISHED_JOB_STATES and run_over:
            yield sse(
                "end",
                {
                    "state": job.state,
                    "outcome": run.outcome if run is not None else None,
                    "note": job.note,
                    "run": run_id,
                },
            )
            return
        if time.monotonic() > deadline or engine.draining.is_set():
            return
        await asyncio.sleep(POLL_SECONDS)


def status_version(engine: Engine) -> str:
    """What the console's status follows, as a short tag: the newest runs and their
    outcomes, and the job queue's counts."""
    runs = engine.run_store.list(limit=30)
    seen = [(r.id, r.outcome) for r in runs]
    text = json.dumps([seen, sorted(engine.jobs.counts().items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class SharedVersion:
    """`status_version`, read from the stores at most once a `ttl`, whatever the number
    of open pages: every status stream of a replica shares it."""

    def __init__(self, engine: Engine, ttl: float = POLL_SECONDS * 2) -> None:
        self.engine = engine
        self.ttl = ttl
        self.reads = 0  # store reads so far (the test counts them)
        self._lock = threading.Lock()
        self._value = ""
        self._at = -math.inf

    def __call__(self) -> str:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl:
                self._value = status_version(self.engine)
                self._at = time.monotonic()
                self.reads += 1
            return self._value


async def status_events(
    engine: Engine, since: str, version: Callable[[], str] | None = None
) -> AsyncIterator[str]:
    """`change` (id: the new version) whenever the version is not `since`: at once on a
    first connection (the page may be older than the stream; live.js swaps only what
    differs), and on a reconnect only if it changed since the last one this browser saw."""
    yield "retry: 2000\n\n"
    deadline = time.monotonic() + STATUS_STREAM_SECONDS
    beat = time.monotonic() + HEARTBEAT_SECONDS
    last = since
    while time.monotonic() < deadline and not engine.draining.is_set():
        now = await run_in_threadpool(version or (lambda: status_version(engine)))
        if now != last:
            yield sse("change", {"version": now}, now)
            last = now
        elif time.monotonic() > beat:
            beat = time.monotonic() + HEARTBEAT_SECONDS
            yield ": no change\n\n"
        await asyncio.sleep(POLL_SECONDS * 2)


def routes(engine: Engine) -> list[Route]:
    shared = SharedVersion(engine)  # one store read a second for all open pages

    def live_js(request: Request) -> Response:
        """
        summary: The console's script (log streaming, status refresh)
        responses: {200: {description: javascript}}
        """
        return Response(
            LIVE_JS,
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache"},
        )

    async def run_events(request: Request) -> Response:
        """
        summary: A run's log as Server-Sent Events, until the run ends
        description: >-
          Events `log` ({text}, id = offset in the log; reconnect with Last-Event-ID
          to resume) and `end` ({outcome}).
        parameters:
          - {name: run, in: path, required: true, schema: {type: string}}
          - {name: offset, in: query, schema: {type: integer}, description: log already shown}
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: text/event-stream}, 404: {description: no such run}}
        """
        run_id = request.path_params["run"]
        run = await run_in_threadpool(engine.run_store.get, run_id)
        if run is None:
            return JSONResponse(
                {"error": "no such run", "fix": "GET /api/runs lists runs"}, status_code=404
            )
        return _stream(run_log_events(engine, run_id, _offset(request), run))

    async def job_stream(request: Request) -> Response:
        """
        summary: A console action's progress as Server-Sent Events, until it ends
        description: >-
          Events `job` ({state}), `run` ({id, kind}) once its run started, `log`
          ({text}, id = offset in the run's log) and `end` ({state, outcome, note, run}).
        parameters: [{name: job, in: path, required: true, schema: {type: string}}]
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: text/event-stream}, 404: {description: no such action}}
        """
        job_id = request.path_params["job"]
        job = await run_in_threadpool(engine.jobs.get, job_id)
        if job is None or job.source != "console":
            return JSONResponse(
                {"error": "no such action", "fix": "start one from /actions"}, status_code=404
            )
        return _stream(job_events(engine, job_id, _offset(request)))

    async def status_stream(request: Request) -> Response:
        """
        summary: Status changes as Server-Sent Events (the console refreshes on `change`)
        security: [{bearer: []}, {basic: []}]
        responses: {200: {description: text/event-stream}}
        """
        since = request.headers.get("last-event-id", "")
        return _stream(status_events(engine, since[:64], shared))

    return [
        Route("/assets/live.js", live_js, methods=["GET"]),
        Route("/events/status", status_stream, methods=["GET"]),
        Route("/events/runs/{run}", run_events, methods=["GET"]),
        Route("/events/jobs/{job}", job_stream, methods=["GET"]),
    ]
