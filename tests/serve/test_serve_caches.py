"""serve keeps what its jobs rendered, as the CLI does after each command: a real
`configcenter serve` applies on pushes (two workers, two environments at once) and the
rendered-files packs on disk then hold exactly the files the deploy repo received."""

from __future__ import annotations

import marshal
import subprocess
from pathlib import Path

from tests.serve.conftest import start_served
from tests.support.helpers import poll
from tests.support.serve_fixtures import ServeProcess


def deployed_files(deploy: Path, env: str) -> dict[str, bytes]:
    """Every rendered file of `env` on the deploy repo's main branch (not the records)."""
    names = subprocess.run(
        ["git", f"--git-dir={deploy}", "ls-tree", "-r", "--name-only", "main", f"{env}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        name.split("/", 2)[2]: subprocess.run(
            ["git", f"--git-dir={deploy}", "show", f"main:{name}"], capture_output=True, check=True
        ).stdout
        for name in names
        if not name.startswith(f"{env}/.state/")
    }


def kept_records(cache: Path) -> list[dict[str, bytes]]:
    """The records of every rendered-files pack under the cache dir, as files by name."""
    packs = sorted((cache / "configcenter" / "rendered").glob("*/*.pack"))
    records: list[dict[str, bytes]] = []
    for pack in packs:
        loaded = marshal.loads(pack.read_bytes())
        assert isinstance(loaded, dict), pack
        records += list(loaded.values())
    return records


def test_serve_jobs_keep_the_rendered_files_they_computed(
    tmp_path: Path, serve_processes: list[ServeProcess]
) -> None:
    served = start_served(
        tmp_path,
        serve_processes,
        envs={"dev": "auto_apply: true\n", "demo": "auto_apply: true\n"},
    )
    try:
        cache = tmp_path / "xdg-cache"
        assert kept_records(cache) == [], "nothing is rendered before the first job"
        for level in ("debug", "warn"):  # two pushes: two jobs, two workers
            delivery = served.push_change(
                "environments/_defaults.yaml", f"values:\n  LOG_LEVEL: {level}\n", level
            )
            status, body = delivery.post(served.url + "/hooks/gitlab")
            assert status == 202, body
        done = poll(
            lambda: (d := served.settled()) and len(d["jobs"]) == 2 and d,
            180,
            "both push jobs to finish",
        )
        assert {j["state"] for j in done["jobs"]} == {"done"}, done

        records = kept_records(cache)
        for env in ("dev", "demo"):
            files = deployed_files(served.world.deploy, env)
            assert b"LOG_LEVEL=warn" in files["app.env"], files
            assert files in records, f"{env}'s committed files were not kept"
    finally:
        served.gitlab.stop()
