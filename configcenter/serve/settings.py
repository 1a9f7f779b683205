"""serve's settings: the `serve:` section of configcenter.yaml, secrets resolved once.

Every resolved value is registered with the workspace's Redactor, so a token
that ever reaches a log line, an error or a stored record is masked there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from configcenter.core.errors import UserError
from configcenter.core.model import Config
from configcenter.core.redact import Redactor
from configcenter.core.schema import parse_duration
from configcenter.serve.notify import EVENTS, KINDS, Channel
from configcenter.serve.poll import DEFAULT_POLL_INTERVAL


class ServeSettingsError(UserError):
    """A serve setting cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class ServeSettings:
    webhook_token: str | None = None  # GitLab: X-Gitlab-Token
    registry_token: str | None = None  # Distribution: Authorization: Bearer <token>
    api_token: str | None = None  # API, page, metrics: Authorization: Bearer <token>
    basic_user: str | None = None  # ... or HTTP basic auth
    basic_password: str | None = None
    files_key: str | None = None  # signs /files URLs (the Marathon platforms' files_key)
    poll_interval: float = DEFAULT_POLL_INTERVAL  # seconds between Git polls of the config repo
    public_url: str | None = None  # how users reach serve: links in notifications
    channels: tuple[Channel, ...] = ()  # serve.notifications
    actions: bool = True  # serve.actions: false keeps the console read-only

    @property
    def api_protected(self) -> bool:
        return bool(self.api_token or self.basic_password)


def load_settings(config: Config, redactor: Redactor) -> ServeSettings:
    """Read `serve:` (and forge.webhook_token as the GitLab fallback) and resolve secrets."""
    data: Mapping[str, Any] = config.project.doc.data or {}
    serve = data.get("serve") or {}
    forge = config.project.forge or {}
    basic = serve.get("basic_auth") or {}
    webhook = serve.get("webhook_token", forge.get("webhook_token"))
    where = "serve.webhook_token" if "webhook_token" in serve else "forge.webhook_token"
    return ServeSettings(
        webhook_token=_secret(webhook, where, redactor),
        registry_token=_secret(serve.get("registry_token"), "serve.registry_token", redactor),
        api_token=_secret(serve.get("api_token"), "serve.api_token", redactor),
        basic_user=str(basic["username"]) if basic.get("username") else None,
        basic_password=_secret(basic.get("password"), "serve.basic_auth.password", redactor),
        files_key=_secret(serve.get("files_key"), "serve.files_key", redactor),
        poll_interval=_duration(serve.get("poll_interval"), "serve.poll_interval"),
        public_url=str(serve["public_url"]) if serve.get("public_url") else None,
        channels=tuple(
            _channel(item, index, redactor)
            for index, item in enumerate(serve.get("notifications") or [])
        ),
        actions=serve.get("actions") is not False,
    )


def _channel(item: Mapping[str, Any], index: int, redactor: Redactor) -> Channel:
    where = f"serve.notifications[{index}]"
    kind = str(item.get("kind"))
    if kind not in KINDS:
        raise ServeSettingsError(
            f"configcenter.yaml {where}.kind must be one of {', '.join(KINDS)}"
        )
    events = tuple(str(e) for e in item.get("events") or EVENTS)
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise ServeSettingsError(
            f"configcenter.yaml {where}.events: unknown {', '.join(unknown)}; "
            f"use some of {', '.join(EVENTS)}"
        )
    common: dict[str, Any] = {
        "name": str(item.get("name") or f"{kind}-{index}"),
        "kind": kind,
        "environments": tuple(str(e) for e in item.get("environments") or ()),
        "events": events,
    }
    if kind == "email":
        smtp = item.get("smtp") or {}
        to = tuple(str(t) for t in item.get("to") or ())
        if not to:
            raise ServeSettingsError(f"configcenter.yaml {where}.to: give at least one address")
        return Channel(
            **common,
            smtp_host=str(smtp.get("host") or "localhost"),
            smtp_port=int(smtp.get("port") or 25),
            smtp_username=str(smtp["username"]) if smtp.get("username") else None,
            smtp_password=_secret(smtp.get("password"), f"{where}.smtp.password", redactor),
            starttls=bool(smtp.get("starttls")),
            sender=str(item.get("from") or "configcenter@localhost"),
            to=to,
        )
    url = item.get("url")
    if kind == "slack" and not isinstance(url, dict):
        raise ServeSettingsError(
            f"configcenter.yaml {where}.url: a Slack webhook URL is a secret: write url: "
            '{secret: "env:NAME"}'
        )
    resolved = _secret(url, f"{where}.url", redactor) if isinstance(url, dict) else url
    if not isinstance(resolved, str) or not resolved.startswith(("http://", "https://")):
        raise ServeSettingsError(f"configcenter.yaml {where}.url: give the http(s) URL to post to")
    return Channel(
        **common, url=resolved, token=_secret(item.get("token"), f"{where}.token", redactor)
    )


def _duration(value: object, where: str) -> float:
    if value is None:
        return DEFAULT_POLL_INTERVAL
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ServeSettingsError(f"configcenter.yaml {where}: {exc}") from None


def _secret(value: object, where: str, redactor: Redactor) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        resolved = value  # forge.webhook_token may be plain (the schema allows it there)
    elif isinstance(value, dict) and isinstance(value.get("secret"), str):
        from configcenter import wiring

        try:
            resolved = wiring.resolve_secret(value["secret"], redactor)
        except wiring.SecretError as exc:
            raise ServeSettingsError(f"configcenter.yaml {where}: {exc}") from None
    else:
        raise ServeSettingsError(
            f'configcenter.yaml {where} must be {{secret: "env:NAME"}}, not {type(value).__name__}'
        )
    resolved = resolved.strip()
    if not resolved:
        raise ServeSettingsError(
            f"configcenter.yaml {where} resolves to an empty value, so any request would "
            "pass: give the secret a value"
        )
    redactor.register(resolved)
    return resolved
