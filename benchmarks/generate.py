#!/usr/bin/env python3
"""Write a realistic config repo for benchmarks: N services x 3 environments, released in Git.

Each service has its own template (about 30 ENV keys in app.env, a Dockerfile with
build args, a Kubernetes deployment.yaml), released as tag `<service>/1.0.0`; every
tenth service also has a 1.1.0 that dev runs while demo and prod stay on 1.0.0.
Values come from all three layers: shared defaults, per-environment, per-service.

    python benchmarks/generate.py DEST [--services 500]
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

ENVIRONMENTS = ("dev", "demo", "prod")
SHARED_KEYS = [  # in _defaults.yaml
    "LOG_LEVEL", "LOG_FORMAT", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "CACHE_URL",
    "CACHE_TTL", "HTTP_TIMEOUT", "HTTP_RETRIES", "TRACING_ENABLED", "METRICS_PORT",
]  # fmt: skip
ENV_KEYS = ["DB_PASSWORD", "API_BASE_URL", "SENTRY_ENV", "FEATURE_FLAGS_URL", "REGION", "TIER"]
SERVICE_KEYS = [f"OPT_{i:02d}" for i in range(1, 13)]  # in <env>/<service>.yaml
ALL_KEYS = SHARED_KEYS + ENV_KEYS + SERVICE_KEYS  # 30

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@configcenter.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@configcenter.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def service_names(count: int) -> list[str]:
    return [f"svc-{i:04d}" for i in range(count)]


def template_files(service: str, index: int, version: str, platform: bool = True) -> dict[str, str]:
    deps = f"depends_on: [svc-{index - 1:04d}]\n" if index % 5 and index else ""
    app_env = f"# {{{{ project }}}} {service} in {{{{ env }}}} (template {{{{ template_tag }}}})\n"
    app_env += "".join(f"{key}={{{{ {key} }}}}\n" for key in ALL_KEYS)
    app_env += (
        "{% if TRACING_ENABLED %}OTEL_SERVICE_NAME={{ service }}-{{ env }}{% endif %}\n"
        "LOG_JSON={{ (LOG_FORMAT == 'json') | lower }}\n"
    )
    if version != "1.0.0":
        app_env += "GRACEFUL_SHUTDOWN=30\n"
    dockerfile = (
        "ARG BASE_IMAGE={{ BASE_IMAGE }}\nFROM ${BASE_IMAGE}\nARG VERSION={{ VERSION }}\n"
        'LABEL org.opencontainers.image.title="{{ project }}-{{ service }}" '
        'org.opencontainers.image.version="${VERSION}"\n'
        f"ENV SERVICE={service} PORT={8000 + index % 1000}\n"
        'COPY . /app\nWORKDIR /app\nRUN echo "${VERSION}" > /app/VERSION\n'
        'CMD ["/bin/sh", "/app/run.sh"]\n'
    )
    namespace = "\n  namespace: {{ platform.namespace }}" if platform else ""
    deployment = f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{{{ service }}}}{namespace}
  labels: {{app: {{{{ service }}}}, env: {{{{ env }}}}, template: "{{{{ template_tag }}}}"}}
spec:
  replicas: {{{{ replicas }}}}
  progressDeadlineSeconds: {{{{ PROGRESS_DEADLINE }}}}
  selector:
    matchLabels: {{app: {{{{ service }}}}}}
  template:
    metadata:
      labels: {{app: {{{{ service }}}}, env: {{{{ env }}}}}}
    spec:
      containers:
        - name: {{{{ service }}}}
          image: {{{{ image }}}}
          ports: [{{containerPort: {8000 + index % 1000}}}]
          envFrom: [{{configMapRef: {{name: {{{{ service }}}}-env}}}}]
          env:
{{%- for key in ["LOG_LEVEL", "REGION", "TIER"] %}}
            - {{name: {{{{ key }}}}, value: "{{{{ values[key] }}}}"}}
{{%- endfor %}}
          resources:
            requests: {{cpu: {{{{ resources.cpu }}}}, memory: {{{{ resources.memory }}}}}}
            limits: {{memory: {{{{ resources.memory }}}}}}
          readinessProbe:
            httpGet: {{path: /healthz, port: {8000 + index % 1000}}}
            periodSeconds: 5
"""
    template_yaml = (
        f"description: {service} (generated)\n"
        "outputs: [app.env, Dockerfile, deployment.yaml]\n"
        f"env: [{', '.join(ALL_KEYS)}]\n"
        "build: {dockerfile: Dockerfile, args: [BASE_IMAGE, VERSION]}\n" + deps
    )
    return {
        "template.yaml": template_yaml,
        "app.env.j2": app_env,
        "Dockerfile.j2": dockerfile,
        "deployment.yaml.j2": deployment,
    }


def service_file(service: str, index: int, env: str, pin: str) -> str:
    lines = [
        f"template: {pin}",
        f"image: {{ref: registry.example.com/bench/{service}:1.{index % 7}.0}}",
        f"replicas: {3 if env == 'prod' else 1}",
        "values:",
    ]
    lines += [f"  {key}: {service}-{env}-{key.lower()}" for key in SERVICE_KEYS]
    return "\n".join(lines) + "\n"


def defaults_file() -> str:
    values = {
        "LOG_LEVEL": "info", "LOG_FORMAT": "json", "DB_HOST": "db.internal", "DB_PORT": 5432,
        "DB_NAME": "bench", "DB_USER": "bench", "CACHE_URL": "redis://cache:6379/0",
        "CACHE_TTL": 300, "HTTP_TIMEOUT": 30, "HTTP_RETRIES": 3, "TRACING_ENABLED": True,
        "METRICS_PORT": 9100, "PROGRESS_DEADLINE": 120,
        "BASE_IMAGE": "127.0.0.1:5000/base/busybox:latest", "VERSION": "1.0.0",
    }  # fmt: skip
    body = "".join(
        f"  {k}: {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in values.items()
    )
    return "values:\n" + body + "  resources:\n    cpu: 250m\n    memory: 256Mi\n"


def env_file(env: str, platform: bool = True) -> str:
    return ("platform: local\n" if platform else "") + (
        f"allow_head: {'true' if env == 'dev' else 'false'}\n"
        "values:\n"
        f"  LOG_LEVEL: {'debug' if env == 'dev' else 'info'}\n"
        f'  DB_PASSWORD: {{secret: "env:BENCH_{env.upper()}_DB_PASSWORD"}}\n'
        f"  API_BASE_URL: https://api.{env}.bench.example.com\n"
        f"  SENTRY_ENV: {env}\n"
        f"  FEATURE_FLAGS_URL: https://flags.{env}.bench.example.com\n"
        "  REGION: eu-west-1\n"
        f"  TIER: {'prod' if env == 'prod' else 'nonprod'}\n"
        "  resources:\n"
        f"    memory: {'512Mi' if env == 'prod' else '256Mi'}\n"
    )


def git(root: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=root,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_ENV},
    ).stdout


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def tag_all(root: Path, tags: list[str]) -> None:
    """Many tags in one `update-ref --stdin` transaction (a process per tag takes minutes)."""
    head = git(root, "rev-parse", "HEAD").strip()
    git(
        root, "update-ref", "--stdin", stdin="".join(f"create refs/tags/{t} {head}\n" for t in tags)
    )


def generate(dest: Path, count: int, platform: bool = True) -> Path:
    """Write the repo to `dest` (which must not exist yet) and return it.

    Without `platform` the environments only commit (no Kubernetes platform is named).
    """
    dest.mkdir(parents=True)
    git(dest, "init", "-q", "-b", "main")
    services = service_names(count)
    write(
        dest,
        "configcenter.yaml",
        "project: bench\nenvironments: [dev, demo, prod]\n"
        "registry: {url: 127.0.0.1:5000, insecure: true}\n"
        + (
            "platforms:\n"
            '  local: {kind: kubernetes, context: kind-local, namespace: "bench-{{ env }}"}\n'
            if platform
            else ""
        ),
    )
    for index, service in enumerate(services):
        for name, text in template_files(service, index, "1.0.0", platform).items():
            write(dest, f"templates/{service}/{name}", text)
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "templates 1.0.0")
    tag_all(dest, [f"{s}/1.0.0" for s in services])
    newer = [(i, s) for i, s in enumerate(services) if i % 10 == 0]
    for index, service in newer:
        for name, text in template_files(service, index, "1.1.0", platform).items():
            write(dest, f"templates/{service}/{name}", text)
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "templates 1.1.0 for every tenth service")
    tag_all(dest, [f"{s}/1.1.0" for _, s in newer])
    write(dest, "environments/_defaults.yaml", defaults_file())
    newer_names = {s for _, s in newer}
    for env in ENVIRONMENTS:
        write(dest, f"environments/{env}/_env.yaml", env_file(env, platform))
        for index, service in enumerate(services):
            pin = "1.1.0" if env == "dev" and service in newer_names else "1.0.0"
            write(
                dest, f"environments/{env}/{service}.yaml", service_file(service, index, env, pin)
            )
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "environments")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--services", type=int, default=500)
    args = parser.parse_args()
    if args.dest.exists():
        parser.error(f"{args.dest} exists; pass a new directory")
    generate(args.dest, args.services)
    print(f"wrote {args.services} services x {len(ENVIRONMENTS)} environments to {args.dest}")


if __name__ == "__main__":
    main()
