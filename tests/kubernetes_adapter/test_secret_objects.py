"""`secret_objects`: a plan's cheap view of a release's Secrets is exactly `release_config`'s."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from configcenter.adapters.k8s_manifests import release_config, secret_objects
from configcenter.ports.platform import Deployable
from tests.kubernetes_adapter.conftest import make_deployable

REF = "${secret:env:DB_PASSWORD}"
VALUES = {"env:DB_PASSWORD": "s3cret", "env:OTHER": "other"}

CASES: dict[str, Mapping[str, bytes]] = {
    "no secret anywhere": {"app.conf": b"plain\n"},
    "a secret file": {"app.conf": f"password={REF}\n".encode()},
    # Both map to the ConfigMap key "conf_app.ini": each gets a hashed suffix, in either Secret
    # or ConfigMap, so the secret file's key depends on the plain file being there.
    "keys that clash": {
        "conf/app.ini": f"password={REF}\n".encode(),
        "conf_app.ini": b"plain\n",
    },
    "a YAML config file with a secret": {"settings.yaml": f"db: {{password: '{REF}'}}\n".encode()},
    "a manifest mentioning a secret": {
        "extra.yaml": (
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: extra}}\ndata: {{note: '{REF}'}}\n"
        ).encode()
    },
    "a secret in the .env output": {"more.env": f"TOKEN={REF}\n".encode()},
}


def _secrets(deployable: Deployable, values: Mapping[str, str] | None) -> list[dict[str, object]]:
    return [o.body for o in release_config(deployable, values).objects if o.kind == "Secret"]


@pytest.mark.parametrize("files", CASES.values(), ids=list(CASES))
@pytest.mark.parametrize("values", [None, VALUES], ids=["masked", "resolved"])
def test_the_same_secrets_as_the_whole_release_config(
    files: Mapping[str, bytes], values: Mapping[str, str] | None
) -> None:
    deployable = make_deployable(secrets={"DB_PASSWORD": "env:DB_PASSWORD"}, extra_files=files)
    assert [o.body for o in secret_objects(deployable, values)] == _secrets(deployable, values)
    plain = make_deployable(extra_files=files)
    assert [o.body for o in secret_objects(plain, values)] == _secrets(plain, values)
