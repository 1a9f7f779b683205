"""The status page in a real headless Chromium: it loads, shows the matrix, marks failures."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from configcenter.wiring import open_run_store
from tests.serve.conftest import Served
from tests.support.helpers import poll
from tests.support.serve_fixtures import ServeProcess, http

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed; apt-get install -y chromium")
    return found


def browse(binary: str, profile: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_status_page_in_chromium(served: Served, tmp_path: Path) -> None:
    binary = chromium()
    delivery = served.push_change(
        "environments/dev/api.yaml",
        "template: 1.0.0\nimage: {ref: registry.test/shop/api:2.0}\nreplicas: 2\n",
        "api 2.0",
    )
    assert delivery.post(served.url + "/hooks/gitlab")[0] == 202
    poll(served.settled, 120, "the push job to finish")
    # A run that failed, recorded in the same run store serve reads.
    store = open_run_store(served.world.run_store_url)
    try:
        failed = store.start("deploy", "dev", ["api"], "cli", "ops@test")
        store.append_log(failed.id, "api: rollout failed (ProgressDeadlineExceeded)\n")
        store.finish(failed.id, "failed", {"error": "ProgressDeadlineExceeded"})
    finally:
        store.close()

    # Chromium cannot send a bearer token from its command line, so the page is
    # opened with basic auth (credentials in the URL), configured next to the token.
    assert http("GET", served.url + "/").status == 401
    served.proc.stop()
    served.world.config.write(
        "configcenter.yaml",
        served.world.config.read("configcenter.yaml")
        + '  basic_auth: {username: ops, password: {secret: "env:CC_API_TOKEN"}}\n',
    )
    reopened = ServeProcess(served.world)
    served.proc = reopened
    page_url = reopened.url.replace("http://", f"http://ops:{served.tokens['api']}@") + "/"
    try:
        reopened.wait_ready()
        dom = browse(binary, tmp_path / "profile-dom", page_url, "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        assert 'id="matrix"' in html
        assert 'data-env="dev" data-service="api"' in html
        assert "registry.test/shop/api:2.0" in html and "1.0.0" in html
        assert '<tr class="failed">' in html and "✗ FAILED" in html
        assert "ProgressDeadlineExceeded" in html

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "serve-status-page.png"
        shot.unlink(missing_ok=True)
        taken = browse(
            binary,
            tmp_path / "profile-shot",
            page_url,
            f"--screenshot={shot}",
            "--window-size=1280,900",
        )
        assert taken.returncode == 0, taken.stderr[-2000:]
        assert shot.read_bytes()[:8] == base64.b64decode("iVBORw0KGgo=")
    finally:
        reopened.stop()
