"""The console's matrix tells the truth: real config and deploy repos, the real run store and app.

The app is served by uvicorn in a thread (lifespan off: no workers, no schedule) and
read over HTTP; the runs a reconcile or an apply would leave are recorded in the same
run store serve reads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from configcenter.ports.jobstore import Job
from configcenter.serve import ServeOptions, build
from configcenter.serve.page import CONTRAST_PAIRS, PALETTES
from configcenter.serve.status import short_digest
from configcenter.usecases.apply import ApplyOptions, apply_env
from configcenter.usecases.workspace import Workspace
from tests.serve.conftest import ARTIFACTS, DIGEST, Console
from tests.support.configrepo import git
from tests.support.helpers import poll
from tests.support.serve_fixtures import make_shop_world


def cell(matrix: dict[str, Any], env: str) -> dict[str, Any]:
    found: dict[str, Any] = matrix["cells"][env]["api"]
    return found


def td(html: str, env: str) -> str:
    match = re.search(rf'<td class="cell" data-env="{env}" data-service="api".*?</td>', html, re.S)
    assert match, html
    return match.group(0)


def test_failed_reconcile_is_unknown_drift_never_in_sync(console: Console) -> None:
    console.reconcile_run("failed", {"error": "no kubeconfig: set KUBECONFIG"})
    matrix = console.matrix()
    dev, prod = cell(matrix, "dev"), cell(matrix, "prod")
    assert dev["status"] == "committed"
    assert dev["drift"]["state"] == "unknown"
    assert "the last reconcile failed: no kubeconfig" in dev["drift"]["why"]
    assert prod["status"] == "not_deployed" and prod["drift"]["state"] == "unknown"
    assert dev["image_short"] == "registry.test/shop/api@sha256:" + "ab" * 6

    html = console.page()
    assert "in sync" not in html
    dev_td, prod_td = td(html, "dev"), td(html, "prod")
    assert "committed, not rolled out" in dev_td
    assert "drift unknown: the last reconcile failed: no kubeconfig" in dev_td
    assert "not deployed" in prod_td and "drift" not in prod_td.split(">", 1)[1]
    # The short digest is shown; the full one is in the page (selectable), not only a title.
    assert f">registry.test/shop/api@sha256:{'ab' * 6}</summary>" in dev_td
    assert f"<code>registry.test/shop/api@{DIGEST}</code>" in dev_td


def test_drift_known_none_and_stale(console: Console) -> None:
    drifts = [{"service": "api", "field": "replicas", "desired": "2", "live": "5"}]
    console.reconcile_run(
        "succeeded", {"services": {"api": {"status": "drifted", "drifts": drifts}}}
    )
    dev = cell(console.matrix(), "dev")
    assert dev["drift"]["state"] == "known" and dev["drift"]["count"] == 1
    dev_td = td(console.page(), "dev")
    assert "⚠ drift 1" in dev_td and "<li>replicas: 2 →\n      5</li>" in dev_td
    assert "title=" not in dev_td.replace('title="registry.test', "")

    console.reconcile_run("succeeded", {"services": {"api": {"status": "in_sync", "drifts": []}}})
    assert cell(console.matrix(), "dev")["drift"]["state"] == "none"
    assert "✓ in sync" in td(console.page(), "dev")

    # A reconcile that did not look at the service says nothing about it.
    console.reconcile_run("succeeded", {"services": {}})
    dev = cell(console.matrix(), "dev")
    assert dev["drift"]["state"] == "unknown"
    assert dev["drift"]["why"] == "the last reconcile did not check this service"


def test_running_apply_shows_progressing(console: Console) -> None:
    run = console.store.start("apply", "dev", [], "cli", "ops@test")
    dev = cell(console.matrix(), "dev")
    assert dev["status"] == "progressing" and run.id in dev["status_why"]
    console.store.finish(run.id, "succeeded", {"results": []})
    assert cell(console.matrix(), "dev")["status"] == "committed"


def test_failed_release_then_blocked(console: Console) -> None:
    """A failed release as the deploy repo records it, then an apply that refused it."""
    world = console.world
    clone = world.root / "deploy-edit"
    git(world.root, "clone", "-q", str(world.deploy), str(clone))
    state_file = clone / "dev" / ".state" / "api.json"
    record = json.loads(state_file.read_text())
    release = dict(record["release"])
    release.update(outcome="failed", reason="ProgressDeadlineExceeded")
    record["release"] = release
    record["last_failed"] = release
    state_file.write_text(json.dumps(record, indent=1))
    git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "api failed")
    git(clone, "push", "-q", "origin", "HEAD:main")

    dev = cell(console.matrix(), "dev")
    assert dev["status"] == "failed"
    assert "ProgressDeadlineExceeded" in td(console.page(), "dev")

    refused = console.store.start("apply", "dev", [], "cli", "ops@test")
    reason = "release r1 with these inputs failed; change its inputs or run apply --retry api"
    console.store.finish(
        refused.id,
        "succeeded",
        {"results": [{"service": "api", "outcome": "blocked", "reason": reason}]},
    )
    dev = cell(console.matrix(), "dev")
    assert dev["status"] == "blocked" and dev["status_why"] == reason
    assert "⛔ blocked" in td(console.page(), "dev")


def test_page_structure_viewport_and_landmarks(console: Console) -> None:
    html = console.page()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "<main>" in html and "<header>" in html
    assert '<th scope="col"><a href="./environments/dev">dev</a></th>' in html
    assert '<th scope="row">api</th>' in html
    assert "prefers-color-scheme: dark" in html and "max-width: 640px" in html
    assert "#999" not in html


def _luminance(color: str) -> float:
    channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(fg: str, bg: str) -> float:
    high, low = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("scheme", sorted(PALETTES))
def test_every_text_colour_pair_meets_wcag_aa(scheme: str) -> None:
    palette = PALETTES[scheme]
    low = {
        f"{fg} on {bg}": round(contrast(palette[fg], palette[bg]), 2)
        for fg, bg in CONTRAST_PAIRS
        if contrast(palette[fg], palette[bg]) < 4.5
    }
    assert not low, low
    assert round(contrast("#999999", "#ffffff"), 2) == 2.85  # the old muted grey fails


def test_short_digest() -> None:
    assert short_digest(f"reg/x@{DIGEST}") == "reg/x@sha256:abababababab"
    assert short_digest(DIGEST) == "sha256:abababababab"
    assert short_digest("reg/x:1.0") == "reg/x:1.0"
    assert short_digest(None) is None


def test_openapi_document_is_valid_and_declares_every_response(console: Console) -> None:
    from openapi_spec_validator import validate

    doc = json.loads(console.get("/openapi.json"))
    validate(doc)  # raises with the path of the first problem
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                assert response.get("content"), (path, method, code)
    assert doc["paths"]["/api/matrix"]["get"]["responses"]["200"]["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/Matrix"}}
    }
    # What the API answers matches what the document says.
    from openapi_schema_validator import OAS30Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    registry: Registry[Any] = Registry().with_resource(
        "urn:doc", Resource.from_contents(doc, default_specification=DRAFT4)
    )
    for ref, path in (("Matrix", "/api/matrix"), ("Run", None)):
        validator = OAS30Validator(
            {"$ref": f"urn:doc#/components/schemas/{ref}"}, registry=registry
        )
        if path is not None:
            validator.validate(console.matrix())
        else:
            run = console.store.start("apply", "dev", [], "cli", "ops@test")
            validator.validate(json.loads(console.get(f"/api/runs/{run.id}")))


def test_openapi_declares_the_401_every_protected_operation_answers(console: Console) -> None:
    """With serve.api_token set, everything but /healthz, /hooks/ and /files/ wants a token:
    the document says so (security and a JSON 401 Error), and the server answers that."""
    from tests.support.serve_fixtures import http

    doc = json.loads(console.get("/openapi.json"))
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in doc["paths"].items():
        if path.startswith(("/healthz", "/hooks/", "/files/")):
            continue
        for method, operation in operations.items():
            assert operation.get("security"), (method, path)
            assert operation["responses"].get("401", {}).get("content") == error, (method, path)
            if method == "get" and "{" not in path:
                answer = http("GET", console.url + path)
                assert answer.status == 401, (path, answer.status)
                assert set(json.loads(answer.body)) == {"error", "fix"}, path


def test_metrics_have_per_service_status_and_sync_gauges(console: Console) -> None:
    console.reconcile_run("failed", {"error": "no kubeconfig"})
    text = console.get("/metrics").decode()
    assert 'configcenter_service_status{env="dev",service="api",status="committed"} 1' in text
    assert 'configcenter_service_status{env="dev",service="api",status="healthy"} 0' in text
    assert 'configcenter_service_status{env="prod",service="api",status="not_deployed"} 1' in text
    assert 'configcenter_service_sync{env="dev",service="api",state="unknown"} 1' in text
    assert 'configcenter_service_sync{env="dev",service="api",state="none"} 0' in text
    drifts = [{"service": "api", "field": "image", "desired": "a", "live": "b"}]
    console.reconcile_run(
        "succeeded", {"services": {"api": {"status": "drifted", "drifts": drifts}}}
    )
    text = console.get("/metrics").decode()
    assert 'configcenter_service_sync{env="dev",service="api",state="known"} 1' in text
    assert 'configcenter_service_drift_entries{env="dev",service="api"} 1' in text


def test_an_expected_job_failure_is_one_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """dev rolls out to a Kubernetes platform whose kubeconfig does not exist."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    missing = tmp_path / "no-such-kubeconfig"
    world = make_shop_world(tmp_path / "world", namespace="shop", kubeconfig=missing)
    ws = Workspace(world.config.root, run_store_url=world.run_store_url)
    assert apply_env(ws, "dev", ApplyOptions(rollout=False)).outcome == "succeeded"
    engine, _ = build(ws, ServeOptions(workers=1, identity="replica-a"))
    job = Job(id="reconcile-now", source="schedule", kind="reconcile", env="dev")
    try:
        engine.submit(job)
        engine.start()
        done = poll(
            lambda: (j := engine.jobs.get(job.id)) is not None and j.state == "failed" and j,
            60,
            "the reconcile job to fail",
        )
    finally:
        engine.stop()
        engine.jobs.close()
    assert done and "cannot load kubeconfig" in done.note
    [record] = [r for r in caplog.records if job.id in r.getMessage()]
    assert record.levelname == "WARNING" and record.exc_info is None
    assert "cannot load kubeconfig" in record.getMessage()
    assert "Traceback" not in caplog.text


def test_a_checkout_without_upstream_is_one_warning_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """serve needs a clone it can fetch: one without an upstream never sees a push, so
    start says so (each job's note says it again), instead of running on silently."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    world = make_shop_world(tmp_path / "world")
    git(world.config.root, "branch", "--unset-upstream")
    ws = Workspace(world.config.root, run_store_url=world.run_store_url)
    engine, _ = build(ws, ServeOptions(workers=1, identity="replica-a"))
    try:
        engine.start()
    finally:
        engine.stop()
        engine.jobs.close()
    [record] = [r for r in caplog.records if "no upstream" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert str(world.config.root) in record.getMessage()
    assert "git branch --set-upstream-to" in record.getMessage()


def test_matrix_in_headless_chromium_at_390_and_1400_px(console: Console) -> None:
    """Real Chromium through chromedriver: the matrix fits a phone and a desktop, both schemes."""
    import shutil

    driver_path = shutil.which("chromedriver")
    if driver_path is None or shutil.which("chromium") is None:
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    drifts = [{"service": "api", "field": "replicas", "desired": "2", "live": "5"}]
    console.reconcile_run(
        "succeeded", {"services": {"api": {"status": "drifted", "drifts": drifts}}}
    )
    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    ARTIFACTS.mkdir(exist_ok=True)
    url = console.url.replace("http://", "http://ops:apisec-test@") + "/"
    try:
        for width, height in ((390, 844), (1400, 900)):
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
            )
            for scheme in ("light", "dark"):
                driver.execute_cdp_cmd(
                    "Emulation.setEmulatedMedia",
                    {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
                )
                driver.get(url)
                page_width = driver.execute_script("return document.documentElement.scrollWidth")
                assert page_width <= width, f"{width}px: the page is {page_width}px wide"
                for env in ("dev", "prod"):
                    cell = driver.find_element(
                        By.CSS_SELECTOR, f'td[data-env="{env}"][data-service="api"]'
                    )
                    assert cell.is_displayed()
                    right = cell.rect["x"] + cell.rect["width"]
                    assert right <= width, f"{width}px: the {env} cell ends at {right}px"
                dev = driver.find_element(By.CSS_SELECTOR, 'td[data-env="dev"]')
                assert "replicas: 2 → 5" in dev.text  # drift details shown, not a tooltip
                assert "in sync" not in driver.find_element(By.ID, "matrix").text
                background = driver.execute_script(
                    "return getComputedStyle(document.body).backgroundColor"
                )
                expected = "rgb(13, 17, 23)" if scheme == "dark" else "rgb(255, 255, 255)"
                assert background == expected, (scheme, background)
                shot = ARTIFACTS / f"console-matrix-{width}px-{scheme}.png"
                shot.unlink(missing_ok=True)
                assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    finally:
        driver.quit()


def test_metrics_count_cli_runs_from_the_run_store(console: Console) -> None:
    """The fixture's apply ran from the CLI's use case, not in serve: it is counted all the same."""
    series = 'configcenter_recorded_runs_total{kind="apply",outcome="succeeded",trigger="cli"}'
    text = console.get("/metrics").decode()
    assert f"{series} 1\n" in text
    assert "# TYPE configcenter_recorded_runs_total counter" in text
    running = console.store.start("apply", "dev", [], "cli", "ops@test")
    other = console.store.start("deploy", "dev", ["api"], "webhook:gitlab", "gitlab")
    console.store.finish(other.id, "failed", {"error": "boom"})
    text = console.get("/metrics").decode()
    assert f"{series} 1\n" in text  # still running: not counted yet
    deploys = (
        'configcenter_recorded_runs_total{kind="deploy",outcome="failed",trigger="webhook:gitlab"}'
    )
    assert f"{deploys} 1\n" in text
    console.store.finish(running.id, "succeeded", {"results": []})
    text = console.get("/metrics").decode()
    assert f"{series} 2\n" in text and f"{deploys} 1\n" in text  # each run once


def test_metrics_drift_has_an_unknown_sample_when_reconcile_fails(console: Console) -> None:
    console.reconcile_run("failed", {"error": "no kubeconfig"})
    text = console.get("/metrics").decode()
    assert 'configcenter_drift{env="dev",state="unknown"} NaN\n' in text
    assert 'configcenter_drift{env="prod",state="unknown"} NaN\n' in text  # never reconciled
    drifts = [{"service": "api", "field": "image", "desired": "a", "live": "b"}]
    console.reconcile_run(
        "succeeded",
        {"drift_count": 1, "services": {"api": {"status": "drifted", "drifts": drifts}}},
    )
    text = console.get("/metrics").decode()
    assert 'configcenter_drift{env="dev",state="known"} 1\n' in text
    assert 'configcenter_drift{env="dev",state="unknown"}' not in text
    console.reconcile_run("noop", {"drift_count": 0, "services": {"api": {"status": "in_sync"}}})
    assert 'configcenter_drift{env="dev",state="none"} 0\n' in console.get("/metrics").decode()


def test_recorded_runs_count_each_run_once_across_pages(tmp_path: Path) -> None:
    from configcenter.serve.store_metrics import RecordedRuns
    from configcenter.wiring import open_run_store

    store = open_run_store(f"sqlite:///{tmp_path / 'runs.sqlite3'}")
    counter = RecordedRuns()
    counter.PAGE, counter.KEEP = 2, 3  # several pages and a pruned memory

    def record(n: int, outcome: str = "succeeded") -> None:
        for _ in range(n):
            run = store.start("apply", "dev", [], "cli", "ops@test")
            store.finish(run.id, outcome, {})

    try:
        record(5)
        assert counter.update(store) == {("apply", "succeeded", "cli"): 5}
        assert counter.update(store) == {("apply", "succeeded", "cli"): 5}
        left_running = store.start("apply", "dev", [], "cli", "ops@test")
        record(4, "failed")
        counts = counter.update(store)
        assert counts == {("apply", "succeeded", "cli"): 5, ("apply", "failed", "cli"): 4}
        record(3)
        store.finish(left_running.id, "noop", {})
        counts = counter.update(store)
        assert counts == {
            ("apply", "succeeded", "cli"): 8,
            ("apply", "failed", "cli"): 4,
            ("apply", "noop", "cli"): 1,
        }
    finally:
        store.close()


def test_openapi_run_outcome_filter_lists_what_the_console_shows(console: Console) -> None:
    from configcenter.serve.status import RUN_OUTCOMES

    doc = json.loads(console.get("/openapi.json"))
    params = {p["name"]: p for p in doc["paths"]["/api/runs"]["get"]["parameters"]}
    assert params["outcome"]["schema"]["enum"] == list(RUN_OUTCOMES)


def test_a_promotion_run_lists_the_services_it_pins(console: Console) -> None:
    run = console.store.start("promote", "prod", [], "console", "ops@test", {"from": "dev"})
    promotion = {"status": "opened", "services": {"web": {}, "api": {}}, "skipped": {}}
    console.store.finish(run.id, "succeeded", {"promotion": promotion})
    [shown] = json.loads(console.get("/api/runs?kind=promote"))
    assert shown["changed"] == ["api", "web"]
    assert shown["shown"]["outcome"] == "succeeded"
