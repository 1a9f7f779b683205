"""serve refuses bad settings before it listens (a broken environment it reports and starts
anyway); small pure pieces behave as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from configcenter.serve.engine import parse_interval
from configcenter.serve.handlers import registry_jobs
from configcenter.serve.metrics import Metrics
from configcenter.usecases.image_push import names_pushed_image
from configcenter.usecases.webhooks import WebhookError
from tests.support.serve_fixtures import ServeProcess, make_shop_world


def serve_exit(root: Path, env_text: str, serve: str, env: dict[str, str]) -> tuple[int, str]:
    world = make_shop_world(root, envs={"dev": env_text}, serve=serve)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "configcenter",
            "-C",
            str(world.config.root),
            "--run-store",
            world.run_store_url,
            "serve",
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(root), **env},
        check=False,
    )
    return proc.returncode, proc.stderr


def test_unset_webhook_secret_is_a_clear_error(tmp_path: Path) -> None:
    code, err = serve_exit(
        tmp_path, "", 'serve:\n  webhook_token: {secret: "env:CC_NOT_SET"}\n', {}
    )
    assert code == 1
    assert "serve.webhook_token" in err and "CC_NOT_SET" in err
    assert "Traceback" not in err


def test_bad_reconcile_interval_names_the_file_and_serve_still_starts(
    tmp_path: Path, serve_processes: list[ServeProcess]
) -> None:
    """An environment's files that do not load stop no serve: the push that broke them
    may have reached its checkout, and only a running serve can take the fix."""
    world = make_shop_world(tmp_path, envs={"dev": "reconcile: {interval: soon}\n"})
    world.env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CACHE_HOME=str(tmp_path / "c"))
    proc = ServeProcess(world)
    serve_processes.append(proc)
    proc.wait_ready()
    log = proc.log()
    assert "environments/dev/_env.yaml" in log and "'soon'" in log and "5m" in log
    assert "serve starts anyway" in log and "Traceback" not in log


def test_plain_text_secret_in_serve_section_is_refused(tmp_path: Path) -> None:
    code, err = serve_exit(tmp_path, "", "serve:\n  api_token: hunter22\n", {})
    assert code == 1
    assert "api_token" in err and 'secret: "env:NAME"' in err


@pytest.mark.parametrize(
    ("ref", "repository", "tag", "same"),
    [
        ("registry.test/shop/api:1.0", "shop/api", "1.0", True),
        ("registry.test/shop/api:1.0", "shop/api", "1.1", False),
        ("registry.test/shop/api:1.0", "shop/api", None, True),
        ("127.0.0.1:5000/shop/api@sha256:" + "a" * 64, "shop/api", "latest", True),
        ("localhost/shop/api:2", "shop/api", "2", True),
        ("shop/api:2", "shop/api", "2", True),
        ("registry.test/shop/api-v2:1.0", "shop/api", "1.0", False),
    ],
)
def test_image_reference_matches_registry_repository(
    ref: str, repository: str, tag: str | None, same: bool
) -> None:
    assert names_pushed_image(ref, repository, tag) is same


def test_registry_envelope_errors_name_the_problem() -> None:
    with pytest.raises(WebhookError, match="no 'events' list"):
        registry_jobs(b'{"nope": 1}')
    with pytest.raises(WebhookError, match="has no string 'id'"):
        registry_jobs(b'{"events": [{"action": "push"}]}')
    pulls = b'{"events": [{"id": "e1", "action": "pull", "target": {"repository": "a"}}]}'
    assert registry_jobs(pulls) == []


def test_intervals() -> None:
    assert parse_interval("30s", "x") == 30.0
    assert parse_interval("5m", "x") == 300.0
    assert parse_interval("1h", "x") == 3600.0
    assert parse_interval("2", "x") == 2.0
    with pytest.raises(ValueError, match=r"write e\.g\. 30s"):
        parse_interval("0s", "x")


def test_metrics_text_format() -> None:
    metrics = Metrics()
    metrics.inc("configcenter_runs_total", kind="apply", outcome="succeeded")
    metrics.observe_duration(0.3, kind="apply")
    metrics.set("configcenter_drift", 2, env='we"ird')
    text = metrics.render()
    assert 'configcenter_runs_total{kind="apply",outcome="succeeded"} 1' in text
    assert 'configcenter_run_duration_seconds_bucket{kind="apply",le="0.1"} 0' in text
    assert 'configcenter_run_duration_seconds_bucket{kind="apply",le="0.5"} 1' in text
    assert 'configcenter_run_duration_seconds_bucket{kind="apply",le="+Inf"} 1' in text
    assert 'configcenter_run_duration_seconds_count{kind="apply"} 1' in text
    assert 'configcenter_drift{env="we\\"ird"} 2' in text
    assert "# TYPE configcenter_runs_total counter" in text
