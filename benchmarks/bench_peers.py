#!/usr/bin/env python3
"""Full cold render of N services x 3 environments: configcenter side by side with peers.

The same services as benchmarks/generate.py (three layers of values: shared defaults,
per environment, per service; app.env, Dockerfile and deployment.yaml per service; every
tenth service on a newer template in dev), written the way each tool is used:

  configcenter  `render ENV --out DIR` for each environment, empty caches (as bench_cli.py)
  kapitan       `kapitan compile`: reclass inventory (classes common and env.<env>, a target
                per service and environment), the same Jinja2 templates as configcenter's
                with the names they read bound from the inventory at their top
  jsonnet       one program per environment, values merged as objects, files written from
                its multi-output: go-jsonnet and the C++ jsonnet, through their python
                bindings (the registries have no jrsonnet, helmfile or kustomize binary)

Every tool is a whole process (wall, CPU with children, peak memory, as bench_cli.py)
and writes its files to disk. Peers that are not installed are reported as such:
they come from the package registries (`pip install kapitan gojsonnet`, and
`pip install jsonnet` for the C++ one; kapitan pins an older `jsonnet`),
best into their own venv, named by --peers-venv.

    python benchmarks/bench_peers.py [--services 500] [--peers-venv DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_cli import Bench, Row, Sample  # noqa: E402
from generate import (  # noqa: E402
    ENVIRONMENTS,
    SERVICE_KEYS,
    defaults_file,
    env_file,
    generate,
    service_names,
    template_files,
)

CONTEXT = ["service", "env", "project", "template_tag", "replicas", "image", "platform"]


def run_process(cmd: list[str], cwd: Path, env: dict[str, str]) -> Sample:
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} exited {code}:\n{err.decode()[-3000:]}")
    return Sample(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, code, b"", err)


def layers(services: list[str]) -> dict[str, object]:
    """The three layers as data, parsed from the generated YAML (the peers get the same)."""
    import yaml

    found: dict[str, object] = {"defaults": yaml.safe_load(defaults_file())["values"]}
    for env in ENVIRONMENTS:
        found[env] = yaml.safe_load(env_file(env, platform=False))["values"]
    return found


def service_layer(service: str, index: int, env: str) -> dict[str, object]:
    values = {key: f"{service}-{env}-{key.lower()}" for key in SERVICE_KEYS}
    return {
        "template_tag": "1.1.0" if env == "dev" and index % 10 == 0 else "1.0.0",
        "image": f"registry.example.com/bench/{service}:1.{index % 7}.0",
        "replicas": 3 if env == "prod" else 1,
        "values": values,
    }


def secret_text(value: object) -> object:
    if isinstance(value, dict) and set(value) == {"secret"}:
        return "(secret " + str(value["secret"]) + ")"  # reclass would interpolate ${...}
    return value


# -- kapitan -----------------------------------------------------------------------------------


def write_kapitan(dest: Path, count: int) -> None:
    import yaml

    services = service_names(count)
    data = layers(services)
    names = sorted(
        {*CONTEXT, "values", *data["defaults"], *data["dev"], *SERVICE_KEYS}  # type: ignore[misc]
    )
    prelude = "{%- set p = inventory.parameters -%}\n{%- set values = p['values'] -%}\n" + "".join(
        f"{{%- set {n} = p['values'][{n!r}] if {n!r} in p['values'] else p[{n!r}] -%}}\n"
        for n in names
        if n != "values"
    )
    classes = dest / "inventory" / "classes"
    classes.mkdir(parents=True)
    common = {
        "project": "bench",
        "values": {k: secret_text(v) for k, v in data["defaults"].items()},
    }  # type: ignore[union-attr]
    (classes / "common.yml").write_text(yaml.safe_dump({"parameters": common}))
    (classes / "env").mkdir()
    for env in ENVIRONMENTS:
        params = {
            "env": env,
            "platform": {"namespace": f"bench-{env}"},
            "values": {k: secret_text(v) for k, v in data[env].items()},  # type: ignore[union-attr]
        }
        (classes / "env" / f"{env}.yml").write_text(yaml.safe_dump({"parameters": params}))
    targets = dest / "inventory" / "targets"
    targets.mkdir(parents=True)
    for index, service in enumerate(services):
        for version in ("1.0.0", "1.1.0") if index % 10 == 0 else ("1.0.0",):
            tdir = dest / "templates" / service / version
            tdir.mkdir(parents=True)
            for name, text in template_files(service, index, version, platform=True).items():
                if name.endswith(".j2"):
                    (tdir / name).write_text(prelude + text)
        for env in ENVIRONMENTS:
            layer = service_layer(service, index, env)
            target = f"{env}-{service}"
            layer["service"] = service
            layer["kapitan"] = {
                "vars": {"target": target},
                "compile": [
                    {
                        "output_path": ".",
                        "input_type": "jinja2",
                        "input_paths": [f"templates/{service}/{layer['template_tag']}"],
                        "suffix_remove": True,
                    }
                ],
            }
            doc = {"classes": ["common", f"env.{env}"], "parameters": layer}
            (targets / f"{target}.yml").write_text(yaml.safe_dump(doc))


# -- jsonnet -----------------------------------------------------------------------------------

JSONNET_LIB = r"""
{
  appEnv(p, tag)::
    '# %s %s in %s (template %s)\n' % [p.project, p.service, p.env, tag]
    + std.join('', ['%s=%s\n' % [k, self.show(p.values[k])] for k in p.keys])
    + (if p.values.TRACING_ENABLED then 'OTEL_SERVICE_NAME=%s-%s' % [p.service, p.env] else '')
    + '\nLOG_JSON=%s\n' % [std.toString(p.values.LOG_FORMAT == 'json')]
    + (if tag != '1.0.0' then 'GRACEFUL_SHUTDOWN=30\n' else ''),
  show(v):: if std.isBoolean(v) then (if v then 'True' else 'False')
            else if std.isObject(v) then std.manifestJsonMinified(v) else std.toString(v),
  dockerfile(p, port)::
    'ARG BASE_IMAGE=%s\nFROM ${BASE_IMAGE}\nARG VERSION=%s\n'
      % [p.values.BASE_IMAGE, p.values.VERSION]
    + ('LABEL org.opencontainers.image.title="%s-%s" ' % [p.project, p.service])
    + 'org.opencontainers.image.version="${VERSION}"\n'
    + 'ENV SERVICE=%s PORT=%d\nCOPY . /app\nWORKDIR /app\nRUN echo "${VERSION}" > /app/VERSION\n'
      % [p.service, port]
    + 'CMD ["/bin/sh", "/app/run.sh"]\n',
  deployment(p, port, tag):: std.manifestYamlDoc({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: {
      name: p.service,
      namespace: 'bench-' + p.env,
      labels: { app: p.service, env: p.env, template: tag },
    },
    spec: {
      replicas: p.replicas,
      progressDeadlineSeconds: p.values.PROGRESS_DEADLINE,
      selector: { matchLabels: { app: p.service } },
      template: {
        metadata: { labels: { app: p.service, env: p.env } },
        spec: { containers: [{
          name: p.service,
          image: p.image,
          ports: [{ containerPort: port }],
          envFrom: [{ configMapRef: { name: p.service + '-env' } }],
          env: [{ name: k, value: std.toString(p.values[k]) }
                for k in ['LOG_LEVEL', 'REGION', 'TIER']],
          resources: {
            requests: { cpu: p.values.resources.cpu, memory: p.values.resources.memory },
            limits: { memory: p.values.resources.memory },
          },
          readinessProbe: { httpGet: { path: '/healthz', port: port }, periodSeconds: 5 },
        }] },
      },
    },
  }),
}
"""

JSONNET_MAIN = r"""
local lib = import 'lib.libsonnet';
local defaults = import 'defaults.json';
local envs = import 'envs.json';
local services = import 'services.json';
local keys = import 'keys.json';
function(env) {
  [env + '/' + s.name + '/' + f.name]: f.text
  for s in [
    services[env][name] { name: name } for name in std.objectFields(services[env])
  ]
  for f in (
    // A local is evaluated once; an object field on every use.
    local values = std.mergePatch(std.mergePatch(defaults, envs[env]), s.values);
    local p = {
      project: 'bench', env: env, service: s.name, replicas: s.replicas, image: s.image,
      keys: keys, values: values,
    };
    [
      { name: 'app.env', text: lib.appEnv(p, s.template_tag) },
      { name: 'Dockerfile', text: lib.dockerfile(p, s.port) },
      { name: 'deployment.yaml', text: lib.deployment(p, s.port, s.template_tag) },
    ]
  )
}
"""

JSONNET_RUN = """
import importlib, json, os, sys
src, out, module = sys.argv[1], sys.argv[2], importlib.import_module(sys.argv[3])
for env in ("dev", "demo", "prod"):
    files = json.loads(module.evaluate_file(
        os.path.join(src, "main.jsonnet"), tla_codes={"env": json.dumps(env)}))
    for rel, text in files.items():
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
"""


def write_jsonnet(dest: Path, count: int) -> None:
    from generate import ALL_KEYS

    services = service_names(count)
    data = layers(services)
    dest.mkdir(parents=True)
    (dest / "lib.libsonnet").write_text(JSONNET_LIB)
    (dest / "main.jsonnet").write_text(JSONNET_MAIN)
    (dest / "run.py").write_text(JSONNET_RUN)
    plain = {k: secret_text(v) for k, v in data["defaults"].items()}  # type: ignore[union-attr]
    (dest / "defaults.json").write_text(json.dumps(plain))
    envs = {env: {k: secret_text(v) for k, v in data[env].items()} for env in ENVIRONMENTS}  # type: ignore[union-attr]
    (dest / "envs.json").write_text(json.dumps(envs))
    (dest / "keys.json").write_text(json.dumps(ALL_KEYS))
    per_env = {
        env: {
            s: {**service_layer(s, i, env), "port": 8000 + i % 1000} for i, s in enumerate(services)
        }
        for env in ENVIRONMENTS
    }
    (dest / "services.json").write_text(json.dumps(per_env))


# -- the run ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--peers-venv", type=Path, help="venv with kapitan and jsonnet")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--peers", default="kapitan,go-jsonnet,jsonnet", help="which peers (comma-separated)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cc-bench-peers-") as tmp:
        bench(args, Path(tmp))


def bench(args: argparse.Namespace, tmp: Path) -> None:
    b = Bench(tmp, args.services)
    generate(b.config, args.services)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(b.deploy)], check=True)
    print(
        f"{args.services} services x {len(ENVIRONMENTS)} envs "
        f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    out = tmp / "out"
    b.wipe_render_caches()
    ours = [b.run("render", env, "--out", str(out / "cc" / env)) for env in ENVIRONMENTS]
    b.record_sum("configcenter render, cold", ours, "3 processes, summed")
    floor = b.rows[-1]
    venv_bin = args.peers_venv / "bin" if args.peers_venv else Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    peers = set(args.peers.split(","))
    kapitan = venv_bin / "kapitan"
    if "kapitan" in peers and kapitan.exists():
        src = tmp / "kapitan"
        write_kapitan(src, args.services)
        jobs = str(os.cpu_count() or 2)
        sample = run_process(
            [str(kapitan), "compile", "--parallelism", jobs, "--output-path", str(out / "kp")],
            src,
            env,
        )
        b.record("kapitan compile", [sample], f"parallelism {jobs}")
    elif "kapitan" in peers:
        print(f"  kapitan: not installed in {venv_bin}", flush=True)
    python = venv_bin / "python"
    src = tmp / "jsonnet"
    for module, label in (("_gojsonnet", "go-jsonnet"), ("_jsonnet", "jsonnet (C++)")):
        if label.split(" ")[0] not in peers:
            continue
        probe = [str(python), "-c", f"import {module}"]
        if not python.exists() or subprocess.run(probe, capture_output=True).returncode:
            print(f"  {label}: its python binding is not installed in {venv_bin}", flush=True)
            continue
        if not src.exists():
            write_jsonnet(src, args.services)
        dest = out / f"js-{module}"
        sample = run_process(
            [str(python), str(src / "run.py"), str(src), str(dest), module], src, env
        )
        b.record(f"{label}, python binding", [sample], "3 environments, one process")
    counts = {
        path.name: sum(1 for p in path.rglob("*") if p.is_file()) for path in sorted(out.iterdir())
    }
    print(f"  files written: {counts}")
    print(f"\n{'tool':32} {'wall':>10} {'cpu':>10} {'peak RSS':>10}  cpu vs configcenter")
    for row in b.rows:
        ratio = row.cpu / floor.cpu if floor.cpu else 0.0
        print(
            f"{row.step:32} {row.seconds:8.3f} s {row.cpu:8.3f} s {row.max_rss_mib:6.0f} MiB"
            f"  {ratio:.2f}x"
        )
    if args.json:
        rows = [r.__dict__ for r in b.rows]
        args.json.write_text(json.dumps({"services": args.services, "rows": rows}, indent=1))
    shutil.rmtree(out, ignore_errors=True)


__all__ = ["Row"]

if __name__ == "__main__":
    main()
