"""pytest fixtures: a real Distribution registry and a real buildah.

* ``registry`` (session): Debian's ``docker-registry`` on a free 127.0.0.1 port,
  anonymous, filesystem storage in a tmp dir.
* ``auth_registry`` (session): the same with htpasswd (bcrypt) Basic auth; the
  bcrypt line comes from apache2-utils' ``htpasswd -Bbn``.
* ``token_registry`` (session): the same with Distribution's token auth; a
  small token issuer (``TokenIssuer``, in this module) checks Basic credentials
  and signs RS256 JWTs with ``openssl``; the registry verifies them against
  the issuer's certificate, exactly as it would behind a real token service.
* ``buildah_builder`` (session): a ``BuildahBuilder`` on private storage
  (``--root``/``--runroot`` in a tmp dir, vfs, chroot isolation), so tests never
  touch the machine's image store.
* ``busybox_base`` (session): a base image made from Debian's busybox-static
  (``FROM scratch`` + ``/bin/busybox`` + applet symlinks), pushed to
  ``registry`` so test Dockerfiles can ``FROM`` it and have ``RUN`` steps.

Fixtures skip, with the reason, only when a tool they start is not installed.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from configcenter.adapters.buildah import BuildahBuilder
from configcenter.adapters.oci_registry import OciRegistry, RegistryCredentials
from configcenter.ports.builder import BuildRequest
from tests.support.configrepo import git
from tests.support.helpers import free_port

REGISTRY_BIN = "/usr/bin/docker-registry"
BUSYBOX_BIN = Path("/bin/busybox")
START_TIMEOUT = 30.0


@dataclass
class RegistryServer:
    """A running registry: `host` is what image references start with."""

    host: str
    url: str
    root: Path
    log_path: Path
    credentials: RegistryCredentials | None = field(default=None, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def client(self, *, with_credentials: bool = True) -> OciRegistry:
        creds = self.credentials if with_credentials else None
        return OciRegistry(self.host, insecure=True, credentials=creds)


def _wait_ready(server: RegistryServer, process: subprocess.Popen[bytes]) -> bool:
    """Poll /v2/ until it answers (200, or 401 when auth is on) or the deadline passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(requests.ConnectionError):  # not listening yet
            if requests.get(f"{server.url}/v2/", timeout=2).status_code in (200, 401):
                return True
        time.sleep(0.05)  # polling interval, not a wait for state
    return False


def start_registry(
    workdir: Path, htpasswd: Path | None = None, token_auth: str = ""
) -> RegistryServer:
    """Start docker-registry on a free port (retrying if another process took it)."""
    if not Path(REGISTRY_BIN).exists():
        pytest.skip(f"{REGISTRY_BIN} not installed (apt-get install docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    last_log = ""
    for attempt in range(3):
        port = free_port()
        storage = workdir / "storage"
        storage.mkdir(exist_ok=True)
        auth = (
            f"auth:\n  htpasswd:\n    realm: configcenter-test\n    path: {htpasswd}\n"
            if htpasswd
            else token_auth
        )
        config = workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
            f"{auth}"
        )
        log_path = workdir / f"registry-{attempt}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = RegistryServer(
            host=f"127.0.0.1:{port}",
            url=f"http://127.0.0.1:{port}",
            root=storage,
            log_path=log_path,
            process=process,
        )
        if _wait_ready(server, process):
            return server
        process.kill()
        process.wait()
        last_log = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"docker-registry did not start in {START_TIMEOUT}s:\n{last_log}")


def stop_registry(server: RegistryServer) -> None:
    if server.process is not None and server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    stop_registry(server)


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    htpasswd_bin = shutil.which("htpasswd")
    if htpasswd_bin is None:
        pytest.skip("htpasswd not installed (apt-get install apache2-utils)")
    workdir = tmp_path_factory.mktemp("auth-registry")
    credentials = RegistryCredentials("ci-user", "s3cret-Registry-Pw")
    line = subprocess.run(
        [htpasswd_bin, "-Bbn", credentials.username, credentials.password],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(line + "\n")
    server = start_registry(workdir, htpasswd=htpasswd)
    server.credentials = credentials
    yield server
    stop_registry(server)


@pytest.fixture(scope="session")
def buildah_builder(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer
) -> Iterator[BuildahBuilder]:
    if shutil.which("buildah") is None:
        pytest.skip("buildah not installed (apt-get install buildah)")
    storage = tmp_path_factory.mktemp("buildah")
    builder = BuildahBuilder(
        root=storage / "root",
        runroot=storage / "run",
        insecure_registries=frozenset({registry.host}),
    )
    yield builder
    # vfs layers are full copies; free them rather than leave gigabytes in /tmp.
    subprocess.run([*builder.global_args(), "rm", "--all"], capture_output=True, check=False)
    subprocess.run(
        [*builder.global_args(), "rmi", "--all", "--force"], capture_output=True, check=False
    )


@pytest.fixture(scope="session")
def busybox_base(
    tmp_path_factory: pytest.TempPathFactory,
    registry: RegistryServer,
    buildah_builder: BuildahBuilder,
) -> str:
    """`127.0.0.1:PORT/base/busybox@sha256:...`: a shell and coreutils to RUN with."""
    if not BUSYBOX_BIN.exists():
        pytest.skip(f"{BUSYBOX_BIN} not installed (apt-get install busybox-static)")
    context = tmp_path_factory.mktemp("busybox-base")
    shutil.copy2(BUSYBOX_BIN, context / "busybox")
    dockerfile = (
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "mkdir", "-p", "/usr/bin", "/sbin", "/usr/sbin", "/tmp"]\n'
        'RUN ["/bin/busybox", "--install", "-s"]\n'
    )
    result = buildah_builder.build_and_push(
        BuildRequest(
            service="busybox-base",
            context_dir=context,
            dockerfile=dockerfile,
            build_args={},
            target=f"{registry.host}/base/busybox:1",
        ),
        log=lambda line: None,
    )
    return result.reference


class SourceRepo:
    """A service's source: a work repository pushing to a bare remote on disk."""

    def __init__(self, root: Path) -> None:
        self.remote_path = root / "remote.git"
        self.work = root / "work"
        self.work.mkdir(parents=True)
        git(root, "init", "-q", "--bare", "-b", "main", str(self.remote_path))
        git(self.work, "init", "-q", "-b", "main")
        git(self.work, "remote", "add", "origin", str(self.remote_path))
        self.url = str(self.remote_path)

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        """Write `files` (path -> text), commit and push to the remote."""
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(self.work, "add", "--all")
        git(self.work, "commit", "-q", "-m", message, "--allow-empty")
        git(self.work, "push", "-q", "origin", "main", "--tags", "--force")
        return git(self.work, "rev-parse", "HEAD").strip()

    def tag(self, name: str) -> None:
        git(self.work, "tag", "--force", name)
        git(self.work, "push", "-q", "origin", "--force", f"refs/tags/{name}")


@pytest.fixture
def source_repo(tmp_path: Path) -> SourceRepo:
    return SourceRepo(tmp_path / "source")


class TokenIssuer:
    """A Distribution token service (the docker token spec) on 127.0.0.1.

    GET /token?service=...&scope=repository:NAME:ACTIONS with Basic auth returns
    `{"token": JWT}` granting the requested actions; wrong credentials get 401.
    JWTs are RS256, signed by `openssl dgst`, with the certificate in `x5c`.
    """

    SERVICE = "configcenter-test-registry"
    ISSUER = "configcenter-test-issuer"

    def __init__(self, workdir: Path, credentials: RegistryCredentials) -> None:
        import http.server
        import threading

        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                "-keyout", str(self.key), "-out", str(self.cert),
                "-days", "2", "-subj", "/CN=configcenter-test-token",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        pem = self.cert.read_text()
        body = "".join(ln for ln in pem.splitlines() if not ln.startswith("-----"))
        self.cert_der_b64 = body
        self.credentials = credentials
        self.requests = 0
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.requests += 1
                status, payload = issuer.answer(self.path, self.headers.get("Authorization", ""))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def registry_config(self) -> str:
        return (
            "auth:\n  token:\n"
            f"    realm: {self.url}\n    service: {self.SERVICE}\n"
            f"    issuer: {self.ISSUER}\n    rootcertbundle: {self.cert}\n"
        )

    def answer(self, path: str, authorization: str) -> tuple[int, dict[str, object]]:
        from urllib.parse import parse_qs, urlsplit

        expected = "Basic " + base64.b64encode(
            f"{self.credentials.username}:{self.credentials.password}".encode()
        ).decode("ascii")
        if authorization != expected:
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        query = parse_qs(urlsplit(path).query)
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.ISSUER,
            "sub": self.credentials.username,
            "aud": query.get("service", [""])[0],
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": f"{now}-{self.requests}",
            "access": access,
        }
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.cert_der_b64]}
        signing_input = f"{_b64url(header)}.{_b64url(claims)}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        token = signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
        return 200, {"token": token, "access_token": token, "expires_in": 300}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _b64url(data: Mapping[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed (apt-get install openssl): it signs the test tokens")
    workdir = tmp_path_factory.mktemp("token-registry")
    credentials = RegistryCredentials("token-user", "t0ken-Secret-Pw")
    issuer = TokenIssuer(workdir, credentials)
    server = start_registry(workdir, token_auth=issuer.registry_config())
    server.credentials = credentials
    yield server
    stop_registry(server)
    issuer.close()


def image_files(registry: RegistryServer, reference: str) -> dict[str, bytes]:
    """Every regular file in the pushed image's layers, read back through the registry API."""
    name, digest = reference.removeprefix(registry.host + "/").split("@")
    manifest = requests.get(
        f"{registry.url}/v2/{name}/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    ).json()
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        blob = requests.get(f"{registry.url}/v2/{name}/blobs/{layer['digest']}", timeout=30)
        with tarfile.open(fileobj=io.BytesIO(blob.content), mode="r:*") as archive:
            for member in archive.getmembers():
                if member.isfile():
                    handle = archive.extractfile(member)
                    assert handle is not None
                    files[member.name.lstrip("./")] = handle.read()
    return files
