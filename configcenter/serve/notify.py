"""Notifications: failed, rolled back, blocked, drift and healed, one per new fact.

After every job, serve reads each affected environment as the console shows it
(`status.services`) and names each fact it finds: a release that failed or was
rolled back (by release id), a service an apply refused (by the failed release
and the reason), drift (by release and the drift entries), a heal (by the
reconcile run). Each fact becomes one `notify` job per channel whose id is made
of the channel and the fact, so the job table dedupes it across schedule ticks,
restarts and replicas; a worker sends it. Every text passes the redactor first.

Channels (`serve.notifications`): a generic JSON webhook, a Slack-compatible
incoming webhook, and email over SMTP, each for some environments and events.
"""

from __future__ import annotations

import hashlib
import json
import logging
import smtplib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from configcenter.core.redact import Redactor
from configcenter.ports.jobstore import Job

if TYPE_CHECKING:
    from configcenter.serve.engine import Engine
    from configcenter.serve.handlers import JobOutcome
    from configcenter.usecases.workspace import Workspace

log = logging.getLogger(__name__)

EVENTS = ("failed", "rolled_back", "blocked", "drift", "healed")
KINDS = ("webhook", "slack", "email")
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str  # webhook | slack | email
    environments: tuple[str, ...] = ()  # (): every environment
    events: tuple[str, ...] = EVENTS
    url: str | None = None  # webhook, slack
    token: str | None = None  # webhook: Authorization: Bearer <token>
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    starttls: bool = False
    sender: str = "configcenter@localhost"
    to: tuple[str, ...] = ()

    def wants(self, env: str, event: str) -> bool:
        return (not self.environments or env in self.environments) and event in self.events


@dataclass(frozen=True)
class Fact:
    event: str  # one of EVENTS
    env: str
    service: str
    key: str  # what makes it new: the same key is the same fact
    summary: str
    reason: str = ""
    run: str | None = None
    details: list[dict[str, Any]] = field(default_factory=list)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def facts(ws: Workspace, env: str) -> list[Fact]:
    """The notifiable facts of `env` now, as the console sees them."""
    from configcenter.serve import status

    out: list[Fact] = []
    for cell in status.services(ws, env):
        name = cell["service"]
        release = cell["release"] or {}
        state = cell["status"]
        where = f"{env}/{name}"
        if state in ("failed", "rolled_back"):
            # The failed release: the newest one when it was rolled back (the record's
            # current release is then the good one put back), else the current one.
            failed = cell.get("failure") or release
            out.append(
                Fact(
                    state,
                    env,
                    name,
                    f"{where}/{state}/{failed.get('id')}",
                    f"{where}: release {failed.get('id')} "
                    + ("failed" if state == "failed" else "failed and was rolled back"),
                    str(failed.get("reason") or ""),
                    failed.get("run"),
                )
            )
        elif state == "blocked":
            why = str(cell["status_why"] or "")
            out.append(
                Fact(
                    "blocked",
                    env,
                    name,
                    f"{where}/blocked/{cell['last_failed']}/{_digest(why)}",
                    f"{where}: apply refused to redeploy inputs that failed",
                    why,
                    cell.get("status_run") or release.get("run"),
                )
            )
        drift = cell["drift"]
        if drift["state"] == "known":
            items = drift["items"]
            out.append(
                Fact(
                    "drift",
                    env,
                    name,
                    f"{where}/drift/{release.get('id')}/{_digest(items)}",
                    f"{where}: {drift['count']} drift entr{'y' if drift['count'] == 1 else 'ies'}"
                    f" ({drift['status'].replace('_', ' ')})",
                    "; ".join(
                        f"{d.get('field')}: desired {d.get('desired') or '-'}, "
                        f"live {d.get('live') or '-'}"
                        for d in items
                    ),
                    drift["run"],
                    list(items),
                )
            )
    reconciled = status.last_reconcile(ws, env)
    if reconciled is None:
        return out
    healed = reconciled.details.get("healed")
    for item in healed if isinstance(healed, list) else []:
        if not isinstance(item, dict) or item.get("outcome") in ("failed", "rolled_back"):
            continue
        name = str(item.get("service"))
        out.append(
            Fact(
                "healed",
                env,
                name,
                f"{env}/{name}/healed/{reconciled.id}",
                f"{env}/{name}: drift healed ({item.get('outcome')})",
                str(item.get("reason") or ""),
                reconciled.id,
            )
        )
    return out


class Notifier:
    """Turns facts into deduplicated notify jobs, and sends them."""

    def __init__(
        self,
        channels: Sequence[Channel],
        project: str,
        public_url: str | None,
        redactor: Redactor,
    ) -> None:
        self.channels = {c.name: c for c in channels}
        self.project = project
        self.public_url = public_url.rstrip("/") if public_url else None
        self.redactor = redactor

    def after_job(self, engine: Engine, job: Job) -> int:
        """Queue a notify job per new fact and channel of the envs `job` touched."""
        if not self.channels or job.kind == "notify":
            return 0
        ws = engine.page_workspace()
        envs = [job.env] if job.env else list(ws.config.project.environments)
        return self.check(engine, ws, envs)

    def check(self, engine: Engine, ws: Workspace, envs: Sequence[str]) -> int:
        queued = 0
        for env in envs:
            if env not in ws.config.environments:
                continue
            for fact in facts(ws, env):
                for channel in self.channels.values():
                    if not channel.wants(env, fact.event):
                        continue
                    job = Job(
                        id=f"notify:{channel.name}:{_digest(fact.key)}",
                        source="notify",
                        kind="notify",
                        env=env,
                        payload={"channel": channel.name, "fact": asdict(fact)},
                    )
                    if engine.submit(job):
                        queued += 1
        return queued

    def message(self, fact: Mapping[str, Any]) -> dict[str, Any]:
        run = fact.get("run")
        link = None
        if run:
            link = f"{self.public_url}/runs/{run}" if self.public_url else f"/runs/{run}"
        data = {
            "project": self.project,
            "event": fact["event"],
            "env": fact["env"],
            "service": fact["service"],
            "summary": fact["summary"],
            "reason": fact.get("reason") or "",
            "run": run,
            "run_url": link,
            "details": fact.get("details") or [],
        }
        redacted = self.redactor.redact_data(data)
        assert isinstance(redacted, dict)
        return redacted

    def send(self, job: Job) -> JobOutcome:
        name = str(job.payload.get("channel"))
        channel = self.channels.get(name)
        if channel is None:
            return "ignored", [], f"no notification channel {name!r} any more"
        message = self.message(job.payload["fact"])
        try:
            if channel.kind == "email":
                _send_email(channel, message)
            elif channel.kind == "slack":
                _post(channel, {"text": _text(message, slack=True)})
            else:
                _post(channel, message)
        except (OSError, requests.RequestException, smtplib.SMTPException) as exc:
            text = str(exc)
            if channel.url:  # requests quotes the URL's path, which may be the secret part
                parts = urlsplit(channel.url)
                for secret in (channel.url, parts.path, parts.query):
                    text = text.replace(secret, "<url>") if len(secret) > 8 else text
            note = self.redactor.redact(f"{channel.kind} {name}: {type(exc).__name__}: {text}")
            log.warning("notification %s not sent: %s", job.id, note)
            return "failed", [], note
        return "done", [], f"{channel.kind} {name}: sent {message['summary']}"


def _text(message: Mapping[str, Any], *, slack: bool = False) -> str:
    head = f"configcenter {message['project']}: {message['summary']}"
    lines = [f"*{head}*" if slack else head]
    if message["reason"]:
        lines.append(str(message["reason"]))
    if message["run_url"]:
        url = message["run_url"]
        lines.append(f"<{url}|run {message['run']}>" if slack else f"run: {url}")
    return "\n".join(lines)


def _post(channel: Channel, body: Mapping[str, Any]) -> None:
    headers = {"Content-Type": "application/json", "User-Agent": "configcenter-serve"}
    if channel.token:
        headers["Authorization"] = f"Bearer {channel.token}"
    assert channel.url is not None
    response = requests.post(
        channel.url, data=json.dumps(body), headers=headers, timeout=TIMEOUT_SECONDS
    )
    if response.status_code >= 300:
        raise requests.HTTPError(f"the receiver answered {response.status_code}")


def _send_email(channel: Channel, message: Mapping[str, Any]) -> None:
    email = EmailMessage(policy=SMTP_POLICY)
    email["Subject"] = f"[configcenter {message['project']}] {message['summary']}"
    email["From"] = channel.sender
    email["To"] = ", ".join(channel.to)
    email.set_content(_text(message) + "\n")
    with smtplib.SMTP(channel.smtp_host, channel.smtp_port, timeout=TIMEOUT_SECONDS) as smtp:
        if channel.starttls:
            smtp.starttls()
        if channel.smtp_username and channel.smtp_password:
            smtp.login(channel.smtp_username, channel.smtp_password)
        smtp.send_message(email)
