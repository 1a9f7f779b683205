"""Heavy libraries load only in the commands that use them (start-up is paid on every command).

Each check runs a fresh interpreter, since this test session has imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configcenter.core.plan import make_plan
from configcenter.core.render import Renderer
from configcenter.core.state import EnvState
from tests.support.configrepo import ConfigRepo, DeployRemote, deploy_files, state_after

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT / "nonexistent-home")},
    ).stdout
    return {line.split(".")[0] for line in out.splitlines()}


def test_a_missing_kubeconfig_is_reported_without_loading_the_kubernetes_client() -> None:
    code = """
from configcenter.adapters.kubernetes import KubernetesPlatform
from configcenter.ports.platform import PlatformError, PlatformTarget
platform = KubernetesPlatform(PlatformTarget("local", "kubernetes", "dev", {"namespace": "n"}))
try:
    platform.client.dynamic()
except PlatformError as exc:
    assert "cannot load kubeconfig ~/.kube/config: no such file" in str(exc), exc
else:
    raise AssertionError("no error")
"""
    assert "kubernetes" not in _modules_after(code)


def test_the_cli_starts_without_rich_or_the_kubernetes_client() -> None:
    """Commands that print JSON (scripts, plan --json) never need rich; only platforms
    that are used load the Kubernetes client."""
    loaded = _modules_after(
        "from configcenter.cli import emit, warn_line\nemit({'probe': 1})\nwarn_line('a warning')\n"
    )
    assert "rich" not in loaded
    assert "kubernetes" not in loaded


#: What a plan with nothing changed must not import: it renders, parses and checks nothing.
HEAVY = (
    "jinja2",
    "yaml",
    "markupsafe",
    "configcenter.core.schema",
    "configcenter.usecases.apply.commit",
    "configcenter.usecases.apply.rollout",
)

PROBE = """
import json, os, sys
sys.argv = ["configcenter", *sys.argv[1:]]
from configcenter.cli import main
try:
    main()
finally:
    heavy = sorted(
        m for m in sys.modules if m in {heavy!r} or m.partition(".")[0] in {heavy!r}
    )
    with open(os.environ["PROBE_OUT"], "w") as out:
        json.dump(heavy, out)
"""


def _run(
    tmp_path: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    out = tmp_path / "probe.json"
    out.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), *args],
        cwd=ROOT,
        env={**env, "PROBE_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.exists(), proc.stderr
    return proc, json.loads(out.read_text())


def test_a_plan_with_nothing_changed_imports_neither_jinja_nor_pyyaml(tmp_path: Path) -> None:
    repo = ConfigRepo.basic(tmp_path / "shop-config")
    remote = DeployRemote(tmp_path)
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "KUBECONFIG": str(tmp_path / "no-such-kubeconfig"),
        "SHOP_DB_PASSWORD": "s3cret-db-password",
    }
    cli = ("-C", str(repo.root), "--deploy-repo", remote.url)
    cli += ("--run-store", f"sqlite:///{tmp_path / 'runs.sqlite3'}")

    # The deploy repo holds what the config renders to: nothing to change.
    plan = make_plan(repo.load(), "dev", EnvState("dev"), Renderer(), lambda path: None)
    remote.publish(state_after(plan), deploy_files(plan))

    # The first plan loads the config (parsing its YAML) and keeps the load.
    first, loaded = _run(tmp_path, env, *cli, "plan", "dev", "--json")
    assert first.returncode == 0, first.stderr
    assert "yaml" in loaded, "the first plan parses the config repo's YAML"

    again, loaded = _run(tmp_path, env, *cli, "plan", "dev", "--json")
    assert again.returncode == 0, again.stderr
    services = json.loads(again.stdout)["services"]
    assert services and {s["action"] for s in services} == {"noop"}
    assert loaded == [], f"a plan with nothing changed imported {loaded}"

    # The same process still renders and parses when something did change (and the
    # platform settings' {{ env }} comes out as Jinja renders it).
    repo.write(
        "environments/dev/_env.yaml",
        repo.read("environments/dev/_env.yaml").replace("LOG_LEVEL: debug", "LOG_LEVEL: warn"),
    )
    repo.commit("dev: log level")
    changed, loaded = _run(tmp_path, env, *cli, "plan", "dev", "--json")
    assert changed.returncode == 0, changed.stderr
    actions = {s["service"]: s["action"] for s in json.loads(changed.stdout)["services"]}
    assert "update" in actions.values()
    assert {"jinja2", "yaml"} <= set(loaded)

    # Planned again (the load kept with the edit), the change is planned without the
    # schema, whose checks ran when the edited file was loaded, and with apply's checks
    # but not its commit and rollout flows.
    again, loaded = _run(tmp_path, env, *cli, "plan", "dev", "--json")
    assert again.returncode == 0, again.stderr
    assert {s["service"]: s["action"] for s in json.loads(again.stdout)["services"]} == actions
    flows = {"configcenter.core.schema", *(m for m in HEAVY if ".apply." in m)}
    assert not flows & set(loaded), loaded


SETTINGS = [
    "shop-{{ env }}",
    "{{env}}",
    "{{  project  }}-{{ env }}.svc.cluster.local",
    "https://{{ project }}.example.com:8443/{{ env }}/",
    "plain } brace",
    # Not plain: Jinja renders these (whitespace control, filters, other names, line
    # breaks Jinja normalises or drops, comments, statements, an undefined name).
    "{{- env -}}",
    "{{ env | upper }}",
    "{{ env }}\n",
    "a\r\nb-{{ env }}",
    "{# note #}{{ env }}",
    "{% if env == 'dev' %}d{% endif %}",
    "{{ 'x' ~ env }}",
    "{ env }",
]


def test_platform_settings_render_as_jinja_renders_them_plain_ones_without_it() -> None:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from configcenter.core.render import _render_setting

    jinja = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    names = {"env": "dev", "project": "shop"}
    for source in SETTINGS:
        assert _render_setting(source, names) == jinja.from_string(source).render(names), source
    with pytest.raises(jinja2.UndefinedError):
        _render_setting("{{ region }}", names)


def test_rendering_again_with_every_file_kept_imports_neither_jinja_nor_pyyaml(
    tmp_path: Path,
) -> None:
    repo = ConfigRepo.basic(tmp_path / "shop-config")
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "SHOP_DB_PASSWORD": "s3cret-db-password",
    }
    out = tmp_path / "out"
    cli = ("-C", str(repo.root), "render", "dev", "--out", str(out))
    first, loaded = _run(tmp_path, env, *cli)
    assert first.returncode == 0, first.stderr
    assert {"jinja2", "yaml"} <= set(loaded)
    rendered = _files(out)

    again, loaded = _run(tmp_path, env, *cli)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert _files(out) == rendered
    assert loaded == [], f"a render of kept files imported {loaded}"


def _files(out: Path) -> dict[Path, bytes]:
    """The rendered files (the marker's manifest records times, not content)."""
    return {
        p: p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and p.name != ".configcenter-render"
    }
