"""apply, plan, rollback and history through the real CLI, on a real bare deploy remote.

Each test starts from a fresh shop world (tests/support/e2e_fixtures.py): db, api
(depends on db) and worker in dev, templates released as 1.0.0 (api also 1.1.0).
Nothing here rolls out to a platform (--no-rollout), so every outcome is read
back from Git and the run store exactly as a user would.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.e2e_fixtures import World

RELEASE_TRAILER = "Configcenter-Release"


def apply_first(world: World) -> str:
    world.ok("apply", "dev", "--no-rollout")
    head = world.head()
    assert head is not None
    return head


def set_value(world: World, rel: str, old: str, new: str) -> str:
    """Edit one line of a config file and commit it; the config commit sha."""
    text = world.config.read(rel)
    assert old in text, f"{old!r} is not in {rel}"
    world.config.write(rel, text.replace(old, new))
    return world.config.commit(f"{rel}: {new}")


def releases(world: World, rev: str = "refs/heads/main") -> dict[str, str]:
    """service -> release id, from the commit's Configcenter-Release trailers."""
    found = {}
    for key, value in world.trailers(rev):
        if key == RELEASE_TRAILER:
            service, _, release = value.partition(" ")
            found[service] = release
    return found


def objects(world: World) -> set[str]:
    """Ids of every object in the deploy remote (a push would add some)."""
    out = world.git_deploy("cat-file", "--batch-all-objects", "--batch-check=%(objectname)")
    return set(out.decode().split())


def changed_paths(world: World, old: str, new: str) -> set[str]:
    out = world.git_deploy("diff", "--name-only", old, new).decode()
    return set(out.split())


# -- first apply ---------------------------------------------------------------------------------


def test_first_apply_is_one_commit_with_files_state_message_and_trailers(
    world: World, tmp_path: Path
) -> None:
    config_head = world.config.git("rev-parse", "HEAD").strip()
    result = world.ok("apply", "dev", "--no-rollout")

    assert world.commit_count() == 1
    files = world.files()
    assert set(files) == {
        "dev/.state/_env.json",
        "dev/.state/api.json",
        "dev/.state/db.json",
        "dev/.state/worker.json",
        "dev/db/app.env",
        "dev/api/app.env",
        "dev/api/deployment.yaml",
        "dev/api/marathon.json",
        "dev/worker/app.env",
    }
    # Byte for byte what `render` produces, and the secret stays a reference.
    world.ok("render", "dev", "--out", str(tmp_path / "rendered"))
    for path, data in files.items():
        if not path.startswith("dev/.state/"):
            service_file = path.removeprefix("dev/")
            assert (tmp_path / "rendered" / service_file).read_bytes() == data, path
    assert files["dev/api/app.env"] == (
        b"# api in dev (1.0.0)\n"
        b"LOG_LEVEL=debug\n"
        b"DB_HOST=db\n"
        b"DB_PASSWORD=${secret:env:SHOP_DB_PASSWORD}\n"
    )
    assert files["dev/worker/app.env"] == b"LOG_LEVEL=debug\nQUEUE=jobs\n"

    message = world.message()
    subject = message.splitlines()[0]
    for service in ("db", "api", "worker"):
        assert f"{service} (create" in subject, subject
    assert "template" in subject and "values" in subject and "image" in subject

    trailers = world.trailers()
    keys = [k for k, _ in trailers]
    assert keys.count("Configcenter-Env") == 1 and ("Configcenter-Env", "dev") in trailers
    assert ("Configcenter-Config-Commit", config_head) in trailers
    [run_id] = [v for k, v in trailers if k == "Configcenter-Run"]
    ids = releases(world)
    assert set(ids) == {"db", "api", "worker"}

    state = world.state("dev")
    assert state["env"] == "dev"
    services = state["services"]
    assert isinstance(services, dict) and set(services) == {"db", "api", "worker"}
    for service, record in services.items():
        assert record["template_tag"] == "1.0.0"
        assert record["release"]["id"] == ids[service]
        assert record["release"]["outcome"] == "committed"
        assert record["release"]["run"] == run_id
        # Never rolled out: the committed release is the last good one.
        assert record["last_good"]["id"] == ids[service]
    assert services["api"]["values"]["DB_PASSWORD"] == {"secret": "env:SHOP_DB_PASSWORD"}

    runs = world.runs()
    assert [(r[0], r[1], r[2], r[4]) for r in runs] == [(run_id, "apply", "dev", "succeeded")]
    assert run_id in result.stdout


def test_noop_apply_makes_no_commit_and_no_push(world: World) -> None:
    head = apply_first(world)
    refs, known = world.refs(), objects(world)

    result = world.ok("apply", "dev", "--no-rollout")

    assert "nothing to do" in result.output.lower()
    assert world.head() == head
    assert world.refs() == refs
    assert objects(world) == known, "a no-op apply pushed objects to the deploy repo"
    assert world.commit_count() == 1


# -- changes -------------------------------------------------------------------------------------


def test_value_change_updates_only_that_service(world: World) -> None:
    first = apply_first(world)
    before = world.state("dev")["services"]
    set_value(world, "environments/dev/api.yaml", "LOG_LEVEL: debug", "LOG_LEVEL: warn")

    plan = json.loads(world.ok("plan", "dev", "--json").stdout)
    by_service = {s["service"]: s for s in plan["services"]}
    assert by_service["api"]["action"] == "update"
    assert by_service["api"]["reasons"] == ["values"]
    assert by_service["api"]["values"]["changed"]["LOG_LEVEL"]["from"] == "debug"
    assert by_service["api"]["values"]["changed"]["LOG_LEVEL"]["to"] == "warn"
    assert by_service["db"]["action"] == by_service["worker"]["action"] == "noop"

    world.ok("apply", "dev", "--no-rollout")

    head = world.head()
    assert head is not None and world.commit_count() == 2
    assert world.git_deploy("rev-parse", f"{head}^").decode().strip() == first
    assert changed_paths(world, first, head) == {
        "dev/api/app.env",
        "dev/.state/api.json",
        "dev/.state/_env.json",
    }
    assert b"LOG_LEVEL=warn\n" in world.files()["dev/api/app.env"]
    subject = world.message().splitlines()[0]
    assert subject == "apply dev: api (update: values)"
    assert set(releases(world)) == {"api"}
    after = world.state("dev")["services"]
    assert after["api"]["values_digest"] != before["api"]["values_digest"]
    assert after["api"]["release"]["id"] == releases(world)["api"]
    for untouched in ("db", "worker"):
        assert after[untouched] == before[untouched]


def test_template_tag_change_moves_the_pin(world: World) -> None:
    first = apply_first(world)
    set_value(world, "environments/dev/api.yaml", "template: 1.0.0", "template: 1.1.0")

    world.ok("apply", "dev", "--no-rollout")

    head = world.head()
    assert head is not None
    assert changed_paths(world, first, head) == {
        "dev/api/app.env",
        "dev/.state/api.json",
        "dev/.state/_env.json",
    }
    app_env = world.files()["dev/api/app.env"]
    assert app_env.startswith(b"# api in dev (1.1.0)\n")
    assert app_env.endswith(b"FEATURE_CHECKOUT_V2=true\n")
    message = world.message()
    assert message.splitlines()[0] == "apply dev: api (update: template)"
    assert "template 1.0.0 -> 1.1.0" in message
    api = world.state("dev")["services"]["api"]
    assert api["template_tag"] == "1.1.0"
    assert api["release"]["template_tag"] == "1.1.0"
    tag_commit = world.config.git("rev-parse", "api/1.1.0^{commit}").strip()
    assert api["template_commit"] == tag_commit


def test_deleted_service_loses_its_files_and_state(world: World) -> None:
    apply_first(world)
    world.config.remove("environments/dev/worker.yaml")
    world.config.commit("retire worker in dev")

    plan = json.loads(world.ok("plan", "dev", "--json").stdout)
    actions = {s["service"]: s["action"] for s in plan["services"]}
    assert actions == {"db": "noop", "api": "noop", "worker": "delete"}

    # Named alone: the config no longer knows worker, the deploy repo does.
    result = world.ok("apply", "dev", "--no-rollout", "--json", "-s", "worker")

    outcome = {r["service"]: r for r in json.loads(result.stdout)["results"]}
    assert outcome["worker"]["action"] == "delete"
    files = world.files()
    assert not [p for p in files if p.startswith("dev/worker/")]
    assert "dev/api/app.env" in files and "dev/db/app.env" in files
    assert set(world.state("dev")["services"]) == {"db", "api"}
    assert world.message().splitlines()[0] == "apply dev: worker (delete)"
    assert world.commit_count() == 2


# -- rollback and blocked releases ---------------------------------------------------------------


def test_rollback_restores_config_as_a_new_commit_and_blocks_until_retry(world: World) -> None:
    first = apply_first(world)
    good_release = releases(world, first)["api"]
    good_files = world.files(first)
    set_value(world, "environments/dev/api.yaml", "LOG_LEVEL: debug", "LOG_LEVEL: warn")
    world.ok("apply", "dev", "--no-rollout")
    bad_head = world.head()
    assert bad_head is not None
    bad_release = releases(world)["api"]

    result = world.ok("rollback", "dev", "api", "--no-rollout")

    assert good_release in result.stdout
    head = world.head()
    assert head is not None and head != bad_head
    # A new commit on top: history is not rewritten.
    assert world.commit_count() == 3
    assert world.git_deploy("rev-parse", f"{head}^").decode().strip() == bad_head
    assert world.git_deploy("rev-list", head).decode().split()[1:] == [bad_head, first]
    assert changed_paths(world, bad_head, head) == {"dev/api/app.env", "dev/.state/api.json"}
    files = world.files()
    for path in ("dev/api/app.env", "dev/api/deployment.yaml", "dev/api/marathon.json"):
        assert files[path] == good_files[path], path
    api = world.state("dev")["services"]["api"]
    assert api["release"]["id"] == good_release
    assert api["last_failed"]["id"] == bad_release
    assert api["last_failed"]["outcome"] == "rolled_back"
    assert ("Configcenter-Env", "dev") in world.trailers()
    rollback_run = world.runs()[-1]
    assert rollback_run[1:] == ("rollback", "dev", "cli", "succeeded")
    assert ("Configcenter-Run", rollback_run[0]) in world.trailers()

    # The config repo still asks for the rolled-back release: blocked, not re-applied.
    plan = json.loads(world.ok("plan", "dev", "--json").stdout)
    api_plan = next(s for s in plan["services"] if s["service"] == "api")
    assert api_plan["action"] == "blocked"
    assert bad_release in api_plan["blocked"] and "--retry api" in api_plan["blocked"]
    assert world.cc("plan", "dev", "--exit-code").code == 0, "a blocked service is no change"

    blocked = world.ok("apply", "dev", "--no-rollout", "--json")
    results = {r["service"]: r for r in json.loads(blocked.stdout)["results"]}
    assert results["api"]["outcome"] == "blocked"
    assert bad_release in results["api"]["reason"]
    assert world.head() == head

    world.ok("apply", "dev", "--no-rollout", "--retry", "api")

    assert world.commit_count() == 4
    assert b"LOG_LEVEL=warn\n" in world.files()["dev/api/app.env"]
    retried = world.state("dev")["services"]["api"]["release"]["id"]
    assert retried not in (good_release, bad_release)
    plan = json.loads(world.ok("plan", "dev", "--json").stdout)
    assert {s["action"] for s in plan["services"]} == {"noop"}


def test_rollback_with_nothing_earlier_is_an_error_that_writes_nothing(world: World) -> None:
    head = apply_first(world)
    runs = world.runs()

    result = world.cc("rollback", "dev", "api", "--no-rollout")

    assert result.code == 1
    assert "no earlier good release" in result.stderr
    assert "configcenter history dev --service api" in result.stderr
    assert "Traceback" not in result.output
    assert world.head() == head and world.runs() == runs


# -- dry run -------------------------------------------------------------------------------------


def test_apply_dry_run_touches_neither_the_remote_nor_the_run_store(world: World) -> None:
    result = world.ok("apply", "dev", "--dry-run")
    assert "create" in result.stdout
    assert world.head() is None and world.refs() == ""
    assert not world.run_store_file.exists()

    apply_first(world)
    set_value(world, "environments/dev/api.yaml", "LOG_LEVEL: debug", "LOG_LEVEL: warn")
    refs, known, runs = world.refs(), objects(world), world.run_store_dump()

    result = world.ok("apply", "dev", "--dry-run", "--no-rollout")
    as_json = world.ok("apply", "dev", "--dry-run", "--json")

    assert "LOG_LEVEL: debug -> warn" in result.stdout
    data = json.loads(as_json.stdout)
    assert data["dry_run"] is True and data["commit"] is None and data["run"] is None
    assert [s["action"] for s in data["plan"]["services"] if s["service"] == "api"] == ["update"]
    assert world.refs() == refs
    assert objects(world) == known
    assert world.run_store_dump() == runs


# -- history -------------------------------------------------------------------------------------


def test_history_lists_releases_with_outcome_trigger_tag_digest_and_image(world: World) -> None:
    apply_first(world)
    set_value(world, "environments/dev/api.yaml", "template: 1.0.0", "template: 1.1.0")
    world.ok("apply", "dev", "--no-rollout")
    world.ok("rollback", "dev", "api", "--no-rollout")
    state = world.state("dev")["services"]
    runs = {r[0]: r for r in world.runs()}

    entries = json.loads(world.ok("history", "dev", "--json").stdout)["releases"]

    assert [e["service"] for e in entries] == ["api", "db", "api", "worker"]
    newest, _, oldest_api, _ = entries
    assert newest["outcome"] == "rolled_back"
    assert newest["template_tag"] == "1.1.0"
    assert "rolled back to " + oldest_api["release"] in newest["reason"]
    assert oldest_api["outcome"] == "committed" and oldest_api["template_tag"] == "1.0.0"
    assert oldest_api["release"] == state["api"]["release"]["id"]
    for entry in entries:
        record = state[entry["service"]]
        assert entry["image"] == record["image"]
        assert entry["values_digest"].startswith("sha256:")
        assert entry["trigger"] == "cli" and "@" in entry["actor"]
        assert entry["run"] in runs and runs[entry["run"]][1] == "apply"
        assert entry["at"].endswith("Z") and entry["at"][:4].isdigit()
        assert len(entry["commit"]) == 40
    assert entries[-1]["values_digest"] == state["worker"]["values_digest"]

    only_api = json.loads(world.ok("history", "dev", "--service", "api", "--json").stdout)[
        "releases"
    ]
    assert [e["release"] for e in only_api] == [newest["release"], oldest_api["release"]]

    text = world.ok("history", "dev").stdout
    for entry in entries:
        row = next(line for line in text.splitlines() if line.startswith(entry["release"]))
        for column in ("template_tag", "image", "trigger", "actor"):
            assert entry[column] in row, (column, row)
        assert entry["outcome"] in row
        assert entry["at"].replace("T", " ") in row
    assert "no releases in prod yet" in world.ok("history", "prod").stdout
