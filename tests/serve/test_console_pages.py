"""The console's service, plan, diff and run pages, and their JSON twins, over real HTTP.

Real config and deploy repos, real applies through the CLI's use case, the real run
store; what the pages say is checked against what Git and the run store hold.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from configcenter.usecases.apply import ApplyOptions, apply_env
from configcenter.usecases.workspace import Workspace
from tests.serve.conftest import DIGEST, Console, chrome, screenshot
from tests.support.configrepo import git
from tests.support.serve_fixtures import http

SECRET_VALUE = "sentinel-log-level-7d2c41"
API = "environments/dev/api.yaml"


def api_yaml(replicas: int, log_level: str) -> str:
    return (
        f"template: 1.0.0\nimage: {{ref: registry.test/shop/api@{DIGEST}}}\n"
        f"replicas: {replicas}\nvalues:\n  LOG_LEVEL: {log_level}\n"
    )


@dataclass
class History:
    console: Console
    releases: list[str]  # newest first
    config_commits: list[str]  # the config commit of each release, newest first
    pending: str  # the config commit not applied yet

    def json(self, path: str) -> Any:
        return json.loads(self.console.get(path))

    def html(self, path: str) -> str:
        return self.console.get(path).decode()


@pytest.fixture
def history(console: Console, monkeypatch: pytest.MonkeyPatch) -> History:
    """api in dev: the fixture's release, then replicas 3 + LOG_LEVEL debug, then LOG_LEVEL
    from a secret; then replicas 4 committed to the config repo but not applied."""
    monkeypatch.setenv("CC_LOG_LEVEL", SECRET_VALUE)
    world = console.world
    first = world.config.git("rev-parse", "HEAD").strip()
    commits = [first]
    for replicas, level in ((3, "debug"), (3, '{secret: "env:CC_LOG_LEVEL"}')):
        world.config.write(API, api_yaml(replicas, level))
        commits.append(world.config.commit(f"api: {replicas} replicas, LOG_LEVEL {level}"))
        ws = Workspace(world.config.root, run_store_url=world.run_store_url)
        assert apply_env(ws, "dev", ApplyOptions(actor="ops@test")).outcome == "succeeded"
    world.config.write(API, api_yaml(4, '{secret: "env:CC_LOG_LEVEL"}'))
    pending = world.config.commit("api: 4 replicas")
    detail = json.loads(console.get("/api/environments/dev/services/api"))
    releases = [r["release"] for r in detail["releases"]]
    assert len(releases) == 3, detail["releases"]
    return History(console, releases, commits[::-1], pending)


def schema_validator(console: Console, name: str) -> Any:
    from openapi_schema_validator import OAS30Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    doc = json.loads(console.get("/openapi.json"))
    registry: Registry[Any] = Registry().with_resource(
        "urn:doc", Resource.from_contents(doc, default_specification=DRAFT4)
    )
    return OAS30Validator({"$ref": f"urn:doc#/components/schemas/{name}"}, registry=registry)


def test_service_api_lists_releases_with_outcome_who_when_and_config_commit(
    history: History,
) -> None:
    detail = history.json("/api/environments/dev/services/api")
    schema_validator(history.console, "ServiceDetail").validate(detail)
    releases = detail["releases"]
    assert [r["config_commit"] for r in releases] == history.config_commits
    assert {r["outcome"] for r in releases} == {"committed"}  # commit-only environment
    assert {r["by"] for r in releases} == {"cli ops@test"}
    runs = [r["run"] for r in releases]
    for run_id in runs:  # each release names the run that made it, in the run store
        run = history.console.store.get(run_id)
        assert run is not None and run.kind == "apply" and run.actor == "ops@test"
    assert [r["at"] for r in releases] == sorted((r["at"] for r in releases), reverse=True)
    assert detail["status"]["status"] == "committed"
    assert detail["status"]["release"]["id"] == history.releases[0]


def test_service_api_has_the_pending_plan_of_that_service(history: History) -> None:
    plan = history.json("/api/environments/dev/services/api")["plan"]
    assert plan["action"] == "update"
    assert plan["replicas"] == {"from": 3, "to": 4}
    assert plan["config_commit"] == history.pending
    # The same as `configcenter plan dev --service api --json` says for api.
    whole = history.json("/api/environments/dev/plan?service=api")
    assert [s["service"] for s in whole["services"]] == ["api"]
    assert whole["services"][0]["replicas"] == plan["replicas"]


def test_service_page_shows_history_diff_form_and_plan(history: History) -> None:
    html = history.html("/environments/dev/services/api")
    newest, middle, oldest = history.releases
    for release in history.releases:
        assert f'<tr data-release="{release}">' in html
    for commit in history.config_commits:
        assert f'<code title="{commit}">{commit[:10]}</code>' in html
    assert f'href="api/diff?from={middle}&amp;to={newest}">vs previous</a>' in html
    assert f'href="api/diff?from={oldest}&amp;to={middle}">vs previous</a>' in html
    assert 'id="diff-form"' in html and f'<option value="{middle}" selected>' in html
    assert 'href="../../../runs?env=dev&amp;service=api">runs of api in dev' in html
    plan = re.search(r'<section aria-labelledby="plan-title" id="plan">.*?</section>', html, re.S)
    assert plan and 'data-action="update"' in plan.group(0) and "3 → 4" in plan.group(0)
    assert SECRET_VALUE not in html


def test_diff_of_two_releases_values_with_sources_and_files(history: History) -> None:
    _, middle, oldest = history.releases
    diff = history.json(f"/api/environments/dev/services/api/diff?from={oldest}&to={middle}")
    schema_validator(history.console, "ReleaseDiff").validate(diff)
    assert diff["fields"] == {"replicas": {"from": 2, "to": 3}}
    assert diff["values"]["changed"] == {"LOG_LEVEL": {"from": "info", "to": "debug"}}
    # info came from the defaults file, debug from the service file, at each config commit.
    assert diff["sources"]["LOG_LEVEL"] == {
        "from": "environments/_defaults.yaml:2",
        "to": "environments/dev/api.yaml:5",
    }
    assert diff["sources_note"] is None
    assert "-LOG_LEVEL=info\n+LOG_LEVEL=debug\n" in diff["files"]["app.env"]
    assert "-  replicas: 2\n+  replicas: 3\n" in diff["files"]["deployment.yaml"]

    html = history.html(f"/environments/dev/services/api/diff?from={oldest}&to={middle}")
    assert '<span class="del">-LOG_LEVEL=info</span><span class="add">+LOG_LEVEL=debug</span>' in (
        html
    )
    assert "environments/_defaults.yaml:2 → environments/dev/api.yaml:5" in html


def test_diff_masks_a_secret_value(history: History) -> None:
    newest, middle, _ = history.releases
    path = f"/environments/dev/services/api/diff?from={middle}&to={newest}"
    diff = history.json("/api" + path)
    assert diff["values"]["changed"]["LOG_LEVEL"] == {"from": "debug", "to": "***"}
    assert "+LOG_LEVEL=${secret:env:CC_LOG_LEVEL}" in diff["files"]["app.env"]
    everything = json.dumps(diff) + history.html(path)
    everything += history.html("/environments/dev/services/api") + history.html("/environments/dev")
    assert SECRET_VALUE not in everything


def test_env_plan_page_is_the_plan_apply_would_carry_out(history: History) -> None:
    plan = history.json("/api/environments/dev/plan")
    schema_validator(history.console, "Plan").validate(plan)
    assert plan["summary"] == {"change": 1, "blocked": 0, "unchanged": 0}
    assert plan["config_commit"] == history.pending
    html = history.html("/environments/dev")
    assert 'data-change="1">1 to change' in html
    assert '<a href="../environments/dev/services/api">api</a>' in html
    assert "3 → 4" in html
    # prod has nothing deployed yet: its plan creates api.
    prod = history.json("/api/environments/prod/plan")
    assert [(s["service"], s["action"]) for s in prod["services"]] == [("api", "create")]


def test_unknown_env_service_or_release_is_404_naming_the_fix(history: History) -> None:
    auth = {"Authorization": "Bearer apisec-test"}
    url = history.console.url
    for path, words in (
        ("/api/environments/nope/plan", "no environment 'nope'"),
        ("/api/environments/dev/services/nope", "no service 'nope' in dev"),
        ("/api/environments/dev/services/api/diff?from=r0&to=r1", "no release 'r0' in dev"),
    ):
        result = http("GET", url + path, headers=auth)
        assert result.status == 404, (path, result.body)
        body = result.json()
        assert words in body["error"] and body["fix"], body
    # Required query parameters left out: the request is wrong (400), nothing is missing.
    for path in (
        "/api/environments/dev/services/api/diff",
        "/api/environments/dev/services/api/diff?from=r0",
    ):
        result = http("GET", url + path, headers=auth)
        assert result.status == 400, (path, result.body)
        assert "name the two releases" in result.json()["error"], result.body
    page = http("GET", url + "/environments/dev/services/api/diff?to=r1", headers=auth)
    assert page.status == 400 and "name the two releases" in page.body.decode()
    doc = history.json("/openapi.json")
    for route in (
        "/api/environments/{env}/services/{service}/diff",
        "/environments/{env}/services/{service}/diff",
    ):
        operation = doc["paths"][route]["get"]
        assert "400" in operation["responses"], route
        assert {"from", "to"} <= {p["name"] for p in operation["parameters"]}, route
    page = http("GET", url + "/environments/dev/services/nope", headers=auth)
    assert page.status == 404 and "no service &#39;nope&#39; in dev" in page.body.decode()


def test_matrix_cells_link_to_service_pages_and_columns_to_plans(history: History) -> None:
    html = history.console.page()
    assert '<a class="cell-link" href="./environments/dev/services/api">' in html
    assert '<a href="./environments/prod">prod</a>' in html


def test_runs_show_what_changed_and_no_op_runs_read_no_changes(console: Console) -> None:
    world = console.world
    ws = Workspace(world.config.root, run_store_url=world.run_store_url)
    world.config.write(API, api_yaml(3, "info"))
    world.config.commit("api: 3 replicas")
    changed = apply_env(ws, "dev", ApplyOptions(actor="ops@test"))
    unchanged = apply_env(
        Workspace(world.config.root, run_store_url=world.run_store_url),
        "dev",
        ApplyOptions(actor="ops@test"),
    )
    runs = {r["id"]: r for r in json.loads(console.get("/api/runs?env=dev&kind=apply"))}
    assert runs[changed.run_id]["changed"] == ["api"] and runs[changed.run_id]["services"] == []
    assert runs[changed.run_id]["shown"] == {
        "outcome": "committed",
        "label": "committed, not rolled out",
    }
    assert runs[unchanged.run_id]["changed"] == []
    assert runs[unchanged.run_id]["shown"] == {"outcome": "no_changes", "label": "no changes"}
    assert console.store.get(str(unchanged.run_id)).outcome == "succeeded"  # type: ignore[union-attr]

    html = console.page()
    row = re.search(rf'<tr class="" data-run="{changed.run_id}".*?</tr>', html, re.S)
    assert row and "<td>api</td>" in row.group(0)
    assert '<span class="badge committed">committed, not rolled out</span>' in row.group(0)
    row = re.search(rf'<tr class="" data-run="{unchanged.run_id}".*?</tr>', html, re.S)
    assert row and '<span class="badge no_changes">no changes</span>' in row.group(0)
    assert "<td>-</td>" in row.group(0)


def test_failed_run_page_shows_the_whole_error_and_no_empty_log(console: Console) -> None:
    error = "deploy repo push refused: " + "x" * 400 + " (the end)"
    run = console.store.start("apply", "dev", ["api"], "cli", "ops@test")
    console.store.finish(run.id, "failed", {"error": error})
    html = console.get(f"/runs/{run.id}").decode()
    assert "(empty)" not in html
    assert f'<pre class="full" id="error">{error}</pre>' in html
    assert "the run\nwrote no log lines; the error above is why it failed" in html
    details = re.search(r'<pre class="full" id="details">(.*?)</pre>', html, re.S)
    assert details and json.loads(details.group(1).replace("&#34;", '"')) == {"error": error}
    assert '<span class="badge failed">✗ FAILED</span>' in html


def test_a_rolled_back_run_page_names_the_release_commit_and_the_rollback_commit(
    console: Console,
) -> None:
    release, rollback = "a1" * 20, "b2" * 20
    run = console.store.start("apply", "dev", ["api"], "cli", "ops@test")
    console.store.finish(
        run.id, "rolled_back", {"commit": release, "rollback_commit": rollback, "results": []}
    )
    html = console.get(f"/runs/{run.id}").decode()
    assert f'<dt>deploy commit</dt><dd><code title="{release}">{release[:10]}</code>' in html
    assert f'<dt>rollback commit</dt><dd><code title="{rollback}">{rollback[:10]}</code>' in html


def test_run_list_filters_and_pages(console: Console) -> None:
    made = []
    for kind, outcome, services in (
        ("reconcile", "failed", []),
        ("deploy", "succeeded", ["api"]),
        ("deploy", "failed", ["web"]),
        ("reconcile", "noop", []),
        ("rollback", "rolled_back", ["api"]),
    ):
        run = console.store.start(kind, "prod", services, "cli", "ops@test")
        console.store.finish(run.id, outcome, {"error": "boom"} if outcome == "failed" else {})
        made.append(run.id)
    newest_first = made[::-1]

    def ids(query: str) -> list[str]:
        return [r["id"] for r in json.loads(console.get(f"/api/runs?env=prod&{query}"))]

    assert ids("") == newest_first
    assert ids("kind=deploy") == [made[2], made[1]]
    assert ids("outcome=failed") == [made[2], made[0]]
    assert ids("outcome=no_changes") == [made[3]]
    assert ids("service=api") == [made[4], made[1]]
    assert ids("outcome=failed&kind=reconcile") == [made[0]]
    # Paging: two a page, the Link header names the next page until the last.
    seen, path = [], "/api/runs?env=prod&limit=2"
    while path:
        result = http("GET", console.url + path, headers={"Authorization": "Bearer apisec-test"})
        seen += [r["id"] for r in result.json()]
        link = result.headers.get("link")
        path = re.match(r"<(.*?)>; rel=\"next\"", link).group(1) if link else ""  # type: ignore[union-attr]
    assert seen == newest_first
    # The same filters, paged, with outcome and service together.
    seen, path = [], "/api/runs?env=prod&limit=1&outcome=failed"
    while path:
        result = http("GET", console.url + path, headers={"Authorization": "Bearer apisec-test"})
        seen += [r["id"] for r in result.json()]
        link = result.headers.get("link")
        path = re.match(r"<(.*?)>; rel=\"next\"", link).group(1) if link else ""  # type: ignore[union-attr]
    assert seen == [made[2], made[0]]
    bad = http(
        "GET",
        console.url + "/api/runs?outcome=great",
        headers={"Authorization": "Bearer apisec-test"},
    )
    assert bad.status == 400 and "unknown outcome 'great'" in bad.json()["error"]

    html = console.get("/runs?env=prod&outcome=failed").decode()
    assert [m for m in re.findall(r'data-run="(r[^"]+)"', html)] == [made[2], made[0]]
    assert "<option selected>failed</option>" in html
    html = console.get(f"/runs?env=prod&before={made[2]}").decode()
    assert re.findall(r'data-run="(r[^"]+)"', html) == [made[1], made[0]]
    assert '<a href="?env=prod">← newest</a>' in html


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1400, 900)])
def test_in_chromium_matrix_to_service_to_diff(history: History, width: int, height: int) -> None:
    """Only the browser talks to the app: open the matrix, click into api in dev, pick two
    releases, see their diff; no horizontal page scroll at either width."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    newest, middle, oldest = history.releases
    url = history.console.url.replace("http://", "http://ops:apisec-test@") + "/"

    def fits(driver: Any, what: str) -> None:
        page_width = driver.execute_script("return document.documentElement.scrollWidth")
        wide = driver.execute_script(
            "return [...document.querySelectorAll('body *')].filter(e => "
            "e.getBoundingClientRect().right > arguments[0]).slice(0, 5).map(e => "
            "e.tagName + '#' + e.id + '.' + e.className)",
            width,
        )
        assert page_width <= width, f"{width}px: the {what} is {page_width}px wide: {wide}"

    with chrome(width, height) as driver:
        wait = WebDriverWait(driver, 30)
        driver.get(url)
        fits(driver, "status page")
        screenshot(driver, f"console-matrix-links-{width}px")
        link = driver.find_element(
            By.CSS_SELECTOR, 'td[data-env="dev"][data-service="api"] a.cell-link'
        )
        link.click()
        wait.until(lambda d: d.find_elements(By.ID, "releases"))
        assert driver.current_url.endswith("/environments/dev/services/api")
        fits(driver, "service page")
        rows = driver.find_elements(By.CSS_SELECTOR, "#releases tbody tr")
        assert [r.get_attribute("data-release") for r in rows] == history.releases
        assert "update" in driver.find_element(By.ID, "plan").text
        assert driver.find_element(By.ID, "service-runs").is_displayed()
        screenshot(driver, f"console-service-{width}px")

        Select(driver.find_element(By.ID, "diff-from")).select_by_value(oldest)
        Select(driver.find_element(By.ID, "diff-to")).select_by_value(newest)
        driver.find_element(By.ID, "diff-submit").click()
        wait.until(lambda d: d.find_elements(By.ID, "values"))
        assert f"diff?from={oldest}&to={newest}" in driver.current_url
        fits(driver, "diff page")
        values = driver.find_element(By.ID, "values").text
        assert "LOG_LEVEL" in values and "***" in values and SECRET_VALUE not in values
        added = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "pre.diff .add")]
        removed = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "pre.diff .del")]
        assert "+LOG_LEVEL=${secret:env:CC_LOG_LEVEL}" in added and "-LOG_LEVEL=info" in removed
        assert SECRET_VALUE not in driver.page_source
        screenshot(driver, f"console-diff-{width}px")
        driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
        )
        driver.refresh()
        wait.until(lambda d: d.find_elements(By.ID, "values"))
        line = driver.find_element(By.CSS_SELECTOR, "pre.diff .add")
        assert line.value_of_css_property("background-color") == "rgba(18, 54, 31, 1)"
        screenshot(driver, f"console-diff-{width}px-dark")
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})

        driver.find_element(By.LINK_TEXT, "api").click()  # back through the breadcrumb
        wait.until(lambda d: d.find_elements(By.ID, "releases"))
        driver.find_element(By.CSS_SELECTOR, f'tr[data-release="{middle}"] a.diff-prev').click()
        wait.until(lambda d: d.find_elements(By.ID, "sides"))
        assert f"{oldest} → {middle}" in driver.find_element(By.TAG_NAME, "h1").text

        driver.get(url)  # the environment's plan, linked above the matrix at any width
        plans = driver.find_element(By.CSS_SELECTOR, 'nav.envs a[href$="environments/dev"]')
        assert plans.is_displayed()
        plans.click()
        wait.until(lambda d: d.find_elements(By.ID, "plan-summary"))
        fits(driver, "plan page")
        assert "1 to change" in driver.find_element(By.ID, "plan-summary").text
        assert "replicas" in driver.find_element(By.ID, "plan").text
        screenshot(driver, f"console-plan-{width}px")


def test_diff_sources_of_a_service_that_depends_on_another(console: Console) -> None:
    """Only web's own files are read at each config commit; that api (which web depends on)
    is in dev then is known from Git's listing, so the sources load."""
    world = console.world
    world.config.write("templates/web/template.yaml", "outputs: [app.env]\ndepends_on: [api]\n")
    world.config.write("templates/web/app.env.j2", "GREETING={{ GREETING }}\n")
    world.config.commit("web template")
    world.config.tag("web/1.0.0")
    releases = []
    for greeting in ("hello", "howdy"):
        world.config.write(
            "environments/dev/web.yaml",
            "template: 1.0.0\nimage: {ref: registry.test/shop/web:1.0}\nreplicas: 1\n"
            f"values:\n  GREETING: {greeting}\n",
        )
        world.config.commit(f"web says {greeting}")
        ws = Workspace(world.config.root, run_store_url=world.run_store_url)
        result = apply_env(ws, "dev", ApplyOptions(actor="ops@test"))
        [release] = [r.release for r in result.results if r.service == "web"]
        releases.append(release)
    diff = json.loads(
        console.get(f"/api/environments/dev/services/web/diff?from={releases[0]}&to={releases[1]}")
    )
    assert diff["values"]["changed"] == {"GREETING": {"from": "hello", "to": "howdy"}}
    assert diff["sources"] == {
        "GREETING": {"from": "environments/dev/web.yaml:5", "to": "environments/dev/web.yaml:5"}
    }
    assert diff["sources_note"] is None
    # A release of another service is refused, naming the service it is of.
    other = json.loads(console.get("/api/environments/dev/services/api"))["releases"][0]["release"]
    wrong = http(
        "GET",
        console.url + f"/api/environments/dev/services/web/diff?from={other}&to={releases[1]}",
        headers={"Authorization": "Bearer apisec-test"},
    )
    assert wrong.status == 404 and "is of api, not web" in wrong.json()["error"]


def test_run_lists_show_the_tail_of_failed_runs_logs_only(console: Console) -> None:
    failed = console.store.start("deploy", "dev", ["api"], "cli", "ops@test")
    console.store.append_log(failed.id, "".join(f"step {i:03d}\n" for i in range(1, 101)))
    console.store.finish(failed.id, "failed", {"error": "ProgressDeadlineExceeded"})
    fine = console.store.start("deploy", "dev", ["api"], "cli", "ops@test")
    console.store.append_log(fine.id, "quiet success line\n")
    console.store.finish(fine.id, "succeeded", {})
    for html in (console.page(), console.get("/runs").decode()):
        assert "log (the last 40 lines; the run's page has all 100)" in html
        assert "step 061\n" in html and "step 100\nerror: ProgressDeadlineExceeded" in html
        assert "step 060" not in html
        assert "quiet success line" not in html  # on its run's page, not inline
    assert "step 001" in console.get(f"/runs/{failed.id}").decode()
    assert "quiet success line" in console.get(f"/runs/{fine.id}").decode()


def test_service_history_limit(history: History) -> None:
    two = history.json("/api/environments/dev/services/api?limit=2")["releases"]
    assert [r["release"] for r in two] == history.releases[:2]
    html = history.html("/environments/dev/services/api?limit=2")
    assert '<a id="older-releases" href="?limit=8">more releases →</a>' in html
    assert "older-releases" not in history.html("/environments/dev/services/api")
    bad = http(
        "GET",
        history.console.url + "/api/environments/dev/services/api?limit=0",
        headers={"Authorization": "Bearer apisec-test"},
    )
    assert bad.status == 400 and "limit must be" in bad.json()["error"]


def test_a_value_equal_to_a_secret_serve_knows_is_masked_on_every_page(console: Console) -> None:
    """serve.api_token's value written as a plain value: the masker catches it everywhere."""
    world = console.world
    world.config.write(API, api_yaml(2, "apisec-test"))
    world.config.commit("a value that is a secret")
    ws = Workspace(world.config.root, run_store_url=world.run_store_url)
    assert apply_env(ws, "dev", ApplyOptions(actor="ops@test")).outcome == "succeeded"
    world.config.write(API, api_yaml(3, "apisec-test"))
    world.config.commit("pending")
    releases = json.loads(console.get("/api/environments/dev/services/api"))["releases"]
    newest, older = releases[0]["release"], releases[1]["release"]
    diff = f"environments/dev/services/api/diff?from={older}&to={newest}"
    pages = [
        "/api/environments/dev/plan",
        "/api/environments/dev/services/api",
        f"/api/{diff}",
        "/environments/dev",
        "/environments/dev/services/api",
        f"/{diff}",
    ]
    everything = "".join(console.get(p).decode() for p in pages)
    assert "apisec-test" not in everything
    assert json.loads(console.get(f"/api/{diff}"))["values"]["changed"]["LOG_LEVEL"]["to"] == "***"


def test_a_broken_state_record_is_a_503_naming_it_not_a_500(console: Console) -> None:
    world = console.world
    clone = world.root / "deploy-edit"
    git(world.root, "clone", "-q", str(world.deploy), str(clone))
    (clone / "dev" / ".state" / "api.json").write_text("{not json\n")
    git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "hand edit")
    git(clone, "push", "-q", "origin", "HEAD:main")
    auth = {"Authorization": "Bearer apisec-test"}
    for path in ("/api/environments/dev/services/api", "/environments/dev/services/api", "/"):
        result = http("GET", console.url + path, headers=auth)
        assert result.status == 503, (path, result.status, result.body[:300])
        assert "dev/.state/api.json" in result.body.decode(), path
    body = http("GET", console.url + "/api/environments/dev/services/api", headers=auth).json()
    assert body["fix"]


def test_a_cursor_that_names_no_run_is_refused_not_read_as_the_newest_page(
    console: Console,
) -> None:
    """`before=` a typo or a well-formed id of no run in this store: 400 naming the parameter
    and how to get a cursor (the Link header), not the newest page; a real cursor still pages."""
    made = []
    for _ in range(3):
        run = console.store.start("reconcile", "prod", [], "cli", "ops@test")
        console.store.finish(run.id, "noop", {})
        made.append(run.id)
    auth = {"Authorization": "Bearer apisec-test"}
    unknown = "r20990101T000000000000Z0123456789"  # well formed, sorts after every run
    for cursor in ("zzz", unknown, made[2] + "x"):
        result = http("GET", console.url + f"/api/runs?env=prod&before={cursor}", headers=auth)
        assert result.status == 400, (cursor, result.status, result.body[:300])
        body = result.json()
        assert set(body) == {"error", "fix"}
        assert f"before={cursor!r}" in body["error"] and "no run" in body["error"]
        assert 'rel="next"' in body["fix"]
        html = http("GET", console.url + f"/runs?env=prod&before={cursor}", headers=auth)
        assert html.status == 400 and "no run" in html.body.decode()
    assert [r["id"] for r in json.loads(console.get(f"/api/runs?env=prod&before={made[2]}"))] == [
        made[1],
        made[0],
    ]


def test_a_cursor_is_checked_in_the_runs_index_without_reading_its_run(tmp_path: Path) -> None:
    """`before=` is checked against the run store's primary key: the cursor's run (its log,
    which may be megabytes of build output) is not read to page past it."""
    from configcenter.adapters.sqlite_runs import SqliteRunStore
    from configcenter.serve import views

    store = SqliteRunStore(tmp_path / "runs.sqlite3", None)
    made = []
    for n in range(3):
        run = store.start("apply", "prod", ["api"], "cli", "ops@test")
        store.append_log(run.id, f"build output {n}\n" * 200)
        store.finish(run.id, "succeeded", {})
        made.append(run.id)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        page = views.list_runs(store, env="prod", before=made[2], limit=10)
        with pytest.raises(views.BadCursor):
            views.list_runs(store, env="prod", before=made[2][:-1] + "0", limit=10)
    finally:
        store._conn.set_trace_callback(None)
        store.close()

    assert [r.id for r in page.runs] == [made[1], made[0]]
    assert statements and not [s for s in statements if "run_log" in s], statements
