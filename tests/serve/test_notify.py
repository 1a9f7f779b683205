"""Notifications per channel: a real local HTTP receiver (JSON webhook, Slack) and a real
SMTP server (aiosmtpd); one message per new fact, never a secret in any of them."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from configcenter.ports.jobstore import Job
from configcenter.serve import ServeOptions, build
from configcenter.serve.engine import Engine
from configcenter.serve.handlers import run_job
from configcenter.usecases.apply import ApplyOptions, apply_env
from configcenter.usecases.workspace import Workspace
from configcenter.wiring import open_run_store
from tests.serve.conftest import SERVE_SECTION
from tests.support.configrepo import git
from tests.support.helpers import free_port, poll
from tests.support.serve_fixtures import make_shop_world

SENTINEL = "sentinel-api-4f7c9a0e"  # serve.api_token: a secret serve knows
SLACK_SECRET = "slack-path-b81d55"  # the secret part of the Slack webhook URL
HOOK_TOKEN = "hook-token-77e0c1"  # the JSON webhook's bearer token


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers 200."""

    port: int = field(default_factory=free_port)
    got: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                got.append(Received(self.path, dict(self.headers), self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.messages.append(bytes(envelope.content))
        return "250 Message accepted for delivery"


@dataclass
class Bed:
    engine: Engine
    receiver: Receiver
    mailbox: Mailbox
    world_root: Path
    deploy: Path

    def check(self, env: str = "dev") -> int:
        assert self.engine.notifier is not None
        return self.engine.notifier.after_job(
            self.engine, Job(id="t", source="schedule", kind="reconcile", env=env)
        )

    def send_all(self) -> list[tuple[str, str]]:
        done = []
        while (job := self.engine.jobs.claim(self.engine.identity)) is not None:
            state, runs, note = run_job(self.engine, job)
            self.engine.jobs.finish(job.id, state, runs, note)
            done.append((job.id, state))
        return done


NOTIFY_SECTION = """\
  public_url: https://cc.example.test/
  notifications:
    - {{kind: webhook, url: "http://127.0.0.1:{port}/hook", token: {{secret: "env:CC_HOOK_TOKEN"}},
       environments: [dev]}}
    - {{kind: slack, url: {{secret: "env:CC_SLACK_URL"}}, events: [failed, rolled_back, drift]}}
    - {{kind: email, name: ops-mail, smtp: {{host: 127.0.0.1, port: {smtp}}},
       from: cc@example.test, to: [ops@example.test], environments: [dev]}}
    - {{kind: webhook, url: "http://127.0.0.1:{port}/prod-only", environments: [prod]}}
"""


@pytest.fixture
def bed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bed]:
    receiver = Receiver()
    mailbox = Mailbox()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    for name, value in (
        ("CC_WEBHOOK_TOKEN", "whsec-test"),
        ("CC_REGISTRY_TOKEN", "regsec-test"),
        ("CC_API_TOKEN", SENTINEL),
        ("CC_HOOK_TOKEN", HOOK_TOKEN),
        ("CC_SLACK_URL", f"http://127.0.0.1:{receiver.port}/services/T0/B0/{SLACK_SECRET}"),
        ("XDG_STATE_HOME", str(tmp_path / "xdg-state")),
        ("XDG_CACHE_HOME", str(tmp_path / "xdg-cache")),
    ):
        monkeypatch.setenv(name, value)
    section = SERVE_SECTION + NOTIFY_SECTION.format(port=receiver.port, smtp=smtp_port)
    world = make_shop_world(
        tmp_path / "world", envs={"dev": "auto_apply: true\n", "prod": ""}, serve=section
    )
    ws = Workspace(world.config.root, run_store_url=world.run_store_url)
    assert apply_env(ws, "dev", ApplyOptions(actor="ops@test")).outcome == "succeeded"
    engine, _ = build(ws, ServeOptions(workers=1, identity="replica-a"))
    try:
        yield Bed(engine, receiver, mailbox, world.root, world.deploy)
    finally:
        engine.jobs.close()
        controller.stop()
        receiver.stop()


def fail_release(bed: Bed, reason: str) -> str:
    """Record dev/api's release as failed in the deploy repo, as a failed rollout leaves it."""
    clone = bed.world_root / "deploy-edit"
    if not clone.exists():
        git(bed.world_root, "clone", "-q", str(bed.deploy), str(clone))
    git(clone, "pull", "-q")
    path = clone / "dev" / ".state" / "api.json"
    record = json.loads(path.read_text())
    release = dict(record["release"])
    release.update(outcome="failed", reason=reason)
    record["release"] = release
    record["last_failed"] = release
    path.write_text(json.dumps(record, indent=1))
    git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "api failed")
    git(clone, "push", "-q", "origin", "HEAD:main")
    return str(release["run"])


def everything_sent(bed: Bed) -> str:
    texts = [r.body.decode() + r.path for r in bed.receiver.got]
    texts += [m.decode() for m in bed.mailbox.messages]
    return "\n".join(texts)


def test_failed_release_notifies_each_channel_once_without_secrets(bed: Bed) -> None:
    run = fail_release(bed, f"ProgressDeadlineExceeded (token {SENTINEL} was in the log)")
    assert bed.check() == 3  # webhook, slack, email (the prod-only webhook is not for dev)
    sent = bed.send_all()
    assert [state for _, state in sent] == ["done"] * 3, sent

    [hook] = [r for r in bed.receiver.got if r.path == "/hook"]
    body = json.loads(hook.body)
    assert (body["event"], body["env"], body["service"]) == ("failed", "dev", "api")
    assert body["project"] == "shop" and "ProgressDeadlineExceeded" in body["reason"]
    assert body["run_url"] == f"https://cc.example.test/runs/{run}"
    assert hook.headers["Authorization"] == f"Bearer {HOOK_TOKEN}"

    [slack] = [r for r in bed.receiver.got if r.path.startswith("/services/")]
    text = json.loads(slack.body)["text"]
    assert text.startswith("*configcenter shop: dev/api: release ") and "failed*" in text
    assert f"<https://cc.example.test/runs/{run}|run {run}>" in text

    [raw] = bed.mailbox.messages
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(mail["Subject"]).strip().startswith("[configcenter shop] dev/api: release ")
    assert (mail["To"], mail["From"]) == ("ops@example.test", "cc@example.test")
    assert f"run: https://cc.example.test/runs/{run}" in raw.decode()

    everything = everything_sent(bed)
    assert SENTINEL not in everything and HOOK_TOKEN not in everything
    assert SLACK_SECRET not in everything.replace(slack.path, "")
    # The next schedule tick finds the same fact: nothing new is sent.
    assert bed.check() == 0 and bed.send_all() == []


def test_drift_then_heal_are_new_facts_once_each(bed: Bed) -> None:
    store = open_run_store(bed.engine.base.run_store_url or "")
    try:
        drifts = [{"service": "api", "field": "replicas", "desired": "2", "live": "5"}]
        run = store.start("reconcile", "dev", [], "schedule", "replica-a")
        store.finish(
            run.id, "succeeded", {"services": {"api": {"status": "drifted", "drifts": drifts}}}
        )
        assert bed.check() == 3
        assert {s for _, s in bed.send_all()} == {"done"}
        again = store.start("reconcile", "dev", [], "schedule", "replica-a")
        store.finish(
            again.id, "succeeded", {"services": {"api": {"status": "drifted", "drifts": drifts}}}
        )
        assert bed.check() == 0, "the same drift on the next tick is not a new fact"
        healed = store.start("reconcile", "dev", [], "schedule", "replica-a")
        store.finish(
            healed.id,
            "succeeded",
            {
                "services": {"api": {"status": "drifted", "drifts": drifts}},
                "healed": [{"service": "api", "action": "update", "outcome": "committed"}],
            },
        )
        assert bed.check() == 2  # healed: webhook and email (slack is not subscribed)
        bed.send_all()
    finally:
        store.close()
    events = [json.loads(r.body)["event"] for r in bed.receiver.got if r.path == "/hook"]
    assert events == ["drift", "healed"]
    [drift] = [json.loads(r.body) for r in bed.receiver.got if r.path == "/hook"][:1]
    assert drift["reason"] == "replicas: desired 2, live 5"
    assert drift["run_url"] == f"https://cc.example.test/runs/{run.id}"
    assert len(bed.mailbox.messages) == 2
    assert SENTINEL not in everything_sent(bed)


def test_an_unreachable_channel_fails_its_job_with_a_masked_note(bed: Bed) -> None:
    bed.receiver.stop()
    fail_release(bed, "boom")
    assert bed.check() == 3
    states = dict(bed.send_all())
    failed = [bed.engine.jobs.get(job_id) for job_id, state in states.items() if state == "failed"]
    assert len(failed) == 2  # webhook and slack; the email went out
    for job in failed:
        assert job is not None and SLACK_SECRET not in job.note and "ConnectionError" in job.note


def test_the_running_engine_notifies_after_its_jobs(bed: Bed) -> None:
    """Wiring: a finished job makes the engine look for facts; its workers send them."""
    fail_release(bed, "ProgressDeadlineExceeded")
    engine = bed.engine
    engine.start()
    try:
        engine.submit(Job(id="reconcile-dev", source="schedule", kind="reconcile", env="dev"))
        poll(
            lambda: (len(bed.receiver.got) == 2 and len(bed.mailbox.messages) == 1) or None,
            60,
            "the webhook, Slack and email notifications",
        )
    finally:
        engine.stop()
    notify_jobs = [j for j in engine.jobs.recent(100) if j.kind == "notify"]
    assert sorted(j.state for j in notify_jobs) == ["done"] * 3
    events = {json.loads(r.body).get("event") for r in bed.receiver.got if r.path == "/hook"}
    assert events == {"failed"}
