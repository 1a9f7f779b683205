"""`configcenter init [DIR]`: scaffold a config repo that validates, plans and applies as is.

One service (a template released as 0.1.0), two environments pinning it, and a bare
deploy repo next to the config repo. The files are small and commented: they are
meant to be edited into one's own project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from configcenter import wiring
from configcenter.core.errors import ConfigError, Problem, Source, UserError

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
FIRST_VERSION = "0.1.0"
GIT_TIMEOUT = 60.0  # each git step; all are local


@dataclass
class Scaffold:
    root: Path
    deploy_repo: Path
    files: list[str]
    tag: str
    commit: str


def scaffold_files(project: str, service: str, deploy_url: str) -> dict[str, str]:
    return {
        "configcenter.yaml": f"""\
# The project: its environments in promotion order, where rendered files are committed,
# and where services run. `configcenter validate` checks every key.
project: {project}
environments: [dev, prod]
deploy_repo: {{url: {deploy_url}, branch: main}}
platforms:
  local: {{kind: kubernetes, namespace: "{project}-{{{{ env }}}}"}}
""",
        f"templates/{service}/template.yaml": """\
description: An example service; copy this folder for each of yours.
outputs: [app.env, deployment.yaml]
env: [GREETING, LOG_LEVEL]      # every key a service must have a value for
""",
        f"templates/{service}/app.env.j2": """\
GREETING={{ GREETING }}
LOG_LEVEL={{ LOG_LEVEL }}
""",
        f"templates/{service}/deployment.yaml.j2": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ service }}
  labels: {app: {{ service }}}
spec:
  replicas: {{ replicas }}
  selector:
    matchLabels: {app: {{ service }}}
  template:
    metadata:
      labels: {app: {{ service }}}
    spec:
      containers:
        - name: {{ service }}
          image: {{ image }}
          ports: [{containerPort: 80}]
""",
        "environments/_defaults.yaml": """\
# Values every environment starts from; _env.yaml and <service>.yaml override them.
values:
  LOG_LEVEL: info
  GREETING: hello
""",
        "environments/dev/_env.yaml": """\
platform: local
allow_head: true        # dev may pin `template: HEAD` (the work tree) while you iterate
values:
  LOG_LEVEL: debug
""",
        f"environments/dev/{service}.yaml": f"""\
template: {FIRST_VERSION}         # a released template tag: {service}/{FIRST_VERSION}
image: {{ref: docker.io/library/nginx:1.27}}
replicas: 1
""",
        "environments/prod/_env.yaml": """\
platform: local
""",
        f"environments/prod/{service}.yaml": f"""\
template: {FIRST_VERSION}
image: {{ref: docker.io/library/nginx:1.27}}
replicas: 2
values:
  GREETING: hello from prod
""",
        ".gitignore": "out/\n",
    }


def init_repo(
    root: Path, project: str | None = None, service: str = "hello", deploy_repo: Path | None = None
) -> Scaffold:
    """Write the scaffold into `root` (new or empty), commit it, release its template."""
    root = root.resolve()
    project = project or re.sub(r"[^a-z0-9-]+", "-", root.name.lower()).strip("-") or "project"
    where = Source(str(root))
    for label, name in (("project", project), ("service", service)):
        if not NAME_RE.match(name):
            raise ConfigError(
                [
                    Problem(
                        where,
                        f"'{name}' is not a usable {label} name",
                        "lowercase letters, digits and '-', starting with a letter "
                        f"(pass --{label} NAME)",
                    )
                ]
            )
    if root.exists() and any(root.iterdir()):
        raise ConfigError(
            [
                Problem(
                    where,
                    f"{root} exists and is not empty",
                    "init writes a new config repo: pick a new or empty directory",
                )
            ]
        )
    deploy = (deploy_repo or root.parent / f"{root.name}-deploy.git").resolve()
    if deploy.exists() and any(deploy.iterdir()):
        raise ConfigError(
            [
                Problem(
                    Source(str(deploy)),
                    f"deploy repo {deploy} already exists",
                    "pass --deploy-repo PATH for a new one",
                )
            ]
        )
    deploy_url = f"../{deploy.name}" if deploy.parent == root.parent else deploy.as_posix()
    files = scaffold_files(project, service, deploy_url)
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git = wiring.open_config_git(root, UserError)
    git.run("init", "-q", "-b", "main", timeout=GIT_TIMEOUT)
    git.run("add", "-A", timeout=GIT_TIMEOUT)
    git.run(
        "commit", "-q", "-m", "configcenter init: one service, dev and prod", timeout=GIT_TIMEOUT
    )
    tag = f"{service}/{FIRST_VERSION}"
    git.run("tag", "-a", tag, "-m", f"{service} template {FIRST_VERSION}", timeout=GIT_TIMEOUT)
    commit = git.run("rev-parse", "HEAD", timeout=GIT_TIMEOUT)
    deploy.mkdir(parents=True, exist_ok=True)
    git.run("init", "-q", "--bare", "-b", "main", cwd=deploy, timeout=GIT_TIMEOUT)
    return Scaffold(root, deploy, sorted(files), tag, commit)
