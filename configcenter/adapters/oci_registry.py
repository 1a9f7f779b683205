"""OCI distribution registry adapter on `requests`.

Only manifest lookups are needed: a HEAD on /v2/<repo>/manifests/<tag> tells
whether an image with given inputs was already pushed, so a build can be skipped.
Auth follows Distribution: anonymous first, then Basic or the Bearer token flow
that the 401's `WWW-Authenticate` header describes. Credentials are resolved by
the caller (from `{secret: ...}` references) and never appear in errors or logs.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from typing import TYPE_CHECKING, Any

from configcenter.ports.registry import (
    RegistryAuthError,
    RegistryCredentials,
    RegistryError,
    validate_repository,
    validate_tag,
)

if TYPE_CHECKING:
    import requests

MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)

_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split `Bearer realm="...",service="..."` into scheme and parameters."""
    from requests.utils import parse_dict_header

    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v or "" for k, v in parse_dict_header(rest).items()}
    return scheme.lower(), params


class OciRegistry:
    """One registry host (`host[:port]`), plain HTTP when `insecure`."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: RegistryCredentials | None = None,
        timeout: float = 30.0,
    ) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        if not host or "/" in host.removeprefix("http://").removeprefix("https://"):
            raise RegistryError(
                f"invalid registry host {host!r}: give host[:port] only, e.g. "
                "'registry.example.com' or '127.0.0.1:5000'"
            )
        scheme = "http" if insecure else "https"
        if host.startswith(("http://", "https://")):
            scheme, _, host = host.partition("://")
        self.host = host
        self.base_url = f"{scheme}://{host}"
        self.insecure = insecure
        self._credentials = credentials
        self._timeout = timeout
        self._session = requests.Session()
        # Builds run in a thread pool; give every worker a pooled connection.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self._basic = False  # the registry asked for Basic auth once: send it upfront
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        user = self._credentials.username if self._credentials else None
        return f"OciRegistry({self.base_url!r}, user={user!r})"

    def close(self) -> None:
        self._session.close()

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """Digest of repository:tag, None when absent; errors are never "absent"."""
        validate_repository(repository)
        if not _DIGEST_RE.match(tag):
            validate_tag(tag)
        url = f"{self.base_url}/v2/{repository}/manifests/{tag}"
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        scope = f"repository:{repository}:pull"
        response = self._request("HEAD", url, headers, scope)
        if response.status_code == 404:
            return None
        self._raise_for_status(response, f"{repository}:{tag}")
        digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        # Some registries omit the header on HEAD: the digest is the body's sha256.
        response = self._request("GET", url, headers, scope)
        if response.status_code == 404:
            return None
        self._raise_for_status(response, f"{repository}:{tag}")
        return response.headers.get("Docker-Content-Digest") or (
            "sha256:" + hashlib.sha256(response.content).hexdigest()
        )

    def ping(self) -> None:
        """Check reachability and credentials once (GET /v2/), for clear early errors."""
        response = self._request("GET", f"{self.base_url}/v2/", {}, "")
        self._raise_for_status(response, "/v2/")

    # --- internals -------------------------------------------------------------

    def _request(
        self, method: str, url: str, headers: dict[str, str], scope: str
    ) -> requests.Response:
        first = self._send(method, url, self._auth_headers(headers, scope))
        if first.status_code != 401:
            return first
        challenge = first.headers.get("WWW-Authenticate", "")
        scheme, params = _parse_challenge(challenge)
        if scheme == "basic":
            if self._credentials is None:
                raise RegistryAuthError(
                    f"registry {self.host} requires credentials: set registry.username and "
                    "registry.password (a {secret: ...} reference) in configcenter.yaml"
                )
            with self._lock:
                self._basic = True
        elif scheme == "bearer":
            token = self._fetch_token(params, scope)
            with self._lock:
                self._tokens[scope] = token
        else:
            raise RegistryAuthError(
                f"registry {self.host} answered 401 with an unsupported auth challenge "
                f"{scheme or '(none)'!r}: only Basic and Bearer are supported"
            )
        retry = self._send(method, url, self._auth_headers(headers, scope))
        if retry.status_code == 401:
            raise self._rejected()
        return retry

    def _auth_headers(self, headers: dict[str, str], scope: str) -> dict[str, str]:
        out = dict(headers)
        with self._lock:
            token = self._tokens.get(scope)
            basic = self._basic
        if token:
            out["Authorization"] = f"Bearer {token}"
        elif basic and self._credentials is not None:
            pair = f"{self._credentials.username}:{self._credentials.password}"
            out["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        return out

    def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryAuthError(
                f"registry {self.host} asked for a bearer token without a realm"
            )
        query: dict[str, str] = {}
        if params.get("service"):
            query["service"] = params["service"]
        # The challenge names the scope it wants; fall back to ours.
        wanted = params.get("scope") or scope
        if wanted:
            query["scope"] = wanted
        auth = (
            (self._credentials.username, self._credentials.password) if self._credentials else None
        )
        response = self._send("GET", realm, {}, params=query, auth=auth)
        if response.status_code in (401, 403):
            raise self._rejected()
        if response.status_code != 200:
            raise RegistryError(
                f"token service {realm} for registry {self.host} answered "
                f"HTTP {response.status_code}"
            )
        try:
            body: Any = response.json()
        except ValueError as exc:
            raise RegistryError(
                f"token service {realm} for registry {self.host} did not answer JSON"
            ) from exc
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(
                f"token service {realm} for registry {self.host} answered without a token"
            )
        return token

    def _rejected(self) -> RegistryAuthError:
        if self._credentials is None:
            return RegistryAuthError(
                f"registry {self.host} requires credentials: set registry.username and "
                "registry.password (a {secret: ...} reference) in configcenter.yaml"
            )
        return RegistryAuthError(
            f"registry {self.host} rejected the credentials of user "
            f"{self._credentials.username!r}: check the username and the secret the "
            "password reference points to"
        )

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        params: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> requests.Response:
        import requests

        try:
            return self._session.request(
                method,
                url,
                headers=headers,
                params=params,
                auth=auth,
                timeout=self._timeout,
                allow_redirects=True,
            )
        except requests.exceptions.SSLError as exc:
            raise RegistryError(
                f"TLS handshake with registry {self.host} failed ({type(exc).__name__}); "
                "for a plain-HTTP registry set registry.insecure: true"
            ) from None
        except requests.exceptions.RequestException as exc:
            hint = (
                "" if self.insecure else "; for a plain-HTTP registry set registry.insecure: true"
            )
            raise RegistryError(
                f"cannot reach registry {self.host} at {self.base_url} ({type(exc).__name__}){hint}"
            ) from None

    def _raise_for_status(self, response: requests.Response, what: str) -> None:
        if response.status_code == 403:
            user = self._credentials.username if self._credentials else "anonymous"
            raise RegistryAuthError(
                f"registry {self.host} denied {user!r} access to {what}: grant pull access "
                "to that repository"
            )
        if response.status_code >= 400:
            raise RegistryError(
                f"registry {self.host} answered HTTP {response.status_code} for {what}"
            )
