"""The stages a release goes through besides "apply and wait": pre-deploy jobs before the
workload is applied, verification after its pods are ready.

A template declares them in `template.yaml`:

    hooks:
      pre_deploy: [migrate.yaml]   # rendered Jobs that must complete first
      timeout: 10m                 # per job (default: the env's rollout timeout)
      retention: 24h               # finished jobs are deleted after this long
    verify: [smoke.yaml]           # rendered Jobs run after a healthy rollout
    # or
    verify:
      jobs: [smoke.yaml]
      http: {path: /healthz, expect_status: 200, timeout: 30s}   # for Marathon tasks

Job files are outputs of the template (so they are rendered with the release's
values) and are not applied as part of the workload. What a release's stages
are is recorded with it in the state record (`ServiceState.stages`), so a later
`deploy` of that release runs the same stages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from configcenter.core.errors import ProblemList, Source

DEFAULT_RETENTION = 24 * 3600  # seconds a finished stage Job is kept
DEFAULT_HTTP_TIMEOUT = 30.0


def parse_duration(raw: object) -> float | None:
    """Seconds in '30s', '5m', '1h30m' or a bare number (the schema's one parser); None when
    malformed (the schema reports that, at its line)."""
    from configcenter.core.schema import parse_duration as parse

    try:
        return parse(raw)
    except ValueError:
        return None


@dataclass(frozen=True)
class HttpCheck:
    """GET `path` on every task of the release; healthy when each answers `expect_status`."""

    path: str
    expect_status: int = 200
    timeout: float = DEFAULT_HTTP_TIMEOUT  # how long a task may take to answer so

    def describe(self) -> str:
        return f"http GET {self.path} -> {self.expect_status} (within {self.timeout:g}s)"


@dataclass(frozen=True)
class ReleaseStages:
    pre_deploy: tuple[str, ...] = ()
    verify: tuple[str, ...] = ()
    http: HttpCheck | None = None
    job_timeout: float | None = None  # None: the environment's rollout timeout
    retention: int = DEFAULT_RETENTION

    @property
    def job_files(self) -> frozenset[str]:
        """Outputs that are stage Jobs, not part of the workload."""
        return frozenset((*self.pre_deploy, *self.verify))

    @property
    def empty(self) -> bool:
        return not (self.pre_deploy or self.verify or self.http)

    @property
    def verifies(self) -> bool:
        return bool(self.verify or self.http)

    def describe(self, *, skip_verify: bool = False) -> list[str]:
        """The stages in order, one line each, as plan and apply --dry-run show them."""
        lines = [f"pre-deploy job {name}" for name in self.pre_deploy]
        lines.append("apply and wait for ready")
        checks = [f"verify job {name}" for name in self.verify]
        if self.http:
            checks.append("verify " + self.http.describe())
        if skip_verify and checks:
            lines.append("verification skipped (--skip-verify): " + ", ".join(checks))
        else:
            lines += checks
        return lines

    def to_record(self) -> dict[str, Any]:
        """The state record's `stages:` (empty when the template declares none)."""
        if self.empty:
            return {}
        record: dict[str, Any] = {}
        if self.pre_deploy:
            record["pre_deploy"] = list(self.pre_deploy)
        if self.verify:
            record["verify"] = list(self.verify)
        if self.http:
            record["http"] = {
                "path": self.http.path,
                "expect_status": self.http.expect_status,
                "timeout": self.http.timeout,
            }
        if self.job_timeout is not None:
            record["job_timeout"] = self.job_timeout
        if self.retention != DEFAULT_RETENTION:
            record["retention"] = self.retention
        return record

    @classmethod
    def from_record(cls, data: Mapping[str, Any] | None) -> ReleaseStages:
        if not data:
            return cls()
        http = data.get("http")
        return cls(
            pre_deploy=tuple(str(x) for x in data.get("pre_deploy") or ()),
            verify=tuple(str(x) for x in data.get("verify") or ()),
            http=HttpCheck(
                path=str(http["path"]),
                expect_status=int(http.get("expect_status", 200)),
                timeout=float(http.get("timeout", DEFAULT_HTTP_TIMEOUT)),
            )
            if isinstance(http, Mapping) and http.get("path")
            else None,
            job_timeout=float(data["job_timeout"]) if data.get("job_timeout") else None,
            retention=int(data.get("retention", DEFAULT_RETENTION)),
        )


def still_to_run(stages: ReleaseStages, outcome: str | None) -> ReleaseStages:
    """The stages a catch-up (or put-back) of a recorded release still runs: none when the
    release was recorded healthy (its pre-deploy jobs and verification already succeeded,
    so a hand edit put back does not migrate again); all of them otherwise. Of a release
    whose outcome was never recorded, apply then skips each stage Job the platform shows
    this release completed in an earlier attempt (`JobPlatform.run_job`'s `resume`)."""
    return ReleaseStages() if outcome == "healthy" else stages


def template_stages(
    data: Mapping[str, Any],
    outputs: list[str],
    source: Any,
    problems: ProblemList | None = None,
) -> ReleaseStages:
    """The stages `template.yaml`'s data declares; every mistake goes to `problems`.

    `source(*path)` gives the Source (file and line) of a key path, as YamlDoc.source.
    Types are checked by the schema; this checks what the schema cannot: job files must
    be YAML outputs of the template, durations and the HTTP check must make sense.
    """
    problems = problems if problems is not None else ProblemList()
    hooks = data.get("hooks") or {}
    verify = data.get("verify") or []
    if not isinstance(hooks, Mapping):
        hooks = {}
    if isinstance(verify, list):
        verify = {"jobs": verify}
    if not isinstance(verify, Mapping):
        verify = {}

    def jobs(names: object, *path: str | int) -> tuple[str, ...]:
        found: list[str] = []
        for index, name in enumerate(names if isinstance(names, list) else []):
            if not isinstance(name, str):
                continue
            where: Source = source(*path, index)
            if name not in outputs:
                problems.error(
                    where,
                    f"stage job {name!r} is not one of the template's outputs",
                    f"add {name} to outputs: (it is rendered like the others), or fix the name",
                )
            elif not name.endswith((".yaml", ".yml")):
                problems.error(
                    where,
                    f"stage job {name!r} must be a Kubernetes Job manifest (.yaml or .yml)",
                    "render the Job as YAML, e.g. migrate.yaml",
                )
            elif name in found:
                problems.error(where, f"stage job {name!r} is listed twice", "list it once")
            else:
                found.append(name)
        return tuple(found)

    pre_deploy = jobs(hooks.get("pre_deploy"), "hooks", "pre_deploy")
    verify_path = ("verify",) if isinstance(data.get("verify"), list) else ("verify", "jobs")
    verify_jobs = jobs(verify.get("jobs"), *verify_path)
    both = set(pre_deploy) & set(verify_jobs)
    for name in sorted(both):
        problems.error(
            source("verify"),
            f"{name} is both a pre-deploy job and a verification job",
            "render two files, one for each stage",
        )

    def duration(raw: object, *path: str) -> float | None:
        return None if raw is None else parse_duration(raw)  # the schema checks the format

    job_timeout = duration(hooks.get("timeout"), "hooks", "timeout")
    retention = duration(hooks.get("retention"), "hooks", "retention")
    http: HttpCheck | None = None
    raw_http = verify.get("http")
    if isinstance(raw_http, Mapping):
        path = raw_http.get("path")
        status = raw_http.get("expect_status", 200)
        if not isinstance(path, str) or not path.startswith("/"):
            problems.error(
                source("verify", "http", "path") if path is not None else source("verify", "http"),
                f"verify.http.path must be a URL path starting with '/', not {path!r}",
                "e.g. path: /healthz",
            )
        elif isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            problems.error(
                source("verify", "http", "expect_status"),
                f"verify.http.expect_status must be an HTTP status code, not {status!r}",
                "e.g. expect_status: 200",
            )
        else:
            timeout = duration(raw_http.get("timeout"), "verify", "http", "timeout")
            http = HttpCheck(path, status, timeout or DEFAULT_HTTP_TIMEOUT)
    return ReleaseStages(
        pre_deploy=pre_deploy,
        verify=verify_jobs,
        http=http,
        job_timeout=job_timeout,
        retention=int(retention) if retention else DEFAULT_RETENTION,
    )
