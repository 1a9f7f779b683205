"""A rollback from the console in real headless Chromium, on the test bed's control plane.

`configcenter serve` runs as its own process; the browser is the only thing that talks
to it. One window keeps the status page open; another picks a release on the actions
pages, reads the plan, confirms, and watches the run's log stream to its end. The first
window then shows the rolled-back image without having been reloaded, and the
Deployment on the API server runs it. At 390 px and 1400 px, screenshots in
test-artifacts/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from configcenter.usecases.apply import ApplyOptions, apply_env
from configcenter.usecases.history import history
from tests.serve.conftest import SERVE_SECTION
from tests.support.serve_fixtures import ServeProcess, ShopWorld, make_shop_world

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
API_TOKEN = "apisec-browser"
BASIC = SERVE_SECTION + '  basic_auth: {username: ops, password: {secret: "env:CC_API_TOKEN"}}\n'
IMAGE = "registry.test/shop/api:{}"


def api_file(tag: str) -> str:
    return f"template: 1.0.0\nimage: {{ref: {IMAGE.format(tag)}}}\nreplicas: 2\n"


@pytest.fixture
def world(tmp_path: Path, k8s_namespace: Any, monkeypatch: pytest.MonkeyPatch) -> ShopWorld:
    """dev on the bed with api released as 1.0, 1.1 and 1.2 (each rolled out healthy)."""
    env = {
        "CC_WEBHOOK_TOKEN": "whsec-browser",
        "CC_REGISTRY_TOKEN": "regsec-browser",
        "CC_API_TOKEN": API_TOKEN,
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    world = make_shop_world(
        tmp_path / "world",
        namespace=k8s_namespace.name,
        kubeconfig=k8s_namespace.kubeconfig,
        serve=BASIC,
    )
    world.env.update(env)
    for tag in ("1.0", "1.1", "1.2"):
        if tag != "1.0":
            world.config.write("environments/dev/api.yaml", api_file(tag))
            world.config.commit(f"dev: api {tag}")
            world.push_config()
        result = apply_env(world.workspace(), "dev", ApplyOptions(actor="ops@test"))
        assert result.outcome == "succeeded", (tag, result.results)
    return world


@pytest.fixture
def driver() -> Iterator[Any]:
    driver_path = shutil.which("chromedriver")
    if driver_path is None or shutil.which("chromium") is None:
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield browser
    finally:
        browser.quit()


def deployed_image(k8s_namespace: Any) -> str:
    from kubernetes import client

    with k8s_namespace.api_client() as api:
        deployment = client.AppsV1Api(api).read_namespaced_deployment("api", k8s_namespace.name)
    return str(deployment.spec.template.spec.containers[0].image)


def releases_by_image(world: ShopWorld) -> dict[str, str]:
    """Image -> release id, from the deploy repo (what the test set up, not the app)."""
    return {e.image: e.release for e in history(world.workspace(), "dev", "api")}


@pytest.mark.k8s
def test_rollback_from_the_console_streams_its_log_and_the_status_follows(
    world: ShopWorld,
    k8s_namespace: Any,
    driver: Any,
    serve_processes: list[ServeProcess],
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    proc = ServeProcess(world, "--workers", "1")
    serve_processes.append(proc)
    proc.wait_ready()
    base = proc.url.replace("http://", f"http://ops:{API_TOKEN}@")
    ARTIFACTS.mkdir(exist_ok=True)
    releases = releases_by_image(world)
    assert deployed_image(k8s_namespace) == IMAGE.format("1.2")

    def wait(what: str, check: Any, timeout: float = 120) -> Any:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(
            lambda d: check(d), message=what
        )

    def shot(name: str, width: int) -> None:
        path = ARTIFACTS / f"actions-{name}-{width}px.png"
        path.unlink(missing_ok=True)
        assert driver.save_screenshot(str(path)) and path.stat().st_size > 1000

    def fits(width: int) -> None:
        page_width = driver.execute_script("return document.documentElement.scrollWidth")
        assert page_width <= width, f"{width}px: {driver.current_url} is {page_width}px wide"

    def cell_text() -> str:
        return cell_read(lambda cell: str(cell.text))

    def cell_read(read: Any) -> str:
        """Read the cell; the live refresh may replace it between find and read: try again."""
        try:
            found = driver.find_element(By.CSS_SELECTOR, 'td[data-env="dev"][data-service="api"]')
            return str(read(found))
        except StaleElementReferenceException:
            return ""

    # (width, from, to): at 1400 px 1.2 -> 1.1, then at 390 px 1.1 -> 1.0.
    for width, height, before, after in ((1400, 900, "1.2", "1.1"), (390, 844, "1.1", "1.0")):
        driver.switch_to.window(driver.window_handles[0])
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )
        driver.get(base + "/")
        assert IMAGE.format(before) in cell_text()
        status = driver.window_handles[0]
        driver.execute_script("window.__notReloaded = true;")

        # Another tab: actions -> roll back… -> pick the release -> the plan.
        driver.switch_to.new_window("tab")
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )
        driver.get(base + "/")
        driver.find_element(By.CSS_SELECTOR, "#actions a[href$='actions']").click()
        driver.find_element(
            By.CSS_SELECTOR, 'tr[data-env="dev"][data-service="api"] a.rollback'
        ).click()
        target = releases[IMAGE.format(after)]
        row = driver.find_element(By.CSS_SELECTOR, f'tr[data-release="{target}"]')
        row.find_element(By.LINK_TEXT, "roll back to this").click()
        plan = driver.find_element(By.ID, "plan").text
        assert IMAGE.format(before) in plan and IMAGE.format(after) in plan
        assert target in driver.find_element(By.TAG_NAME, "h1").text
        fits(width)
        shot("confirm", width)

        driver.find_element(By.ID, "confirm").click()
        # The page draws the log empty: every line below came over the SSE stream.
        log = wait("the action's page", lambda d: d.find_element(By.ID, "log"))
        wait("the log stream to end", lambda d, pre=log: pre.get_attribute("data-ended"), 180)
        ended = log.get_attribute("data-ended")
        assert ended == "succeeded", driver.find_element(By.ID, "outcome").text
        assert f"api: rolled back to {target}" in log.text
        assert "api: healthy 2/2 updated, 2 ready" in log.text  # the rollout's progress
        assert "succeeded" in driver.find_element(By.ID, "outcome").text
        assert driver.find_element(By.ID, "state").get_attribute("data-state") == "done"
        run_link = driver.find_element(By.CSS_SELECTOR, "#run a")
        assert "(rollback)" in run_link.text
        fits(width)
        shot("log", width)

        # The platform runs the release the console put back.
        assert deployed_image(k8s_namespace) == IMAGE.format(after)

        # The status tab, never reloaded, shows it too (and the rollback run).
        driver.close()
        driver.switch_to.window(status)
        shown = IMAGE.format(after)
        wait("the status page to follow", lambda d, image=shown: image in cell_text(), 60)
        wait(
            "the cell to say healthy",
            lambda d: cell_read(lambda cell: cell.get_attribute("data-status")) == "healthy",
            30,
        )
        assert driver.execute_script("return window.__notReloaded === true")

        def runs_text() -> str:
            try:
                return str(driver.find_element(By.ID, "runs").text)
            except StaleElementReferenceException:
                return ""

        wait(
            "the runs to list the console's rollback",
            lambda d: "rollback" in runs_text() and "console" in runs_text(),
            30,
        )
        fits(width)
        shot("status-after", width)
        releases = releases_by_image(world)


def test_a_running_runs_page_streams_its_log_then_shows_how_it_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, driver: Any
) -> None:
    """A run the CLI is making (written to the shared run store, as the CLI writes it):
    its page shows new log lines as they come and, once it ends, its outcome."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.serve.test_actions import console_for

    for name, value in (
        ("CC_WEBHOOK_TOKEN", "whsec-browser"),
        ("CC_REGISTRY_TOKEN", "regsec-browser"),
        ("CC_API_TOKEN", "apisec-actions"),
        ("XDG_STATE_HOME", str(tmp_path / "xdg-state")),
        ("XDG_CACHE_HOME", str(tmp_path / "xdg-cache")),
    ):
        monkeypatch.setenv(name, value)
    world = make_shop_world(tmp_path / "world", serve=BASIC)
    assert apply_env(world.workspace(), "dev", ApplyOptions(actor="ops@test")).outcome == (
        "succeeded"
    )
    store = world.workspace().run_store
    run = store.start("deploy", "dev", ["api"], "cli", "ops@test")
    store.append_log(run.id, "api: first line\n")
    with console_for(world) as console:
        driver.get(console.url.replace("http://", "http://ops:apisec-actions@") + f"/runs/{run.id}")
        log = driver.find_element(By.ID, "log")
        assert log.text == "api: first line"
        WebDriverWait(driver, 30).until(lambda d: log.get_attribute("data-streaming") == "1")
        store.append_log(run.id, "api: second line\n")
        WebDriverWait(driver, 30, poll_frequency=0.1).until(
            lambda d: "api: second line" in log.text, "the new line to stream in"
        )
        assert log.text.count("api: first line") == 1  # drawn once, not streamed again
        store.finish(run.id, "succeeded", {"result": {"service": "api", "outcome": "healthy"}})
        WebDriverWait(driver, 30, poll_frequency=0.1).until(
            lambda d: d.execute_script("return document.documentElement.dataset.ended"),
            "the page to redraw the ended run",
        )
        badge = driver.find_element(By.CSS_SELECTOR, "h1 .badge").text
        assert "succeeded" in badge, badge
        assert "api: second line" in driver.find_element(By.ID, "log").text
    store.close()
