"""The Kubernetes objects one release consists of, built from its rendered files.

Pure (no cluster, no I/O beyond the bytes handed in) so every rule here is
unit-tested in milliseconds; `configcenter.adapters.kubernetes` applies the
result. Secret values arrive already resolved and only ever go into the Secret.
"""

from __future__ import annotations

import base64
import copy
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from configcenter.ports.platform import Deployable, PlatformError

FIELD_MANAGER = "configcenter"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "configcenter"
ENV_LABEL = "configcenter.io/env"
SERVICE_LABEL = "configcenter.io/service"
RELEASE_ANNOTATION = "configcenter.io/release"
DIGEST_ANNOTATION = "configcenter.io/config-digest"
MASK = "***"

#: Kinds whose objects others consume are applied first, workloads last, so a
#: pod never starts before the ConfigMap or Secret it reads exists.
_APPLY_ORDER = {
    "ServiceAccount": 0,
    "ConfigMap": 1,
    "Secret": 1,
    "PersistentVolumeClaim": 2,
    "Role": 3,
    "RoleBinding": 4,
    "Service": 5,
    "Deployment": 9,
    "StatefulSet": 9,
    "DaemonSet": 9,
    "Job": 9,
    "CronJob": 9,
}
_DEFAULT_ORDER = 6

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


class ManifestError(PlatformError):
    """A rendered file cannot be turned into Kubernetes objects as it is."""


@dataclass(frozen=True)
class SourcedObject:
    """One Kubernetes object and the rendered file it came from (for error messages)."""

    source: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


def config_map_name(service: str) -> str:
    return f"{service}-config"


def secret_name(service: str) -> str:
    return f"{service}-secrets"


def env_selector(env: str) -> str:
    """Label selector for everything configcenter manages for one environment."""
    return f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{ENV_LABEL}={env}"


def service_selector(env: str, service: str) -> str:
    """Label selector for one service's objects (and its pods, which carry the labels too)."""
    return f"{env_selector(env)},{SERVICE_LABEL}={service}"


def check_namespace(namespace: str, platform: str) -> str:
    if not namespace:
        raise ManifestError(
            f"platform {platform!r}: no namespace; add `namespace: ...` to "
            f"platforms.{platform} in configcenter.yaml"
        )
    if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
        raise ManifestError(
            f"platform {platform!r}: namespace {namespace!r} is not a valid Kubernetes name; "
            "use at most 63 lower-case letters, digits and '-', starting and ending alphanumeric"
        )
    return namespace


def is_manifest_file(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def is_env_file(name: str) -> bool:
    base = posixpath.basename(name)
    return base == ".env" or base.endswith(".env")


def parse_manifests(files: Mapping[str, bytes]) -> list[SourcedObject]:
    """Every Kubernetes object in the `*.yaml`/`*.yml` outputs, in file order.

    A YAML output whose documents are not Kubernetes objects (an application's
    own config file) is skipped; one that mixes both is an error, since half a
    manifest is almost certainly a template mistake.
    """
    found: list[SourcedObject] = []
    for name in sorted(files):
        if not is_manifest_file(name):
            continue
        try:
            docs = [d for d in yaml.safe_load_all(files[name]) if d is not None]
        except yaml.YAMLError as exc:
            raise ManifestError(
                f"{name}: not valid YAML ({_one_line(str(exc))}); fix the template that renders it"
            ) from None
        objects = [d for d in docs if _looks_like_object(d)]
        if not objects:
            continue
        if len(objects) != len(docs):
            bad = next(i for i, d in enumerate(docs, 1) if not _looks_like_object(d))
            raise ManifestError(
                f"{name}: document {bad} is not a Kubernetes object while others are; "
                "give every document apiVersion, kind and metadata.name, or move it to another file"
            )
        for doc in objects:
            if doc.get("kind") == "List":
                raise ManifestError(f"{name}: kind List is not supported; write one document each")
            found.append(SourcedObject(name, doc))
    return found


def _looks_like_object(doc: object) -> bool:
    if not isinstance(doc, dict):
        return False
    meta = doc.get("metadata")
    return (
        isinstance(doc.get("apiVersion"), str)
        and isinstance(doc.get("kind"), str)
        and isinstance(meta, dict)
        and isinstance(meta.get("name"), str)
    )


def parse_env_file(name: str, data: bytes) -> dict[str, str]:
    """KEY=VALUE lines of an `.env` output, the way docker's --env-file reads them.

    Blank lines and `#` comments are skipped, `export ` is allowed, and one pair
    of matching quotes around a value is removed; anything else is literal (a
    `#` inside a value stays), so the same file means the same thing everywhere.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{name}: not UTF-8 text; .env outputs must be text") from None
    result: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            raise ManifestError(f"{name}:{number}: expected KEY=VALUE, got a line without '='")
        if not _ENV_KEY.fullmatch(key):
            raise ManifestError(
                f"{name}:{number}: {key!r} is not a valid variable name; "
                "use letters, digits and '_', not starting with a digit"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        result[key] = value
    return result


def config_data(deployable: Deployable) -> dict[str, str]:
    """The ConfigMap's data: non-secret values, overridden by the `.env` outputs.

    Keys that are secrets are left out: the Secret carries them, and the
    rendered `.env` holds only the reference in their place.
    """
    data: dict[str, str] = {}
    for key, value in deployable.values.items():
        data[key] = str(value)
    for name in sorted(deployable.files):
        if is_env_file(name):
            data.update(parse_env_file(name, deployable.files[name]))
    for key in deployable.secrets:
        data.pop(key, None)
    for key in data:
        if not _CONFIG_KEY.fullmatch(key):
            raise ManifestError(
                f"{deployable.service}: value {key!r} cannot be a ConfigMap key; "
                "use letters, digits, '-', '_' and '.'"
            )
    return data


def build_objects(
    deployable: Deployable,
    namespace: str,
    secret_values: Mapping[str, str] | None,
) -> list[SourcedObject]:
    """Everything `apply` sends, in apply order, each with the file it came from.

    `secret_values` maps each ENV key in `deployable.secrets` to its resolved
    value; None builds the Secret with every value masked (for showing or
    comparing what would be applied without resolving anything).
    """
    labels = managed_labels(deployable)
    annotations = {
        RELEASE_ANNOTATION: deployable.release_id,
        DIGEST_ANNOTATION: deployable.config_digest,
    }
    cm_name = config_map_name(deployable.service)
    secret = secret_name(deployable.service)
    objects = [
        SourcedObject(
            "(values and .env outputs)",
            _metadata_only("v1", "ConfigMap", cm_name) | {"data": config_data(deployable)},
        ),
        SourcedObject(
            "(secret values)",
            _metadata_only("v1", "Secret", secret)
            | {"type": "Opaque", "data": _secret_data(deployable, secret_values)},
        ),
    ]
    for item in parse_manifests(deployable.files):
        if (item.kind, item.name) in {("ConfigMap", cm_name), ("Secret", secret)}:
            raise ManifestError(
                f"{item.source}: {item.ref} is the name configcenter gives the service's own "
                f"{item.kind}; rename it (the ENV values go there automatically)"
            )
        body = copy.deepcopy(item.body)
        _place_in_namespace(item, body, namespace)
        _prepare_pod_spec(item, body, deployable)
        objects.append(SourcedObject(item.source, body))
    for obj in objects:
        meta = obj.body.setdefault("metadata", {})
        meta["namespace"] = namespace
        meta["labels"] = {**(meta.get("labels") or {}), **deployable.labels, **labels}
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    objects.sort(key=lambda o: _APPLY_ORDER.get(o.kind, _DEFAULT_ORDER))
    return objects


def managed_labels(deployable: Deployable) -> dict[str, str]:
    for what, value in (("env", deployable.env), ("service", deployable.service)):
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            raise ManifestError(
                f"{what} name {value!r} cannot be a Kubernetes label value; "
                "use at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric"
            )
    return {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        ENV_LABEL: deployable.env,
        SERVICE_LABEL: deployable.service,
    }


def _metadata_only(api_version: str, kind: str, name: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}


def _secret_data(deployable: Deployable, values: Mapping[str, str] | None) -> dict[str, str]:
    data: dict[str, str] = {}
    for key in sorted(deployable.secrets):
        if not _CONFIG_KEY.fullmatch(key):
            raise ManifestError(
                f"{deployable.service}: secret {key!r} cannot be a Secret key; "
                "use letters, digits, '-', '_' and '.'"
            )
        if values is None:
            data[key] = MASK
            continue
        if key not in values:
            raise ManifestError(f"{deployable.service}: secret {key!r} was not resolved")
        data[key] = base64.b64encode(values[key].encode("utf-8")).decode("ascii")
    return data


def _place_in_namespace(item: SourcedObject, body: dict[str, Any], namespace: str) -> None:
    if item.kind == "Namespace":
        raise ManifestError(
            f"{item.source}: {item.ref}: configcenter creates the target's namespace itself; "
            "remove the Namespace document"
        )
    declared = body["metadata"].get("namespace")
    if declared not in (None, "", namespace):
        raise ManifestError(
            f"{item.source}: {item.ref} declares namespace {declared!r} but the target "
            f"namespace is {namespace!r}; remove metadata.namespace from the template"
        )


def pod_templates(body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The pod template(s) of a workload object: Deployment-like and CronJob shapes."""
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return
    template = spec.get("template")
    if isinstance(template, dict):
        yield template
    job = spec.get("jobTemplate")
    if isinstance(job, dict) and isinstance(job.get("spec"), dict):
        inner = job["spec"].get("template")
        if isinstance(inner, dict):
            yield inner


def _prepare_pod_spec(item: SourcedObject, body: dict[str, Any], deployable: Deployable) -> None:
    """Wire a workload to the release: image, ENV sources, labels, config digest.

    Only the config digest (not the release id) goes on the pod template, so a
    value-only change rolls the pods while re-applying an older release yields
    the very same template and the Deployment scales its old ReplicaSet back up.
    """
    if item.kind == "Deployment":
        body.setdefault("spec", {}).setdefault("replicas", deployable.replicas)
    sources = [
        {"configMapRef": {"name": config_map_name(deployable.service)}},
        {"secretRef": {"name": secret_name(deployable.service)}},
    ]
    for template in pod_templates(body):
        meta = template.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **managed_labels(deployable)}
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            DIGEST_ANNOTATION: deployable.config_digest,
        }
        pod = template.get("spec")
        if not isinstance(pod, dict):
            pod = {}
        containers = pod.get("containers")
        if not isinstance(containers, list) or not containers:
            raise ManifestError(
                f"{item.source}: {item.ref} has a pod template without containers; "
                "add spec.template.spec.containers"
            )
        for container in [*containers, *(pod.get("initContainers") or [])]:
            if not isinstance(container, dict) or not container.get("name"):
                raise ManifestError(f"{item.source}: {item.ref}: every container needs a name")
            if not container.get("image"):
                if not deployable.image:
                    raise ManifestError(
                        f"{item.source}: {item.ref}: container {container['name']} has no image "
                        "and the release has none to give it; set image in the service's file"
                    )
                container["image"] = deployable.image
            env_from = [s for s in container.get("envFrom") or [] if s not in sources]
            container["envFrom"] = [*sources, *env_from]


def _one_line(text: str) -> str:
    return " ".join(text.split())
