"""A real Kubernetes control plane for tests, built from pinned Go modules.

Why: configcenter's Kubernetes adapter has to be tested against the real
kube-apiserver and kube-controller-manager (Deployment rollout conditions,
``ProgressDeadlineExceeded``, Job completion), not a mock. Nodes and pods are
simulated by KWOK, so no kubelet, container runtime or image is needed and the
whole bed runs as five unprivileged processes on 127.0.0.1.

Commands (``scripts/k8s-testbed CMD`` or ``python3 -m tests.support.k8s_testbed CMD``)::

    build   go build kube-apiserver, kube-controller-manager, kube-scheduler
            (one invocation), etcd and kwok into the version-keyed cache
    up      start etcd, the control plane and kwok on free loopback ports,
            create fake nodes, wait until the API and the nodes are Ready
    down    stop exactly the processes ``up`` started (by pid file)
    env     print ``export KUBECONFIG=...`` for the running bed
    pin     rewrite the Kubernetes wrapper go.mod for another v1.34.N

Versions are pinned by the wrapper modules in ``scripts/k8s-testbed.d/``
(``kubernetes/``, ``etcd/``, ``kwok/``: go.mod + go.sum + tools.go); their
go.mod files are the single source of truth. Binaries are cached outside the
repo in ``${CONFIGCENTER_K8S_CACHE:-~/.cache/configcenter/k8s}/v1.34.N/`` with
a stamp of the build inputs, so a machine builds once.

Pod behaviour (KWOK stages in ``scripts/k8s-testbed.d/kwok/stages.yaml``):

* A scheduled pod becomes Running and Ready at once.
* **Never-ready convention**: a pod is never made ready (it stays ``Pending``,
  its containers waiting, ``Ready=False``) when any of its container or
  init-container images contains the string ``never-ready`` (for example
  ``127.0.0.1:5000/shop/api:never-ready`` or ``registry/never-ready/api:1``),
  or when it carries the label ``testbed.configcenter.io/never-ready: "true"``.
  A Deployment rolled to such a pod template therefore really gets
  ``Progressing=False, reason=ProgressDeadlineExceeded`` from the
  controller-manager once its ``progressDeadlineSeconds`` pass.
* A Running pod owned by a Job completes (``Succeeded``, exit code 0), so Jobs
  (e.g. a Kaniko build) complete.
* **Fails-job convention**: a Running pod owned by a Job whose container or
  init-container images contain ``fails-job`` fails instead (``Failed``, the
  marked containers terminated with exit code 1, reason ``Error``, and a
  termination message: the pod annotation ``testbed.configcenter.io/log`` when
  set, else a line naming the image), so a Job with ``backoffLimit: 0`` gets
  ``Failed=True`` from the real Job controller.
* A pod being deleted is removed at once.

The ServiceAccount admission plugin is disabled so ReplicaSets can create pods
in a brand-new namespace before its ``default`` ServiceAccount exists.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parents[2]
GO_MODULES_DIR = REPO_ROOT / "scripts" / "k8s-testbed.d"
STAGES_FILE = GO_MODULES_DIR / "kwok" / "stages.yaml"

NEVER_READY_LABEL = "testbed.configcenter.io/never-ready"
NEVER_READY_IMAGE_MARK = "never-ready"
FAILS_JOB_IMAGE_MARK = "fails-job"
FAILS_JOB_LOG_ANNOTATION = "testbed.configcenter.io/log"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
FAKE_NODE_LABEL = "testbed.configcenter.io/fake-node"

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
STATE_MARKER = "testbed.json"
# Order matters: started in this order, stopped in the reverse one.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def log(message: str) -> None:
    """Progress goes to stderr so ``env``'s stdout stays eval-able."""
    print(f"[k8s-testbed] {message}", file=sys.stderr, flush=True)


class TestbedError(RuntimeError):
    """The bed could not be built, started or reached."""


# --------------------------------------------------------------------------- build


@dataclass(frozen=True)
class GoBuild:
    """One ``go build`` invocation inside one wrapper module."""

    module: str  # directory under scripts/k8s-testbed.d
    packages: tuple[str, ...]
    binaries: tuple[str, ...]  # output names, one per package
    ldflags: tuple[str, ...] = ()

    @property
    def directory(self) -> Path:
        return GO_MODULES_DIR / self.module


def required_version(module: str, module_path: str) -> str:
    """The version of ``module_path`` that wrapper ``module``'s go.mod requires."""
    gomod = (GO_MODULES_DIR / module / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module_path)}\s+(v\S+)", gomod, re.MULTILINE)
    if not match:
        raise TestbedError(f"{module}/go.mod does not require {module_path}")
    return match.group(1)


def kubernetes_version() -> str:
    return required_version("kubernetes", "k8s.io/kubernetes")


def go_builds() -> list[GoBuild]:
    """What to build; the three Kubernetes commands share one invocation so
    their common packages compile (and link caches fill) once."""
    version = kubernetes_version()
    major, minor = version.lstrip("v").split(".")[:2]
    cb = "k8s.io/component-base/version"
    return [
        GoBuild(
            module="kubernetes",
            packages=tuple(
                f"k8s.io/kubernetes/cmd/{name}"
                for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
            ),
            binaries=("kube-apiserver", "kube-controller-manager", "kube-scheduler"),
            ldflags=(
                f"-X {cb}.gitVersion={version}",
                f"-X {cb}.gitMajor={major}",
                f"-X {cb}.gitMinor={minor}",
                f"-X {cb}.gitTreeState=clean",
            ),
        ),
        GoBuild(module="etcd", packages=("go.etcd.io/etcd/server/v3",), binaries=("etcd",)),
        GoBuild(module="kwok", packages=("sigs.k8s.io/kwok/cmd/kwok",), binaries=("kwok",)),
    ]


def cache_root() -> Path:
    env = os.environ.get("CONFIGCENTER_K8S_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "configcenter" / "k8s"


def bin_dir() -> Path:
    return cache_root() / kubernetes_version()


# -trimpath and -s -w: smaller binaries and a faster link; CGO off as upstream.
GO_BUILD_FLAGS = ("-trimpath",)
BASE_LDFLAGS = ("-s", "-w")
STAMP_NAME = "stamp.json"


def _build_inputs_digest(builds: Sequence[GoBuild]) -> str:
    """Hash of everything that decides the binaries, for the cache stamp."""
    digest = hashlib.sha256()
    for build in builds:
        for name in ("go.mod", "go.sum", "tools.go"):
            digest.update((build.directory / name).read_bytes())
        digest.update(json.dumps([build.packages, build.binaries, build.ldflags]).encode())
    digest.update(json.dumps([GO_BUILD_FLAGS, BASE_LDFLAGS]).encode())
    return digest.hexdigest()


def is_built(target: Path | None = None) -> bool:
    target = target or bin_dir()
    stamp = target / STAMP_NAME
    builds = go_builds()
    if not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text()).get("inputs")
    except (OSError, ValueError):
        return False
    binaries = [target / b for build in builds for b in build.binaries]
    return recorded == _build_inputs_digest(builds) and all(os.access(b, os.X_OK) for b in binaries)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise builds and bed starts that share a directory (parallel runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_with_progress(argv: Sequence[str], cwd: Path, env: dict[str, str], label: str) -> None:
    """Run a long command, reporting elapsed time now and then, failing loudly."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
        while True:
            try:
                proc.wait(timeout=60)
                break
            except subprocess.TimeoutExpired:
                log(f"  {label}: still building ({time.monotonic() - started:.0f}s)")
        output.seek(0)
        text = output.read().decode(errors="replace")
    if proc.returncode != 0:
        raise TestbedError(f"{label} failed ({' '.join(argv)}):\n{text[-6000:]}")
    log(f"  {label}: done in {time.monotonic() - started:.0f}s")


def build(force: bool = False) -> Path:
    """Build all binaries into the version-keyed cache dir unless already there."""
    go = shutil.which("go")
    target = bin_dir()
    with _locked(cache_root() / ".build.lock"):
        if not force and is_built(target):
            log(f"binaries up to date in {target}")
            return target
        if go is None:
            raise TestbedError("`go` is not on PATH: cannot build the Kubernetes test bed")
        target.mkdir(parents=True, exist_ok=True)
        (target / STAMP_NAME).unlink(missing_ok=True)
        builds = go_builds()
        env = dict(os.environ, CGO_ENABLED="0")
        nice = ["nice", "-n", "10"] if shutil.which("nice") else []
        log(f"building Kubernetes {kubernetes_version()}, etcd and kwok into {target}")
        log("a cold build takes 7-16 minutes on 2 cores; later runs reuse the cache")
        started = time.monotonic()
        for spec in builds:
            ldflags = " ".join((*BASE_LDFLAGS, *spec.ldflags))
            single = len(spec.packages) == 1
            output = target / spec.binaries[0] if single else f"{target}/"
            argv = [
                *nice,
                go,
                "build",
                *GO_BUILD_FLAGS,
                f"-ldflags={ldflags}",
                "-o",
                str(output),
                *spec.packages,
            ]
            _run_with_progress(argv, spec.directory, env, ", ".join(spec.binaries))
        for spec in builds:
            for name in spec.binaries:
                version = subprocess.run(
                    [str(target / name), "--version"], capture_output=True, text=True, check=True
                )
                log(f"  {name}: {(version.stdout or version.stderr).strip().splitlines()[0]}")
        (target / STAMP_NAME).write_text(
            json.dumps(
                {
                    "inputs": _build_inputs_digest(builds),
                    "kubernetes": kubernetes_version(),
                    "etcd": required_version("etcd", "go.etcd.io/etcd/server/v3"),
                    "kwok": required_version("kwok", "sigs.k8s.io/kwok"),
                    "seconds": round(time.monotonic() - started),
                },
                indent=2,
            )
        )
        log(f"build finished in {time.monotonic() - started:.0f}s")
        return target


def pin(version: str) -> None:
    """Rewrite kubernetes/go.mod for ``version``, deriving the staging modules
    from k8s.io/kubernetes's own go.mod, then ``go mod tidy``.

    ``go install k8s.io/kubernetes/cmd/...@v`` cannot work because that go.mod
    replaces its staging modules with local paths; the wrapper maps each of
    them to the published ``k8s.io/X v0.<minor>.<patch>`` instead.
    """
    if not re.fullmatch(r"v1\.\d+\.\d+", version):
        raise TestbedError(f"expected a release like v1.34.10, got {version!r}")
    staging_version = "v0" + version[2:]
    info = json.loads(
        subprocess.run(
            ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        or "{}"
    )
    if "GoMod" not in info:
        raise TestbedError(f"cannot download k8s.io/kubernetes@{version}: {info.get('Error')}")
    upstream = Path(info["GoMod"]).read_text()
    staging = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/src/", upstream, re.MULTILINE)
    go_line = re.search(r"^go\s+\S+$", upstream, re.MULTILINE)
    godebug = re.search(r"^godebug\s+.*$", upstream, re.MULTILINE)
    lines = ["module configcenter.invalid/k8s-testbed/kubernetes", ""]
    lines += [go_line.group(0) if go_line else "go 1.24.0", ""]
    if godebug:
        lines += [godebug.group(0), ""]
    lines += [f"require k8s.io/kubernetes {version}", "", "replace ("]
    lines += [f"\t{module} => {module} {staging_version}" for module in staging]
    lines += [")", ""]
    directory = GO_MODULES_DIR / "kubernetes"
    (directory / "go.mod").write_text("\n".join(lines))
    subprocess.run(["go", "mod", "tidy"], cwd=directory, check=True)
    log(f"pinned k8s.io/kubernetes {version} with {len(staging)} staging modules")


# --------------------------------------------------------------------------- run


def default_state_dir() -> Path:
    env = os.environ.get("CONFIGCENTER_K8S_STATE")
    return Path(env).expanduser() if env else cache_root() / "state"


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _openssl(command: str, cwd: Path) -> None:
    """Run one openssl command line (arguments never contain spaces here)."""
    result = subprocess.run(["openssl", *shlex.split(command)], cwd=cwd, capture_output=True)
    if result.returncode != 0:
        raise TestbedError(f"openssl {command} failed:\n{result.stderr.decode(errors='replace')}")


def make_pki(pki: Path) -> None:
    """A throwaway CA, an apiserver serving cert, client certs for the admin
    (O=system:masters) and the front proxy, and the ServiceAccount signing
    key, all with openssl. EC keys: quick to generate."""
    pki.mkdir(parents=True, exist_ok=True)
    new_ec_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    _openssl(
        f"req -x509 {new_ec_key} -keyout ca.key -out ca.crt -days 3650"
        " -subj /CN=configcenter-testbed-ca -addext basicConstraints=critical,CA:TRUE"
        " -addext keyUsage=critical,keyCertSign,cRLSign",
        pki,
    )
    leaves = {
        "apiserver": (
            "/CN=kube-apiserver",
            "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth",
        ),
        "admin": ("/O=system:masters/CN=configcenter-testbed-admin", "extendedKeyUsage=clientAuth"),
        # lets the apiserver publish a requestheader CA, which the controller-manager
        # and scheduler look up for their delegated authentication
        "front-proxy-client": ("/CN=front-proxy-client", "extendedKeyUsage=clientAuth"),
    }
    for name, (subject, extensions) in leaves.items():
        _openssl(f"req -new {new_ec_key} -keyout {name}.key -out {name}.csr -subj {subject}", pki)
        (pki / f"{name}.ext").write_text(
            f"{extensions}\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        )
        _openssl(
            f"x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650"
            f" -extfile {name}.ext -out {name}.crt",
            pki,
        )
    _openssl("genrsa -out sa.key 2048", pki)
    _openssl("rsa -in sa.key -pubout -out sa.pub", pki)


def write_kubeconfig(path: Path, api_url: str, pki: Path) -> None:
    """A self-contained admin kubeconfig (certs inlined), readable by any client."""

    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    path.write_text(
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: testbed\n"
        "  cluster:\n"
        f"    server: {api_url}\n"
        f"    certificate-authority-data: {b64('ca.crt')}\n"
        "users:\n"
        "- name: admin\n"
        "  user:\n"
        f"    client-certificate-data: {b64('admin.crt')}\n"
        f"    client-key-data: {b64('admin.key')}\n"
        "contexts:\n"
        "- name: testbed\n"
        "  context:\n"
        "    cluster: testbed\n"
        "    user: admin\n"
        "current-context: testbed\n"
    )
    path.chmod(0o600)


@dataclass(frozen=True)
class Testbed:
    """Where a running bed is; persisted in ``<state_dir>/testbed.json``."""

    __test__ = False  # not a pytest test class despite the name

    state_dir: Path
    kubeconfig: Path
    api_url: str
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path) -> Testbed:
        data = json.loads((state_dir / STATE_MARKER).read_text())
        return cls(
            state_dir=state_dir,
            kubeconfig=Path(data["kubeconfig"]),
            api_url=data["api_url"],
            ports=data["ports"],
        )

    def save(self) -> None:
        data = {"kubeconfig": str(self.kubeconfig), "api_url": self.api_url, "ports": self.ports}
        (self.state_dir / STATE_MARKER).write_text(json.dumps(data, indent=2))

    def ssl_context(self) -> ssl.SSLContext:
        pki = self.state_dir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return context

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Minimal authenticated JSON call, so the bed needs only the stdlib."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.api_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with urllib.request.urlopen(req, context=self.ssl_context(), timeout=10) as response:
            return json.loads(response.read() or b"null")


def _pid_file(state_dir: Path, name: str) -> Path:
    return state_dir / "run" / f"{name}.pid"


def _set_parent_death_signal() -> None:
    """Child-side hook: die with the parent so a killed pytest leaks nothing."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(
    state_dir: Path, name: str, argv: Sequence[str], env: dict[str, str] | None, tie_to_parent: bool
) -> subprocess.Popen[bytes]:
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    (state_dir / "run").mkdir(parents=True, exist_ok=True)
    with (state_dir / "logs" / f"{name}.log").open("ab") as output:
        proc = subprocess.Popen(
            list(argv),
            cwd=state_dir,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_set_parent_death_signal if tie_to_parent else None,
        )
    _pid_file(state_dir, name).write_text(f"{proc.pid}\n{argv[0]}\n")
    return proc


def _log_tail(state_dir: Path, name: str, lines: int = 40) -> str:
    path = state_dir / "logs" / f"{name}.log"
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    procs: dict[str, subprocess.Popen[bytes]],
    state_dir: Path,
) -> None:
    """Poll ``check`` until true; fail fast if a started process has exited."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise TestbedError(
                    f"{name} exited with {proc.returncode} while waiting for {what}:\n"
                    f"{_log_tail(state_dir, name)}"
                )
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError, ssl.SSLError):
            if check():
                return
        if time.monotonic() > deadline:
            raise TestbedError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)  # polling interval, not a wait for state
        delay = min(delay * 1.5, 1.0)


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        return bool(response.status == 200)


def _node_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    tainted = any(
        t.get("key", "").startswith("node.kubernetes.io/")
        for t in node.get("spec", {}).get("taints", []) or []
    )
    return ready and not tainted


def _running_components(state_dir: Path) -> dict[str, int]:
    """Pids from our pid files that are still alive and still our binaries."""
    alive = {}
    for name in COMPONENTS:
        pid_file = _pid_file(state_dir, name)
        if not pid_file.exists():
            continue
        pid_text, _, exe = pid_file.read_text().partition("\n")
        pid = int(pid_text)
        if _is_our_process(pid, exe.strip()):
            alive[name] = pid
    return alive


def _is_our_process(pid: int, exe: str) -> bool:
    """Guard against pid reuse: the pid must still run the binary we started."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    zombie = stat.rpartition(")")[2].split()[0] == "Z"
    return not zombie and cmdline == exe


def up(
    state_dir: Path | None = None,
    nodes: int = 3,
    timeout: float = 120.0,
    tie_to_parent: bool = False,
) -> Testbed:
    """Start a fresh bed in ``state_dir`` and wait until it is usable.

    ``tie_to_parent`` makes the processes die with the calling process (used by
    the pytest fixtures); the CLI leaves them running until ``down``.
    """
    state_dir = (state_dir or default_state_dir()).resolve()
    binaries = bin_dir()
    if not is_built(binaries):
        raise TestbedError(
            f"binaries missing or stale in {binaries}: run `scripts/k8s-testbed build`"
        )
    if _running_components(state_dir):
        raise TestbedError(f"a bed is already running in {state_dir}: `down` it first")
    if state_dir.exists() and any(state_dir.iterdir()):
        if not (state_dir / STATE_MARKER).exists():
            raise TestbedError(f"{state_dir} is not empty and not a test bed state dir")
        shutil.rmtree(state_dir)  # a stopped bed's leftovers: start clean
    state_dir.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    pki = state_dir / "pki"
    make_pki(pki)
    names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    api_url = f"https://127.0.0.1:{ports['apiserver']}"
    bed = Testbed(state_dir, state_dir / "admin.kubeconfig", api_url, ports)
    write_kubeconfig(bed.kubeconfig, api_url, pki)
    bed.save()
    kubeconfig = str(bed.kubeconfig)
    kwok_dir = state_dir / "kwok"
    kwok_dir.mkdir()
    kwok_config = kwok_dir / "kwok.yaml"
    kwok_config.write_text(STAGES_FILE.read_text())

    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
    delegated = [
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
    ]
    argv: dict[str, list[str]] = {
        "etcd": [
            "--name=node0",
            f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=node0={peer_url}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            # 127.0.0.1 is not a valid Endpoints address: don't maintain "kubernetes"'s
            "--endpoint-reconciler-type=none",
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            "--enable-priority-and-fairness=false",
            "--max-requests-inflight=0",
            "--max-mutating-requests-inflight=0",
            "--profiling=false",
        ],
        "kube-controller-manager": [
            f"--kubeconfig={kubeconfig}",
            *delegated,
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller-manager']}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--controllers=*",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--profiling=false",
        ],
        "kube-scheduler": [
            f"--kubeconfig={kubeconfig}",
            *delegated,
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            "--profiling=false",
        ],
        "kwok": [
            f"--kubeconfig={kubeconfig}",
            f"--config={kwok_config}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=10.240.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{ports['kwok']}",
        ],
    }
    # kwok also reads $KWOK_WORKDIR/kwok.yaml (default ~/.kwok): pin it to ours.
    kwok_env = dict(os.environ, KWOK_WORKDIR=str(kwok_dir))
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str) -> None:
        env = kwok_env if name == "kwok" else None
        procs[name] = _spawn(
            state_dir, name, [str(binaries / name), *argv[name]], env, tie_to_parent
        )

    try:
        log(f"starting bed in {state_dir}")
        start("etcd")
        wait_for("etcd", lambda: _http_ok(f"{etcd_url}/health"), 30, procs, state_dir)
        start("kube-apiserver")
        context = bed.ssl_context()
        wait_for(
            "kube-apiserver /readyz",
            lambda: _http_ok(f"{api_url}/readyz", context),
            timeout,
            procs,
            state_dir,
        )
        log(f"  API ready at {api_url} after {time.monotonic() - started:.1f}s")
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            start(name)
        for i in range(nodes):
            _create_fake_node(bed, f"kwok-node-{i}")
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # their self-signed healthz certs
        for name, port in (
            ("kube-controller-manager", ports["controller-manager"]),
            ("kube-scheduler", ports["scheduler"]),
        ):
            healthz = f"https://127.0.0.1:{port}/healthz"
            wait_for(
                f"{name} /healthz",
                functools.partial(_http_ok, healthz, insecure),
                timeout,
                procs,
                state_dir,
            )

        def nodes_ready() -> bool:
            items = bed.request("GET", f"/api/v1/nodes?labelSelector={quote(FAKE_NODE_LABEL)}")[
                "items"
            ]
            return len(items) == nodes and all(_node_ready(n) for n in items)

        wait_for(f"{nodes} fake nodes Ready and untainted", nodes_ready, timeout, procs, state_dir)
    except BaseException:
        down(state_dir)
        raise
    log(f"bed up in {time.monotonic() - started:.1f}s; export KUBECONFIG={bed.kubeconfig}")
    return bed


def _create_fake_node(bed: Testbed, name: str) -> None:
    """A Node object that kwok will manage (by annotation) and keep Ready."""
    bed.request(
        "POST",
        "/api/v1/nodes",
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    FAKE_NODE_LABEL: "true",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
        },
    )


def down(state_dir: Path | None = None, timeout: float = 20.0) -> list[str]:
    """Stop the processes recorded in ``state_dir``'s pid files, newest first.

    Only pids that still run the binary we started are signalled, so a stale
    pid file can never take down an unrelated process.
    """
    state_dir = (state_dir or default_state_dir()).resolve()
    stopped = []
    for name in reversed(COMPONENTS):
        pid = _running_components(state_dir).get(name)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not _wait_exit(pid, timeout):
                os.kill(pid, signal.SIGKILL)
                _wait_exit(pid, 5)
            stopped.append(name)
        _pid_file(state_dir, name).unlink(missing_ok=True)
    if stopped:
        log(f"stopped {', '.join(stopped)}")
    return stopped


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap if it is our own child
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            return True
        time.sleep(0.05)  # polling interval
    return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


# --------------------------------------------------------------------------- cli


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k8s-testbed", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="build the binaries into the cache (once)")
    build_cmd.add_argument("--force", action="store_true", help="rebuild even if cached")
    sub.add_parser("bin-dir", help="print the binary cache directory")
    pin_cmd = sub.add_parser("pin", help="re-pin the Kubernetes wrapper module")
    pin_cmd.add_argument("version", help="e.g. v1.34.10")
    for name in ("up", "down", "env"):
        cmd = sub.add_parser(name)
        cmd.add_argument(
            "--state-dir",
            type=Path,
            default=None,
            help="default: $CONFIGCENTER_K8S_STATE or <cache>/state",
        )
        if name == "up":
            cmd.add_argument("--nodes", type=int, default=3)
            cmd.add_argument("--timeout", type=float, default=120.0)
            cmd.add_argument("--no-build", action="store_true", help="fail instead of building")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build(force=args.force)
        elif args.command == "bin-dir":
            print(bin_dir())
        elif args.command == "pin":
            pin(args.version)
        elif args.command == "up":
            if not args.no_build:
                build()
            bed = up(args.state_dir, nodes=args.nodes, timeout=args.timeout)
            print(f"export KUBECONFIG={bed.kubeconfig}")
        elif args.command == "down":
            down(args.state_dir)
        elif args.command == "env":
            state_dir = (args.state_dir or default_state_dir()).resolve()
            if not (state_dir / STATE_MARKER).exists():
                raise TestbedError(f"no bed in {state_dir}: run `scripts/k8s-testbed up`")
            print(f"export KUBECONFIG={Testbed.load(state_dir).kubeconfig}")
    except (TestbedError, subprocess.CalledProcessError) as error:
        log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
