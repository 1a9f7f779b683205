"""`history ENV --service S` reads only S's file of the config to warn when it is broken:
another service's broken file neither blocks nor slows it; the whole env's history warns."""

from __future__ import annotations

from tests.cli.test_corrupt_state import publish_applied, remote, run
from tests.support.configrepo import ConfigRepo, DeployRemote
from tests.support.configrepo_fixtures import repo

__all__ = ["remote", "repo"]  # the fixtures


def test_history_of_one_service_ignores_another_services_broken_file(
    repo: ConfigRepo, remote: DeployRemote
) -> None:
    publish_applied(repo, remote)
    # A typo is still named against the whole environment's services.
    typo = run(repo, remote, "history", "dev", "--service", "apj")
    assert typo.exit_code != 0 and "service 'apj' is not deployed in dev" in typo.output
    assert "did you mean 'api'?" in typo.output, typo.output
    assert typo.output.startswith("environments/dev/apj.yaml: error:"), typo.output
    assert "configcenter.yaml" not in typo.output  # nothing is wrong there

    repo.write("environments/dev/db.yaml", "template: [unclosed\n")
    repo.commit("db: broken")

    of_api = run(repo, remote, "history", "dev", "--service", "api", "--json")
    assert of_api.exit_code == 0, of_api.output
    assert "does not load" not in of_api.stderr, of_api.stderr
    assert '"api"' in of_api.stdout

    of_db = run(repo, remote, "history", "dev", "--service", "db", "--json")
    assert of_db.exit_code == 0, of_db.output
    assert "does not load" in of_db.stderr and "environments/dev/db.yaml" in of_db.stderr

    whole = run(repo, remote, "history", "dev", "--json")
    assert whole.exit_code == 0, whole.output
    assert "does not load" in whole.stderr and "environments/dev/db.yaml" in whole.stderr
