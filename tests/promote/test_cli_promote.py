"""`configcenter promote` with the local forge: push the branch, print how to merge it."""

from __future__ import annotations

import json
import subprocess

from click.testing import CliRunner

from configcenter.cli import cli
from tests.support.configrepo import git
from tests.support.promote_fixtures import PromotionBed, read_marker

BRANCH = "promote/dev-to-demo"
DEMO_API = "environments/demo/api.yaml"


def run(bed: PromotionBed, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-C", str(bed.config), "promote", *args])
    return result.exit_code, result.output


def merge_command(output: str) -> str:
    return output.split("To merge it: ", 1)[1].strip()


def test_local_forge_pushes_the_branch_and_prints_the_merge_command(
    promotion_bed: PromotionBed,
) -> None:
    bed = promotion_bed
    code, output = run(bed, "dev", "demo")

    assert code == 0, output
    assert "Opened local merge request !1 for promote/dev-to-demo -> main." in output
    assert BRANCH in bed.origin_branches()
    command = merge_command(output)
    assert command.startswith(f"git -C {bed.config} checkout main && ")
    assert command.endswith(f"git -C {bed.config} push origin main")

    subprocess.run(command, shell=True, check=True, capture_output=True)
    merged = (bed.config / DEMO_API).read_text()
    assert "template: 1.1.0   # pinned tag" in merged
    assert "# The api in demo: reviewed by the shop team." in merged
    assert "template: 1.1.0" in bed.origin_file("main", DEMO_API)

    code, output = run(bed, "dev", "demo")  # demo now pins what dev runs
    assert code == 0 and "Nothing to promote from dev to demo" in output


def test_without_a_remote_the_branch_is_local(promotion_bed: PromotionBed) -> None:
    bed = promotion_bed
    git(bed.config, "remote", "remove", "origin")

    code, output = run(bed, "dev", "demo")

    assert code == 0, output
    assert git(bed.config, "rev-parse", "--verify", BRANCH).strip()
    assert BRANCH not in bed.origin_branches()
    subprocess.run(merge_command(output), shell=True, check=True, capture_output=True)
    assert "template: 1.1.0" in (bed.config / DEMO_API).read_text()


def test_dry_run_prints_the_request_and_changes_nothing(promotion_bed: PromotionBed) -> None:
    bed = promotion_bed
    refs_before = git(bed.config, "for-each-ref").splitlines()

    code, output = run(bed, "dev", "demo", "--dry-run")

    assert code == 0, output
    assert "title:   Promote dev -> demo: api 1.1.0" in output
    assert f"branch:  {BRANCH} -> main" in output
    assert "labels:  promotion, env::demo" in output
    assert "#### api: update (template, image)" in output
    assert "dry run: would push" in output
    assert git(bed.config, "for-each-ref").splitlines() == refs_before
    assert bed.origin_branches() == ["main"]
    assert not (bed.config / ".git" / "configcenter" / "merge-requests" / "1.json").exists()
    assert git(bed.config, "worktree", "list").count("\n") == 1  # the temporary one is gone


def test_json_output(promotion_bed: PromotionBed) -> None:
    bed = promotion_bed
    code, output = run(bed, "dev", "demo", "--json")

    assert code == 0, output
    data = json.loads(output)
    assert data["status"] == "opened" and data["branch"] == BRANCH
    assert data["services"]["api"]["template"] == {"from": "1.0.0", "to": "1.1.0"}
    assert data["merge_request"]["iid"] == 1
    assert read_marker(data["description"])["to"] == "demo"  # type: ignore[index]


def test_bad_input_is_one_clear_line(promotion_bed: PromotionBed) -> None:
    bed = promotion_bed
    code, output = run(bed, "dev", "prod")
    assert code == 1
    assert "promoting dev -> prod skips demo" in output
    assert "Traceback" not in output


def test_a_downgrade_is_refused_without_allow_downgrade_and_said_with_it(
    promotion_bed: PromotionBed,
) -> None:
    """demo was promoted api 1.1.0; dev goes back to 1.0.0: promoting dev again would take
    demo back. Refused (exit 1, nothing pushed) unless --allow-downgrade; a dry run shows
    it; the merge request says it."""
    bed = promotion_bed
    code, output = run(bed, "dev", "demo")
    assert code == 0, output
    subprocess.run(merge_command(output), shell=True, check=True, capture_output=True)
    bed.change(
        "environments/dev/api.yaml",
        "template: 1.0.0\nimage: {ref: registry.example.com/shop/api:1.0}\n",
        "dev: back to api 1.0.0",
    )
    bed.apply("dev")
    tip = git(bed.origin, "rev-parse", f"refs/heads/{BRANCH}").strip()
    expected = [
        "template 1.1.0 -> 1.0.0 (a lower version)",
        "image registry.example.com/shop/api:1.1 -> registry.example.com/shop/api:1.0 "
        "(a lower version)",
    ]

    code, output = run(bed, "dev", "demo")
    assert code == 1, output
    assert "would downgrade demo: api: " + ", ".join(expected) in output
    assert "configcenter promote dev demo --allow-downgrade" in output
    assert "Traceback" not in output
    assert git(bed.origin, "rev-parse", f"refs/heads/{BRANCH}").strip() == tip

    refused = CliRunner().invoke(cli, ["-C", str(bed.config), "promote", "dev", "demo", "--json"])
    assert refused.exit_code == 1
    data = json.loads(refused.stdout)
    assert (data["ok"], data["exit_code"]) == (False, 1)
    assert "would downgrade demo" in data["problems"][0]["message"]
    assert "--allow-downgrade" in data["problems"][0]["hint"]

    dry = CliRunner().invoke(
        cli, ["-C", str(bed.config), "promote", "dev", "demo", "--dry-run", "--json"]
    )
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert [
        f"{d['what']} {d['from']} -> {d['to']} ({d['why']})" for d in plan["downgrades"]["api"]
    ] == expected
    assert plan["services"]["api"]["downgrades"] == plan["downgrades"]["api"]
    assert plan["message"].endswith("it downgrades demo: promote needs --allow-downgrade")
    assert (
        "> **Downgrade: merging takes demo back to older pins than it has now.**"
        in (plan["description"])
    )
    assert git(bed.origin, "rev-parse", f"refs/heads/{BRANCH}").strip() == tip

    code, output = run(bed, "dev", "demo", "--allow-downgrade")
    assert code == 0, output
    assert output.startswith(
        "Downgrade of demo (allowed by --allow-downgrade): api: " + "; api: ".join(expected)
    )
    assert git(bed.origin, "rev-parse", f"refs/heads/{BRANCH}").strip() != tip
    subprocess.run(merge_command(output), shell=True, check=True, capture_output=True)
    assert "template: 1.0.0" in (bed.config / DEMO_API).read_text()
