"""Every cache is keyed by what it was computed from: change an input behind its back and
the next answer follows the input, never the cached one.

One test per cache, each changing the input the way a user would (new bytes under the
same name, a file edited between commands, a tag moved) and asserting the fresh result.
"""

from __future__ import annotations

from configcenter.adapters import k8s_manifests
from configcenter.ports.platform import Deployable

MANIFEST = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata: {}\n"
APP_YAML = b"server:\n  port: 8080\n"


def _deployable(files: dict[str, bytes]) -> Deployable:
    return Deployable(
        env="dev",
        service="api",
        release_id="r1",
        image="registry.example.com/api:1",
        config_digest="",
        files=files,
        values={},
        secrets={},
        replicas=1,
        secrets_generation=1,
    )


def test_manifest_or_config_file_follows_the_bytes_under_the_same_name() -> None:
    """`config_files` remembers whether `extra.yaml` is manifests by name *and* content."""
    as_manifest = _deployable({"extra.yaml": MANIFEST})
    assert k8s_manifests.config_files(as_manifest) == {}
    # Same output name, now an application's YAML: it is a config file, not a manifest.
    as_app = _deployable({"extra.yaml": APP_YAML})
    assert k8s_manifests.config_files(as_app) == {"extra.yaml": APP_YAML}
    # And back: the first answer was not overwritten either.
    assert k8s_manifests.config_files(as_manifest) == {}
