"""Release stages in template.yaml (hooks:, verify:): what loads, and the errors that name
the file, the line and the fix."""

from __future__ import annotations

import pytest

from configcenter.core.errors import Source
from configcenter.core.stages import HttpCheck, ReleaseStages, parse_duration, template_stages
from tests.support.configrepo import ConfigRepo, only_problem

TEMPLATE = "templates/api/template.yaml"
OUTPUTS = "outputs: [app.env, deployment.yaml, migrate.yaml, smoke.yaml]\n"
JOB = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\n"


@pytest.fixture
def repo(tmp_path: object) -> ConfigRepo:
    from pathlib import Path

    repo = ConfigRepo.basic(Path(str(tmp_path)) / "config")
    repo.write("templates/api/migrate.yaml.j2", JOB)
    repo.write("templates/api/smoke.yaml.j2", JOB)
    return repo


def write_template(repo: ConfigRepo, extra: str) -> None:
    repo.write(
        TEMPLATE, OUTPUTS + "env: [LOG_LEVEL, DB_HOST, DB_PASSWORD]\ndepends_on: [db]\n" + extra
    )
    repo.commit("stages")
    repo.tag("api/1.0.0", force=True)


def stages_of(repo: ConfigRepo) -> ReleaseStages:
    template = repo.load().environment("dev").services["api"].template
    return template_stages(template.doc.data, template.outputs, template.doc.source)


def test_hooks_and_verify_jobs_load(repo: ConfigRepo) -> None:
    write_template(
        repo,
        "hooks: {pre_deploy: [migrate.yaml], timeout: 5m, retention: 2h}\nverify: [smoke.yaml]\n",
    )
    stages = stages_of(repo)
    assert stages == ReleaseStages(
        pre_deploy=("migrate.yaml",), verify=("smoke.yaml",), job_timeout=300, retention=7200
    )
    assert stages.job_files == {"migrate.yaml", "smoke.yaml"}
    assert stages.describe() == [
        "pre-deploy job migrate.yaml",
        "apply and wait for ready",
        "verify job smoke.yaml",
    ]
    assert stages.describe(skip_verify=True)[-1] == (
        "verification skipped (--skip-verify): verify job smoke.yaml"
    )
    assert ReleaseStages.from_record(stages.to_record()) == stages


def test_verify_http_loads_and_round_trips(repo: ConfigRepo) -> None:
    write_template(repo, "verify:\n  http: {path: /healthz, expect_status: 204, timeout: 10s}\n")
    stages = stages_of(repo)
    assert stages.http == HttpCheck("/healthz", 204, 10.0)
    assert ReleaseStages.from_record(stages.to_record()) == stages
    assert ReleaseStages().to_record() == {}


@pytest.mark.parametrize(
    ("extra", "line", "message", "hint"),
    [
        (
            "hooks: {pre_deploy: [migrat.yaml]}\n",
            4,
            "stage job 'migrat.yaml' is not one of the template's outputs",
            "add migrat.yaml to outputs:",
        ),
        (
            "verify:\n  - smoke.yaml\n  - smoke.yaml\n",
            6,
            "stage job 'smoke.yaml' is listed twice",
            "list it once",
        ),
        (
            "hooks:\n  pre_deploy: [migrate.yaml]\n  timeout: soon\n",
            6,
            "'timeout': 'soon' is not a duration",
            "30s, 5m",
        ),
        (
            "verify:\n  http: {path: healthz}\n",
            5,
            "verify.http.path must be a URL path starting with '/'",
            "path: /healthz",
        ),
        (
            "verify:\n  http:\n    path: /healthz\n    expect_status: 999\n",
            7,
            "verify.http.expect_status must be an HTTP status code",
            "expect_status: 200",
        ),
    ],
)
def test_mistakes_name_the_line_and_the_fix(
    repo: ConfigRepo, extra: str, line: int, message: str, hint: str
) -> None:
    write_template(repo, extra)
    problem = only_problem(repo.problems())
    assert problem.source == Source(TEMPLATE.replace("templates/api", "templates/api@1.0.0"), line)
    assert message in problem.message
    assert hint in problem.hint


def test_verify_must_be_a_list_or_a_mapping(repo: ConfigRepo) -> None:
    write_template(repo, "verify: smoke.yaml\n")
    problem = only_problem(repo.problems())
    assert "'verify' must be a list or a mapping" in problem.message


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("1.5h", 5400.0), ("1h30m", 5400.0), (12, 12.0), ("0s", None)],
)
def test_durations(raw: object, seconds: float | None) -> None:
    assert parse_duration(raw) == seconds
    assert parse_duration("soon") is None and parse_duration(True) is None
