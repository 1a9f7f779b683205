"""Marathon's REST API and the DC/OS secret store, as one platform target reaches them.

The `marathon` PyPI client (0.13) is used for `/v2/deployments`,
`/v2/apps/{id}/versions` and DELETE `/v2/apps/{id}`. Raw `requests` calls (on
the client's own session) are used where the client is broken or lacking:
its model serialisation (`MarathonApp.to_json`, used by `update_app`) raises
on Python 3.10+ (`collections.Iterable`), and its models reject app fields
they do not know (`MarathonApp.from_json` fails on e.g. `tty`), so PUT/GET of
app definitions and versions go through `requests`; the DC/OS secret store
has no client support at all. Connection errors and 502/503/504 (leader
changes) are retried; every refusal becomes a typed `MarathonError` that says
what, where, and what to do.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from configcenter.adapters.marathon_diff import runs
from configcenter.core.errors import TransientFailure
from configcenter.ports.platform import PlatformError, PlatformTarget

if TYPE_CHECKING:
    import requests


log = logging.getLogger("configcenter.adapters.marathon")  # one logger name for the adapter

APP_FILE = "marathon.json"
LABEL_ENV = "configcenter.io/env"
LABEL_SERVICE = "configcenter.io/service"
LABEL_RELEASE = "configcenter.io/release"
LABEL_DIGEST = "configcenter.io/config-digest"
_SEGMENT = re.compile(
    r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$"
)
_RETRY_STATUS = (502, 503, 504)
#: Marathon answers 403 with this message when `--max_running_deployments` is reached
#: (TooManyRunningDeploymentsException), and 403 for authorization failures otherwise.
#: The text is "Max number (100) of running deployments is achieved. ..." in Marathon's
#: Exception.scala (older releases: "... number of concurrent deployments ...").
_TOO_MANY_DEPLOYMENTS = re.compile(
    r"max(imum)? number (\(\d+\) )?of (concurrent|running) deployments", re.I
)


_TAG = re.compile(r"<[^>]+>")
_TITLE = re.compile(r"<title>(.*?)</title>", re.I | re.S)
JSON = dict[str, Any]


class MarathonError(PlatformError):
    """A Marathon call failed; the message says what, where, and what to do."""


class MarathonSettingsError(MarathonError, ValueError):
    """The platform settings or the rendered marathon.json cannot be used."""


class MarathonSecretError(MarathonError):
    """A secret reference cannot be used on Marathon; names the ref, never the value."""


class MarathonUnavailableError(MarathonError, TransientFailure):
    """Marathon (or the secret store) could not be reached after retries."""


class MarathonAuthError(MarathonError):
    """The token is missing or invalid (401), or its account lacks a permission (403)."""


class MarathonBusyError(MarathonError):
    """Marathon refused a new deployment: too many are running (its 403). Nothing changed."""


class MarathonConflictError(MarathonError):
    """The app is locked by a running deployment (HTTP 409)."""

    def __init__(self, message: str, deployment_ids: list[str]) -> None:
        super().__init__(message)
        self.deployment_ids = deployment_ids


class MarathonValidationError(MarathonError):
    """Marathon rejected the app definition (HTTP 400/422); carries its message and details."""

    def __init__(self, message: str, marathon_message: str, details: list[Any]) -> None:
        super().__init__(message)
        self.marathon_message = marathon_message
        self.details = details


@dataclass
class Deployments:
    """The deployments this adapter started and judged, shared by apply and wait."""

    #: app id -> deployment id started by our last apply.
    pending: dict[str, str] = field(default_factory=dict)
    #: deployments whose wait() we reported failed: safe to cancel on re-apply.
    failed: set[str] = field(default_factory=set)


class MarathonApi:
    """HTTP to one Marathon (apps under one group) and its secret store."""

    def __init__(
        self,
        target: PlatformTarget,
        *,
        url: str,
        group: str,
        secrets_url: str | None,
        secret_store: str,
        session: requests.Session,
        request_timeout: float,
        retries: int,
        retry_delay: float,
    ) -> None:
        self.target = target
        self.url = url
        self.group = group
        self.secrets_url = secrets_url
        self.secret_store = secret_store
        self._session = session
        self.request_timeout = request_timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self._client_obj: Any = None

    def _marathon(self) -> Any:
        if self._client_obj is None:
            from marathon import MarathonClient

            quiet_library_log()
            self._client_obj = MarathonClient(
                self.url, timeout=self.request_timeout, session=self._session
            )
        return self._client_obj

    def call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the marathon client, retrying when no server answered."""
        from marathon.exceptions import MarathonHttpError, NoResponseError, NotFoundError

        for attempt in range(self.retries):
            try:
                return getattr(self._marathon(), method)(*args, **kwargs)
            except NoResponseError:
                if attempt + 1 == self.retries:
                    raise MarathonUnavailableError(
                        f"cannot reach Marathon at {self.url} ({what}) after {self.retries} "
                        f"attempts; check platforms.{self.target.name}.url and that Marathon is up"
                    ) from None
                time.sleep(self.retry_delay * 2**attempt)
            except NotFoundError:
                raise
            except MarathonHttpError as exc:
                body = {
                    "message": getattr(exc, "error_message", ""),
                    "details": getattr(exc, "error_details", None) or [],
                }
                raise self.http_error(exc.status_code, body, what) from None
        raise AssertionError("unreachable")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: JSON | None = None,
        ok: tuple[int, ...] = (200, 201),
        what: str | None = None,
        retry: bool = True,
    ) -> requests.Response:
        response = self.send(method, self.url + path, params=params, body=body, retry=retry)
        if response.status_code in ok:
            return response
        try:
            payload = response.json()
        except ValueError:
            payload = {"message": _plain_text(response.text)}
        raise self.http_error(response.status_code, payload, what or f"{method} {path}")

    def send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: JSON | None = None,
        retry: bool = True,
    ) -> requests.Response:
        """One HTTP call with retries on connection errors and 502/503/504 (leader changes).

        Without `retry` one attempt is made: for calls that may have taken
        effect although no good answer came back (a PUT answered 503 by a
        leader proxy that timed out), where the caller checks before repeating.
        """
        import requests

        target = url.split("?")[0]
        problem = ""
        attempts = self.retries if retry else 1
        for attempt in range(attempts):
            try:
                response = self._session.request(
                    method, url, params=params, json=body, timeout=self.request_timeout
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = type(exc).__name__
            else:
                if response.status_code not in _RETRY_STATUS:
                    return response
                problem = f"HTTP {response.status_code}" + _message_of(response)
            if attempt + 1 < attempts:
                time.sleep(self.retry_delay * 2**attempt)
        raise MarathonUnavailableError(
            f"cannot reach {target} ({method}): {problem} after {attempts} "
            f"{'attempt' if attempts == 1 else 'attempts'}; "
            f"check platforms.{self.target.name} (url, secrets_url) and that the service is up"
        )

    def http_error(self, status: int, payload: Any, what: str) -> MarathonError:
        payload = payload if isinstance(payload, dict) else {"message": _plain_text(payload)}
        # Marathon says `message`; authorizer plugins answer their own shape (the example
        # plugin: `problem`), DC/OS's Admin Router an HTML page.
        message = str(
            payload.get("message")
            or payload.get("problem")
            or payload.get("description")
            or f"HTTP {status}"
        )
        if status == 409:
            ids = [
                str(d.get("id")) for d in payload.get("deployments") or [] if isinstance(d, dict)
            ]
            return MarathonConflictError(
                f"{what}: Marathon at {self.url} says the app is locked by running deployment(s) "
                f"{', '.join(ids) or '?'} ({message}). Wait for the rollout to finish, or re-run "
                "with --force (configcenter apply/deploy/rollback --force) to cancel it",
                ids,
            )
        if status in (400, 422):
            details = payload.get("details") or []
            parts = []
            for detail in details:
                if isinstance(detail, dict):
                    errors = "; ".join(str(e) for e in detail.get("errors") or [])
                    parts.append(f"{detail.get('path', '/')}: {errors}")
            listed = (" (" + ", ".join(parts) + ")") if parts else ""
            return MarathonValidationError(
                f"{what}: Marathon at {self.url} rejected the app definition: {message}{listed}; "
                f"fix the service's {APP_FILE}.j2 template or the values it uses",
                message,
                list(details),
            )
        if status == 403 and _TOO_MANY_DEPLOYMENTS.search(message):
            return MarathonBusyError(
                f"{what}: Marathon at {self.url} accepts no new deployment now (HTTP 403: "
                f"{message}). Nothing was changed: wait for running deployments to finish "
                "(GET /v2/deployments) and apply again, or raise Marathon's "
                "--max_running_deployments"
            )
        if status == 401:
            return MarathonAuthError(
                f"{what}: Marathon at {self.url} did not accept the credentials (HTTP 401: "
                f"{message}); set platforms.{self.target.name}.token to a secret ref holding a "
                "valid, unexpired DC/OS token"
            )
        if status == 403:
            return MarathonAuthError(
                f"{what}: Marathon at {self.url} refused the action (HTTP 403: {message}): the "
                f"token of platforms.{self.target.name} is valid but its account lacks the "
                f"permission; grant it dcos:service:marathon:marathon:services:{self.group} "
                "(full), or use a token of an account that has it"
            )
        return MarathonError(f"{what}: Marathon at {self.url} answered HTTP {status}: {message}")

    def get_app(self, app_id: str, embed: tuple[str, ...] = ()) -> JSON | None:
        response = self.request(
            "GET", f"/v2/apps{app_id}", params={"embed": list(embed)}, ok=(200, 404)
        )
        if response.status_code == 404:
            return None
        app = response.json().get("app")
        return app if isinstance(app, dict) else None

    def put_app(self, app_id: str, definition: JSON, *, force: bool) -> JSON:
        # Marathon's PUT is a partial update unless told otherwise: fields the
        # definition leaves out (a health check or constraint a failed release
        # added, a field removed from the template) would survive. The rendered
        # definition is the whole app, so it replaces the whole app.
        params = {"partialUpdate": "false"}
        if force:
            params["force"] = "true"
        unavailable: MarathonUnavailableError | None = None
        for attempt in range(self.retries):
            try:
                response = self.request(
                    "PUT",
                    f"/v2/apps{app_id}",
                    params=params,
                    body=definition,
                    what=f"deploy {app_id}",
                    retry=False,
                )
                break
            except MarathonUnavailableError as exc:
                # A 503 (or a lost answer) may come after Marathon started the
                # deployment: repeating the PUT blindly would get 409 from our own
                # deployment. Look first; adopt it if the app already is ours.
                unavailable = exc
                current = self.get_app(app_id, embed=("app.deployments",))
                if current is not None and runs(current, definition):
                    running = [str(d["id"]) for d in current.get("deployments") or []]
                    log.warning(
                        "marathon %s: PUT %s got no good answer (%s) but Marathon took it; "
                        "following deployment %s",
                        self.target.name,
                        app_id,
                        exc,
                        ", ".join(running) or "(already finished)",
                    )
                    return {"deploymentId": running[0] if running else "", "version": ""}
                if attempt + 1 < self.retries:
                    time.sleep(self.retry_delay * 2**attempt)
        else:
            assert unavailable is not None
            raise unavailable
        result: JSON = response.json()
        if "deploymentId" not in result and response.headers.get("Marathon-Deployment-Id"):
            result["deploymentId"] = response.headers["Marathon-Deployment-Id"]
        return result

    def app_id(self, service: str) -> str:
        """`<group>/<service>`, after checking the service name is a valid Marathon id segment."""
        if not _SEGMENT.match(service):
            raise MarathonSettingsError(
                f"service name {service!r} cannot be a Marathon app id: use lowercase letters, "
                "digits, '-' and '.', starting and ending with a letter or digit"
            )
        return f"{self.group}/{service}"

    def secret_prefix(self, service: str) -> str:
        return f"{self.group.strip('/')}/{service}/"

    def secret_request(
        self, method: str, source: str, *, value: str | None = None, ok: tuple[int, ...]
    ) -> requests.Response:
        assert self.secrets_url is not None
        url = f"{self.secrets_url}/secret/{quote(self.secret_store)}/{quote(source)}"
        response = self.send(method, url, body=None if value is None else {"value": value})
        if response.status_code not in ok:
            try:
                payload = response.json()
            except ValueError:
                payload = None
            # The store's answer describes the path, never the value we sent.
            raise self.secret_error(response.status_code, payload, method, source)
        return response

    def list_secrets(self, prefix: str) -> list[str]:
        """The secret paths under `prefix` (a path ending in '/'), relative to it: the
        Secrets API's `GET /secret/{store}/{path}?list=true` (`{"array": [...]}`); none when
        the path does not exist."""
        assert self.secrets_url is not None
        path = prefix.rstrip("/")
        url = f"{self.secrets_url}/secret/{quote(self.secret_store)}/{quote(path)}"
        response = self.send("GET", url, params={"list": "true"})
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise self.secret_error(response.status_code, None, "LIST", prefix)
        try:
            found = (response.json() or {}).get("array") or []
        except ValueError:
            found = []
        return [str(p) for p in found if isinstance(p, str)]

    def secret_error(self, status: int, payload: Any, method: str, source: str) -> MarathonError:
        """A DC/OS secret store refusal, said as what it is (never "fix marathon.json.j2")."""
        # The Secrets API documents status codes only: the body, when there is one, is
        # quoted but never needed to decide.
        payload = payload if isinstance(payload, dict) else {}
        code = str(payload.get("code") or "")
        text = str(payload.get("description") or payload.get("message") or "")
        said = f"HTTP {status}" + (f" {code}" if code else "") + (f": {text}" if text else "")
        where = f"{method} secret {source} in store {self.secret_store!r} at {self.secrets_url}"
        if status == 401:
            fix = (
                f"set platforms.{self.target.name}.token to a secret ref holding a valid, "
                "unexpired DC/OS token"
            )
        elif status == 403:
            action = {"PUT": "create", "PATCH": "update", "GET": "read", "LIST": "read"}.get(
                method, "delete"
            )
            fix = (
                f"grant the token's account dcos:secrets:{self.secret_store}:{source} "
                f"{action} (or dcos:secrets:{self.secret_store}:{self.secret_prefix('')}* )"
            )
        elif status == 404:
            fix = (
                f"check platforms.{self.target.name}.secret_store (is {self.secret_store!r}) "
                "and secrets_url: the store or the secret does not exist"
            )
        elif status == 400:
            fix = (
                "the store rejected the secret's path or value; the path is built from the "
                "env's group, the service and the key, so check they are valid store paths"
            )
        else:
            fix = f"check the secret store at {self.secrets_url}"
        return MarathonSecretError(f"{where}: the secret store refused ({said}); {fix}")


def _message_of(response: requests.Response) -> str:
    """` (Marathon's message)` from an error answer, when it has one."""
    try:
        payload = response.json()
    except ValueError:
        message: object = _plain_text(response.text)
    else:
        message = payload.get("message") if isinstance(payload, dict) else None
    return f" ({str(message)[:200]})" if message else ""


def _plain_text(body: object) -> str:
    """An error page as one line of text: Jetty's and Admin Router's answers are HTML."""
    text = str(body or "")
    title = _TITLE.search(text)
    text = _TAG.sub(" ", title.group(1) if title else text)
    return " ".join(text.split())[:500]


#: The `marathon` client's logger: it logs "Got response from <url>" at INFO on every
#: request (each poll of a rollout), noise in serve's log and any host's INFO output.
LIBRARY_LOGGER = "marathon"


def quiet_library_log() -> None:
    """The `marathon` client's logger to WARNING (its HTTP errors still show), unless the
    host process set a level for it on purpose. configcenter's own adapter lines
    (`configcenter.adapters.marathon`) are not affected."""
    library = logging.getLogger(LIBRARY_LOGGER)
    if library.level == logging.NOTSET:
        library.setLevel(logging.WARNING)


def new_session() -> requests.Session:
    import requests

    return requests.Session()


def required_setting(target: PlatformTarget, key: str) -> str:
    value = target.settings.get(key, "")
    if not value:
        raise MarathonSettingsError(
            f"platforms.{target.name} has no {key!r}; Marathon platforms need "
            'url (Marathon\'s base URL) and group (e.g. "/shop/{{ env }}")'
        )
    return str(value)


def group_path(target: PlatformTarget) -> str:
    raw = required_setting(target, "group")
    group = "/" + raw.strip("/")
    segments = group.strip("/").split("/")
    if group == "/" or not all(_SEGMENT.match(s) for s in segments):
        raise MarathonSettingsError(
            f"platforms.{target.name}.group {raw!r} (env {target.env}) is not a Marathon group "
            "path; use lowercase segments of letters, digits, '-' and '.', e.g. /shop/dev"
        )
    return group
