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
