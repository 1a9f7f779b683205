"""The configcenter demo: the example config repo, from validate to a rollback.

Builds a scratch workspace in ./demo-workspace (config repo with template tags,
a bare deploy repo, the api's source repo), starts a real OCI registry, builds
a busybox base image with buildah and, when Go is here, starts the real
Kubernetes test bed. Then it runs the commands a user would, printing each.
"""

from __future__ import annotations

import argparse
import base64
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import k8s_testbed  # noqa: E402  (test-bed helpers double as demo helpers)
from tests.support.helpers import free_port  # noqa: E402
from tests.support.marathon_double import MarathonDouble  # noqa: E402
from tests.support.registry_fixtures import start_registry, stop_registry  # noqa: E402

BIN = Path(sys.executable).parent


def banner(text: str) -> None:
    print(f"\n\033[1;36m## {text}\033[0m", flush=True)


def cc(*args: str, cwd: Path, env: dict[str, str], expect: int = 0) -> int:
    print(f"\033[1m$ configcenter {shlex.join(args)}\033[0m", flush=True)
    code = subprocess.run([str(BIN / "configcenter"), *args], cwd=cwd, env=env).returncode
    if code != expect:
        print(f"(exit {code}, expected {expect})", flush=True)
        sys.exit(1)
    if code:
        print(f"(exit {code}, as expected)", flush=True)
    return code


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        raise SystemExit(f"demo: {path} has no {old!r}")
    path.write_text(text.replace(old, new))


def build_base_image(host: str, workspace: Path) -> None:
    from configcenter.adapters.buildah import BuildahBuilder
    from configcenter.ports.builder import BuildRequest

    context = workspace / "busybox-base"
    context.mkdir()
    shutil.copy2("/bin/busybox", context / "busybox")
    BuildahBuilder(insecure_registries=frozenset({host})).build_and_push(
        BuildRequest(
            service="busybox-base",
            context_dir=context,
            dockerfile=(
                "FROM scratch\nCOPY busybox /bin/busybox\n"
                'RUN ["/bin/busybox", "mkdir", "-p", "/usr/bin", "/sbin", "/usr/sbin", "/tmp"]\n'
                'RUN ["/bin/busybox", "--install", "-s"]\n'
            ),
            build_args={},
            target=f"{host}/base/busybox:latest",
        ),
        log=lambda line: None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the registry and cluster up")
    parser.add_argument("--no-k8s", action="store_true", help="skip the Kubernetes part")
    args = parser.parse_args()

    workspace = ROOT / "demo-workspace"
    if workspace.exists():
        k8s_testbed.main(["down", "--state-dir", str(workspace / "k8s")])
        shutil.rmtree(workspace)
    banner("A scratch workspace from the example config repo")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make-example-repo"), str(workspace)], check=True
    )
    config = workspace / "shop-config"
    env = dict(os.environ)
    env.update(
        XDG_STATE_HOME=str(workspace / "state"),
        XDG_CACHE_HOME=str(workspace / "cache"),
        SHOP_DEV_DB_PASSWORD="demo-dev-password",
        SHOP_FILES_KEY="demo-files-key-0f3c9a",  # signs serve's file URLs for Marathon
        PATH=f"{BIN}:{env.get('PATH', '')}",
    )
    registry = start_registry(workspace / "registry")
    cluster = None
    try:
        banner(f"A real OCI registry on {registry.host}; a busybox base image built with buildah")
        build_base_image(registry.host, workspace)
        edit(config / "configcenter.yaml", "127.0.0.1:5000", registry.host)
        edit(config / "environments/_defaults.yaml", "127.0.0.1:5000", registry.host)
        git("commit", "-qam", f"demo: registry on {registry.host}", cwd=config)

        banner("Validate, explain, render, plan")
        cc("validate", cwd=config, env=env)
        cc("explain", "dev", "api", "LOG_LEVEL", cwd=config, env=env)
        cc("render", "dev", "--out", "out", cwd=config, env=env)
        cc("plan", "prod", "--service", "api", cwd=config, env=env)
        print("$ configcenter plan dev --json --exit-code | head -c 600")
        result = subprocess.run(
            [str(BIN / "configcenter"), "plan", "dev", "--json", "--exit-code"],
            cwd=config,
            env=env,
            capture_output=True,
            text=True,
        )
        print(f"{result.stdout[:600]}...\n(exit {result.returncode}: changes pending)")

        rollout = not args.no_k8s and shutil.which("go") is not None
        if rollout:
            banner(
                "The real Kubernetes control plane (kube-apiserver, controller-manager, "
                "scheduler, etcd, KWOK)"
            )
            k8s_testbed.main(["up", "--state-dir", str(workspace / "k8s")])
            cluster = workspace / "k8s"
            env["KUBECONFIG"] = str(next(cluster.glob("*.kubeconfig")))
        else:
            print("(no Go toolchain: commits only, no rollout)")

        extra = [] if rollout else ["--no-rollout"]
        banner("Apply dev: build api from source, commit, roll out in dependency order")
        cc("apply", "dev", *extra, cwd=config, env=env)
        banner("Apply again: nothing changed, nothing happens")
        cc("apply", "dev", *extra, cwd=config, env=env)

        if rollout:
            banner(
                "Secrets reach the containers as values: db reads DB_PASSWORD as "
                "POSTGRES_PASSWORD, worker inside conf/worker.yaml"
            )
            show_delivery(env["KUBECONFIG"], "shop-dev", ("db", "worker"), "demo-dev-password")
            banner("A rotated secret is a change: only the services that use it roll")
            env["SHOP_DEV_DB_PASSWORD"] = "demo-dev-password-rotated"
            cc("plan", "dev", cwd=config, env=env)
            cc("apply", "dev", cwd=config, env=env)
            show_delivery(env["KUBECONFIG"], "shop-dev", ("db",), "demo-dev-password-rotated")

        banner("A value change: only worker is updated")
        edit(config / "environments/dev/worker.yaml", "shop-dev-jobs", "shop-dev-jobs-v2")
        git("commit", "-qam", "dev: new worker queue", cwd=config)
        cc("plan", "dev", cwd=config, env=env, expect=0)
        cc("apply", "dev", *extra, cwd=config, env=env)

        if rollout:
            banner("A broken image: the rollout fails and is rolled back to the last good (exit 3)")
            edit(config / "environments/dev/web.yaml", "web:3.0.1", "web:3.1.0-never-ready")
            git("commit", "-qam", "dev: web 3.1.0", cwd=config)
            cc("apply", "dev", cwd=config, env=env, expect=3)
            banner("No retry loop: the failed release is blocked until its inputs change")
            cc("plan", "dev", cwd=config, env=env)
            banner(
                "A failing smoke test: web 3.1.1 rolls out ready, its verification Job fails, "
                "and image and config go back to the last good release (exit 3)"
            )
            edit(config / "environments/dev/web.yaml", "web:3.1.0-never-ready", "web:3.1.1")
            edit(
                config / "environments/dev/web.yaml",
                "PUBLIC_HOSTNAME: dev.shop.example.com",
                "PUBLIC_HOSTNAME: dev.shop.example.com\n"
                "  SMOKE_IMAGE: registry.example.com/shop/smoke:1.0-fails-job  # test bed: exits 1",
            )
            git("commit", "-qam", "dev: web 3.1.1 (its smoke test fails)", cwd=config)
            cc("apply", "dev", cwd=config, env=env, expect=3)
            cc("history", "dev", "--service", "web", cwd=config, env=env)
            banner("Drift: what runs matches the deploy repo")
            cc("reconcile", "dev", cwd=config, env=env)
        else:
            banner("Roll the worker's config back to its previous release")
            cc("rollback", "dev", "worker", "--no-rollout", cwd=config, env=env)
        banner("History")
        cc("history", "dev", cwd=config, env=env)
        banner("Promote what dev runs successfully to demo (a merge request; here the local forge)")
        cc("promote", "dev", "demo", cwd=config, env=env)
        if rollout:
            marathon_files(config, env, workspace)
        print(
            f"\nThe workspace is in {workspace}; the deploy repo is "
            f"{workspace / 'shop-deploy.git'} (try: git -C {workspace / 'shop-deploy.git'} log)"
        )
    finally:
        if not args.keep:
            stop_registry(registry)
            if cluster is not None:
                k8s_testbed.main(["down", "--state-dir", str(cluster)])
        else:
            print(f"registry {registry.host} and the cluster are still up (--keep)")


def marathon_files(config: Path, env: dict[str, str], workspace: Path) -> None:
    """prod's reports on Marathon: its config file reaches the task through the Mesos fetcher.

    Marathon cannot run here, so this is the Marathon double the tests use (it follows
    Marathon's REST API and downloads each app's `fetch` URIs into the new task's sandbox,
    as the Mesos fetcher does); `configcenter serve` hands out the signed file URLs.
    """
    banner(
        "prod's reports runs on Marathon (here the tests' Marathon double): its "
        "config/reports.yaml reaches the task through the Mesos fetcher, from configcenter serve"
    )
    marathon = MarathonDouble(deploy_seconds=0.5)
    marathon.start()
    port = free_port()
    env = dict(env, SHOP_PROD_DB_PASSWORD="demo-prod-pw")
    edit(config / "configcenter.yaml", "http://127.0.0.1:8080", marathon.url)
    edit(config / "configcenter.yaml", "http://127.0.0.1:8090", f"http://127.0.0.1:{port}")
    git("commit", "-qam", "demo: Marathon and serve on this machine", cwd=config)
    print(f"$ configcenter serve --port {port} &   (hands out release files by signed URL)")
    log = (workspace / "serve.log").open("wb")
    serve = subprocess.Popen(
        [str(BIN / "configcenter"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=config,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", serve)
        cc("apply", "prod", "--service", "reports", cwd=config, env=env)
        app = marathon.app_json("/shop/prod/reports")
        for entry in app.get("fetch", []):
            uri = entry["uri"].split("?")[0]
            where = f"$MESOS_SANDBOX/{entry['destPath']}"
            print(f"reports: Marathon fetches {uri}?sig=... into {where}")
        newest = max(app["tasks"], key=lambda task: task["id"])
        for path, data in sorted(marathon.sandboxes[newest["id"]].items()):
            first = data.decode(errors="replace").strip().splitlines()[:4]
            print(f"task {newest['id']} started with {path}:")
            print("\n".join(f"  | {line}" for line in first))
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        log.close()
        marathon.stop()


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until `url` answers 200 (the process must stay up meanwhile)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve exited with {process.returncode}; see its log")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s")


def show_delivery(kubeconfig: str, namespace: str, services: tuple[str, ...], secret: str) -> None:
    """What kubectl would show: the objects each pod template refers to, and what is in them
    (a secret value is shown only as whether it is the value of SHOP_DEV_DB_PASSWORD)."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    for service in services:
        sets = apps.list_namespaced_deployment(
            namespace, label_selector=f"configcenter.io/service={service}"
        ).items
        pod = api.sanitize_for_serialization(sets[0].spec.template.spec)
        container = pod["containers"][0]
        refs = [next(iter(s.values()))["name"] for s in container.get("envFrom", [])]
        for volume in pod.get("volumes", []):
            for source in (volume.get("projected") or {}).get("sources", []):
                refs.append(next(iter(source.values()))["name"])
        print(f"{service}: pods read {', '.join(refs)}")
        for name in refs:
            if "-secret" in name:
                data = core.read_namespaced_secret(name, namespace).data or {}
                for key, raw in sorted(data.items()):
                    value = base64.b64decode(raw).decode()
                    said = "holds" if secret in value else "does NOT hold"
                    print(f"  Secret {name}: {key} {said} the value of $SHOP_DEV_DB_PASSWORD")
            else:
                data = core.read_namespaced_config_map(name, namespace).data or {}
                placeholders = [k for k, v in data.items() if "${secret:" in v]
                print(
                    f"  ConfigMap {name}: {len(data)} keys, placeholders: {placeholders or 'none'}"
                )
    api.close()


if __name__ == "__main__":
    main()
