"""The Kubernetes objects one release consists of, built from its rendered files.

Pure (no cluster, no I/O beyond the bytes handed in) so every rule here is
unit-tested in milliseconds; `configcenter.adapters.kubernetes` applies the
result. Secret values arrive already resolved and only ever go into the Secret.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import posixpath
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from configcenter.core.secretrefs import MARKER, find_refs, has_refs, substitute
from configcenter.ports.platform import Deployable, PlatformError

FIELD_MANAGER = "configcenter"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "configcenter"
ENV_LABEL = "configcenter.io/env"
SERVICE_LABEL = "configcenter.io/service"
RELEASE_ANNOTATION = "configcenter.io/release"
DIGEST_ANNOTATION = "configcenter.io/config-digest"
#: On a workload: where the service's config files are mounted instead of the default.
FILES_MOUNT_ANNOTATION = "configcenter.io/files-mount-path"
#: On the `<service>-config` ConfigMap: every kind configcenter applied for the
#: service, so pruning lists exactly those kinds (the record only grows).
APPLIED_KINDS_ANNOTATION = "configcenter.io/applied-kinds"
#: On the `<service>-config` ConfigMap: `Kind/name` of every workload, Service, ConfigMap
#: and Secret the release applied, so `observe` can tell a release whose objects were
#: deleted by hand (or collected with their owner) from one that runs whole.
RELEASE_OBJECTS_ANNOTATION = "configcenter.io/objects"
#: The kinds that list names: what `observe` lists anyway.
RECORDED_OBJECT_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "Service", "ConfigMap", "Secret"}
)
#: On the versioned, immutable objects that carry a release's config and secrets: their role
#: (config | files | secrets | secret-files). Pruning leaves them to `versions_to_collect`.
VERSIONED_LABEL = "configcenter.io/versioned"
#: Versions of each role kept besides the ones in use, so a rollback finds its own.
KEEP_VERSIONS = 5
#: The pod volume that carries the config files (a projected volume of the files ConfigMap
#: and, for files that hold secrets, the secret-files Secret).
FILES_VOLUME = "configcenter-files"
#: What the API server accepts in one ConfigMap (data plus binaryData values).
CONFIG_MAP_MAX_BYTES = 1024 * 1024
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
_KEY_UNSAFE = re.compile(r"[^-._a-zA-Z0-9]")
_MAX_KEY = 253
#: Build inputs: they make the image, the pod has no use for them.
_BUILD_FILES = ("Dockerfile", "Containerfile")


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
    """The service's record ConfigMap: no data, the kinds configcenter applied for it."""
    return f"{service}-config"


def secret_name(service: str) -> str:
    return f"{service}-secrets"


def files_config_map_name(service: str) -> str:
    return f"{service}-files"


def secret_files_name(service: str) -> str:
    return f"{service}-secret-files"


#: Role of a versioned object -> the name prefix of its versions.
VERSIONED_ROLES = {
    "config": config_map_name,
    "files": files_config_map_name,
    "secrets": secret_name,
    "secret-files": secret_files_name,
}


def content_name(prefix: str, data: Mapping[str, str]) -> str:
    """`prefix-<10 hex>` from the (non-secret) data: same content, same name, never stale."""
    blob = "\n".join(f"{key}\0{data[key]}" for key in sorted(data))
    return f"{prefix}-{hashlib.sha256(blob.encode('utf-8')).hexdigest()[:10]}"


def generation_name(prefix: str, generation: int) -> str:
    """Secrets are named by generation, never by a hash of what they hold."""
    return f"{prefix}-{generation}"


def default_files_mount_path(service: str) -> str:
    return f"/etc/configcenter/{service}"


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


def is_build_file(name: str) -> bool:
    base = posixpath.basename(name)
    return base in _BUILD_FILES or base.endswith(tuple(f".{b}" for b in _BUILD_FILES))


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
        for doc in _yaml_objects(name, files[name]) or []:
            found.append(SourcedObject(name, doc))
    return found


def _yaml_objects(name: str, data: bytes) -> list[dict[str, Any]] | None:
    """The objects of one YAML output (the caller's own copy); None when it is an
    application's YAML instead.

    A file with no documents at all is a manifest that rendered empty (a
    template like `{% if env == 'prod' %}...`), not a config file.
    """
    found = _parsed_objects(name, data)
    return None if found is None else [_copy_doc(name, doc, set()) for doc in found]


@functools.lru_cache(maxsize=1024)
def _parsed_objects(name: str, data: bytes) -> tuple[dict[str, Any], ...] | None:
    """`_yaml_objects`' parse, kept by name and content (never handed out: callers get
    copies). Building a release asks twice per manifest (is it one? its objects), and the
    Python half of the YAML loader is most of a reconcile's time."""
    import yaml  # when a manifest is parsed, not with the module (a no-op plan parses none)

    # libyaml parses a rendered manifest ~10x faster than the pure-Python loader
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        docs = [d for d in yaml.load_all(data, Loader=loader) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(
            f"{name}: not valid YAML ({_one_line(str(exc))}); fix the template that renders it"
        ) from None
    objects = [d for d in docs if _looks_like_object(d)]
    if docs and not objects:
        return None
    if len(objects) != len(docs):
        bad = next(i for i, d in enumerate(docs, 1) if not _looks_like_object(d))
        raise ManifestError(
            f"{name}: document {bad} is not a Kubernetes object while others are; "
            "give every document apiVersion, kind and metadata.name, or move it to another file"
        )
    for doc in objects:
        if doc.get("kind") == "List":
            raise ManifestError(f"{name}: kind List is not supported; write one document each")
    return tuple(objects)


def _copy_doc(name: str, value: Any, path: set[int]) -> Any:
    """A copy of parsed YAML (maps and lists new, leaves shared); an alias that contains
    itself is refused, as no Kubernetes object can be written down that way."""
    if isinstance(value, (dict, list)):
        if id(value) in path:
            raise ManifestError(f"{name}: a YAML alias refers to itself; write the value out")
        path.add(id(value))
        if isinstance(value, dict):
            copied: Any = {k: _copy_doc(name, v, path) for k, v in value.items()}
        else:
            copied = [_copy_doc(name, v, path) for v in value]
        path.discard(id(value))
        return copied
    return value


def _holds_objects(name: str, data: bytes) -> bool:
    """Whether a YAML output is manifests (not an application's YAML); parsed once per
    name and content (`_parsed_objects`), however often a plan or apply asks."""
    return _parsed_objects(name, data) is not None


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
    return dict(_env_pairs(name, data))


@functools.lru_cache(maxsize=4096)
def _env_pairs(name: str, data: bytes) -> tuple[tuple[str, str], ...]:
    """`parse_env_file`'s answer for these bytes, kept: a plan and an apply read each
    release's `.env` outputs several times (its ConfigMap, its Secret, its references)."""
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
    return tuple(result.items())


def env_entries(deployable: Deployable) -> dict[str, str]:
    """Every environment entry of the release: ENV values, overridden by the `.env` outputs.

    ENV-list secrets enter as their placeholder, so an entry holding a secret (alone, under
    another key, or inside a longer string) is told apart by its placeholder alone.
    """
    data: dict[str, str] = {}
    for key, value in deployable.values.items():
        data[key] = str(value)
    for key, ref in deployable.secrets.items():
        data[key] = MARKER + ref + "}"
    for name in sorted(deployable.files):
        if is_env_file(name):
            data.update(parse_env_file(name, deployable.files[name]))
    for key in data:
        if not _CONFIG_KEY.fullmatch(key):
            raise ManifestError(
                f"{deployable.service}: value {key!r} cannot be a ConfigMap or Secret key; "
                "use letters, digits, '-', '_' and '.'"
            )
    return data


def config_data(deployable: Deployable) -> dict[str, str]:
    """The env ConfigMap's data: the entries that hold no secret."""
    return {k: v for k, v in env_entries(deployable).items() if not has_refs(v)}


def secret_env(deployable: Deployable) -> dict[str, str]:
    """The env entries that hold a secret, placeholders still in (the Secret resolves them)."""
    return {k: v for k, v in env_entries(deployable).items() if has_refs(v)}


def release_refs(deployable: Deployable) -> list[str]:
    """Every secret reference the release delivers: ENV list, `.env` outputs, config files."""
    refs: dict[str, None] = {}
    for text in secret_env(deployable).values():
        refs.update(dict.fromkeys(find_refs(text)))
    for data in secret_config_files(deployable).values():
        refs.update(dict.fromkeys(find_refs(data.decode("utf-8"))))
    return list(refs)


def config_files(deployable: Deployable) -> dict[str, bytes]:
    """The outputs the pods read as files, by output path.

    Everything but the manifests (YAML outputs holding Kubernetes objects, or
    rendered empty), the `.env` outputs (they become environment variables) and
    build inputs (Dockerfile, Containerfile: they make the image).
    """
    found: dict[str, bytes] = {}
    for name in sorted(deployable.files):
        if is_env_file(name) or is_build_file(name):
            continue
        data = deployable.files[name]
        if is_manifest_file(name) and _holds_objects(name, data):
            continue
        _check_file_path(deployable.service, name)
        found[name] = data
    return found


def _holds_secret(data: bytes) -> bool:
    if MARKER.encode() not in data:
        return False
    try:
        return has_refs(data.decode("utf-8"))
    except UnicodeDecodeError:
        return False


def plain_config_files(deployable: Deployable) -> dict[str, bytes]:
    return {k: v for k, v in config_files(deployable).items() if not _holds_secret(v)}


def secret_config_files(deployable: Deployable) -> dict[str, bytes]:
    """Config files with a secret in them: delivered through a Secret, resolved.

    Only outputs that hold a secret reference are looked at (a manifest is parsed only
    then), so asking this of a release costs nothing for the files without one.
    """
    found: dict[str, bytes] = {}
    for name in sorted(deployable.files):
        data = deployable.files[name]
        if is_env_file(name) or is_build_file(name) or not _holds_secret(data):
            continue
        if is_manifest_file(name) and _holds_objects(name, data):
            continue
        _check_file_path(deployable.service, name)
        found[name] = data
    return found


def _check_file_path(service: str, name: str) -> None:
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0][:2] == "..":
        raise ManifestError(
            f"{service}: output {name!r} cannot be placed in the pod's config directory; "
            "name outputs by a relative path without '.', '..' or empty parts "
            "(and not starting with '..') in template.yaml"
        )


def config_file_keys(paths: Iterable[str]) -> dict[str, str]:
    """Each output path -> its ConfigMap key: the path with every unsafe character as `_`.

    The key need only be valid and unique (the volume's `items` put each file
    back at its path), so it stays readable; a key two paths would share, or
    one too long or starting with '..', gets a hash of its path appended.
    """
    plain = {path: _KEY_UNSAFE.sub("_", path) for path in sorted(set(paths))}
    counts = Counter(plain.values())
    keys: dict[str, str] = {}
    for path, key in plain.items():
        if counts[key] > 1 or len(key) > _MAX_KEY or key == "." or key.startswith(".."):
            suffix = "-" + hashlib.sha256(path.encode("utf-8")).hexdigest()[:12]
            key = key.lstrip(".")[: _MAX_KEY - len(suffix)] + suffix
        keys[path] = key
    owners: dict[str, str] = {}
    for path, key in keys.items():
        if key in owners:
            raise ManifestError(
                f"outputs {owners[key]!r} and {path!r} map to the same ConfigMap key {key!r}; "
                "rename one of them in template.yaml"
            )
        owners[key] = path
    return keys


@dataclass(frozen=True)
class ReleaseConfig:
    """The versioned objects that carry one release's config and secrets, and how pods use them.

    ConfigMaps are named by their content, Secrets by the release's secrets generation; all
    are immutable. A change of any of them changes a name the pod template refers to, which
    is what rolls the pods; re-applying an older release refers to the older names again.
    """

    objects: list[SourcedObject]
    env_from: list[dict[str, Any]]
    volume: dict[str, Any] | None

    @property
    def names(self) -> set[tuple[str, str]]:
        return {(obj.kind, obj.name) for obj in self.objects}


def release_config(
    deployable: Deployable, secret_values: Mapping[str, str] | None
) -> ReleaseConfig:
    """The release's env ConfigMap and Secret, files ConfigMap and secret-files Secret.

    `secret_values` maps each reference to its resolved value; None masks them (for
    showing or comparing what would be applied without resolving anything). Over the API
    server's 1 MiB a ConfigMap or Secret can hold is refused here, naming the files.
    """
    service = deployable.service
    objects: list[SourcedObject] = []
    env_from: list[dict[str, Any]] = []
    plain = config_data(deployable)
    if plain:
        name = content_name(config_map_name(service), plain)
        objects.append(_versioned("ConfigMap", name, "config", "(values and .env outputs)", plain))
        env_from.append({"configMapRef": {"name": name}})
    env_secret = _env_secret(deployable, secret_env(deployable), secret_values)
    if env_secret is not None:
        objects.append(env_secret)
        env_from.append({"secretRef": {"name": env_secret.name}})
    sources: list[dict[str, Any]] = []
    files = config_files(deployable)
    _check_files_size(deployable, files)
    keys = config_file_keys(files)
    plain_files = plain_config_files(deployable)
    if plain_files:
        data, binary = _file_data(plain_files, keys)
        name = content_name(files_config_map_name(service), {**data, **binary})
        body = _versioned("ConfigMap", name, "files", "(config files)", data)
        if binary:
            body.body["binaryData"] = binary
        objects.append(body)
        sources.append({"configMap": {"name": name, "items": _items(plain_files, keys)}})
    secret_files = secret_config_files(deployable)
    files_secret = _files_secret(deployable, secret_files, keys, secret_values)
    if files_secret is not None:
        objects.append(files_secret)
        sources.append({"secret": {"name": files_secret.name, "items": _items(secret_files, keys)}})
    volume = {"name": FILES_VOLUME, "projected": {"sources": sources}} if sources else None
    return ReleaseConfig(objects, env_from, volume)


def secret_objects(
    deployable: Deployable, secret_values: Mapping[str, str] | None
) -> list[SourcedObject]:
    """The release's Secrets alone, exactly as `release_config` makes them.

    For comparing a generation with the platform at plan time: the outputs without a
    secret reference are not parsed, and no ConfigMap is built. A config file's key
    depends on the others only through a clash of their keys, so only outputs whose
    key would clash with a secret file's are looked at besides the secret files.
    """
    found: list[SourcedObject] = []
    env_secret = _env_secret(deployable, secret_env(deployable), secret_values)
    if env_secret is not None:
        found.append(env_secret)
    secret_files = secret_config_files(deployable)
    if secret_files:
        clashing = {_KEY_UNSAFE.sub("_", path) for path in secret_files}
        others = {
            name: data
            for name, data in deployable.files.items()
            if name not in secret_files and _KEY_UNSAFE.sub("_", name) in clashing
        }
        named = replace(deployable, files=others)
        keys = config_file_keys([*secret_files, *config_files(named)])
        files_secret = _files_secret(deployable, secret_files, keys, secret_values)
        if files_secret is not None:
            found.append(files_secret)
    return found


def _env_secret(
    deployable: Deployable, hidden: Mapping[str, str], secret_values: Mapping[str, str] | None
) -> SourcedObject | None:
    if not hidden:
        return None
    name = generation_name(secret_name(deployable.service), deployable.secrets_generation)
    data = {k: _resolved(deployable, v, secret_values) for k, v in hidden.items()}
    return _versioned("Secret", name, "secrets", "(secret values)", data)


def _files_secret(
    deployable: Deployable,
    secret_files: Mapping[str, bytes],
    keys: Mapping[str, str],
    secret_values: Mapping[str, str] | None,
) -> SourcedObject | None:
    if not secret_files:
        return None
    name = generation_name(secret_files_name(deployable.service), deployable.secrets_generation)
    data = {
        keys[path]: _resolved(deployable, raw.decode("utf-8"), secret_values)
        for path, raw in secret_files.items()
    }
    return _versioned("Secret", name, "secret-files", "(config files)", data)


def _versioned(
    kind: str, name: str, role: str, source: str, data: Mapping[str, str]
) -> SourcedObject:
    body = _metadata_only("v1", kind, name) | {"immutable": True}
    body["metadata"]["labels"] = {VERSIONED_LABEL: role}
    if kind == "Secret":
        body["type"] = "Opaque"
        body["data"] = {k: v if v == MASK else _b64(v) for k, v in data.items()}
    else:
        body["data"] = dict(data)
    return SourcedObject(source, body)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _resolved(deployable: Deployable, text: str, values: Mapping[str, str] | None) -> str:
    if values is None:
        return MASK

    def value_of(ref: str) -> str:
        if ref not in values:
            raise ManifestError(f"{deployable.service}: secret {ref!r} was not resolved")
        return values[ref]

    return substitute(text, value_of)


def _check_files_size(deployable: Deployable, files: Mapping[str, bytes]) -> None:
    total = sum(len(data) for data in files.values())
    if total > CONFIG_MAP_MAX_BYTES:
        largest = sorted(files.items(), key=lambda item: (-len(item[1]), item[0]))
        listing = ", ".join(f"{path} ({len(data)} bytes)" for path, data in largest)
        raise ManifestError(
            f"{deployable.service}: config files total {total} bytes, over the "
            f"{CONFIG_MAP_MAX_BYTES} bytes (1 MiB) a ConfigMap or Secret can hold: {listing}; "
            "make them smaller or ship the large ones in the image"
        )


def _file_data(
    files: Mapping[str, bytes], keys: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """UTF-8 files go to `data` (readable in `kubectl get -o yaml`), others to `binaryData`."""
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    for path, raw in files.items():
        try:
            data[keys[path]] = raw.decode("utf-8")
        except UnicodeDecodeError:
            binary[keys[path]] = base64.b64encode(raw).decode("ascii")
    return data, binary


def _items(files: Mapping[str, bytes], keys: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": keys[path], "path": path} for path in sorted(files)]


def build_objects(
    deployable: Deployable,
    namespace: str,
    secret_values: Mapping[str, str] | None,
) -> list[SourcedObject]:
    """Everything `apply` sends, in apply order, each with the file it came from.

    `secret_values` maps each secret reference of the release (`release_refs`) to its
    resolved value; None builds the Secrets with every value masked.
    """
    labels = managed_labels(deployable)
    annotations = {
        RELEASE_ANNOTATION: deployable.release_id,
        DIGEST_ANNOTATION: deployable.config_digest,
    }
    config = release_config(deployable, secret_values)
    record = SourcedObject(
        "(the service's record)",
        _metadata_only("v1", "ConfigMap", config_map_name(deployable.service)),
    )
    objects = [record, *config.objects]
    service = deployable.service
    reserved = tuple(f"{fn(service)}-" for fn in VERSIONED_ROLES.values())
    workload = {k: v for k, v in deployable.files.items() if k not in deployable.stage_files}
    for item in parse_manifests(workload):
        if item.kind in ("ConfigMap", "Secret") and (
            item.name == config_map_name(service) or item.name.startswith(reserved)
        ):
            raise ManifestError(
                f"{item.source}: {item.ref}: names {config_map_name(service)} and "
                f"{', '.join(p + '*' for p in reserved)} are configcenter's for the service's own "
                "config and secrets; rename it"
            )
        _refuse_secrets_in(item)
        body = item.body  # parsed for this call alone: nobody else holds it
        _place_in_namespace(item, body, namespace)
        _prepare_pod_spec(item, body, deployable, config)
        objects.append(SourcedObject(item.source, body))
    for obj in objects:
        meta = obj.body.setdefault("metadata", {})
        meta["namespace"] = namespace
        meta["labels"] = {**(meta.get("labels") or {}), **deployable.labels, **labels}
        if VERSIONED_LABEL not in meta["labels"]:
            # Versioned objects are immutable and shared by releases: no release on them.
            meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    objects.sort(key=lambda o: apply_rank(o.kind))
    return objects


def _refuse_secrets_in(item: SourcedObject) -> None:
    """A manifest is sent as written: a placeholder in it would reach the cluster as text."""
    if any(MARKER in text and find_refs(text) for text in _strings(item.body)):
        raise ManifestError(
            f"{item.source}: {item.ref} holds a secret placeholder; a secret reaches the pods "
            "only through the ENV list, an .env output or a config file (configcenter puts "
            "those in a Secret): move it there"
        )


def _strings(value: Any) -> Iterator[str]:
    """Every string in parsed YAML data, keys included; a node an alias repeats (or one
    that contains itself) is walked once."""
    seen: set[int] = set()
    pending = [value]
    while pending:
        node = pending.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, (dict, list)):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, dict):
                for key, item in node.items():
                    pending.extend((key, item))
            else:
                pending.extend(node)


def is_versioned(item: Mapping[str, Any]) -> bool:
    labels = (item.get("metadata") or {}).get("labels") or {}
    return VERSIONED_LABEL in labels


def versions_to_collect(
    items: Iterable[Mapping[str, Any]], in_use: Iterable[tuple[str, str]]
) -> list[Mapping[str, Any]]:
    """Old versions of a service's config objects: all but the newest KEEP_VERSIONS per role.

    `items` are the service's live ConfigMaps and Secrets; those `in_use` (kind, name) by
    the release just applied are never collected.
    """
    keep = set(in_use)
    by_role: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for item in items:
        meta = item.get("metadata") or {}
        role = (meta.get("labels") or {}).get(VERSIONED_LABEL)
        if role is None or (str(item.get("kind")), str(meta.get("name"))) in keep:
            continue
        by_role.setdefault((str(item.get("kind")), str(role)), []).append(item)
    old: list[Mapping[str, Any]] = []
    for versions in by_role.values():
        versions.sort(
            key=lambda i: (
                str((i.get("metadata") or {}).get("creationTimestamp") or ""),
                str((i.get("metadata") or {}).get("name")),
            ),
            reverse=True,
        )
        old.extend(versions[KEEP_VERSIONS:])
    return old


def apply_rank(kind: str) -> int:
    """Where a kind goes in apply order (lower first); deletes go the other way round."""
    return _APPLY_ORDER.get(kind, _DEFAULT_ORDER)


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


def _prepare_pod_spec(
    item: SourcedObject,
    body: dict[str, Any],
    deployable: Deployable,
    config: ReleaseConfig,
) -> None:
    """Wire a workload to the release: image, ENV sources, config files, labels.

    The pod template refers to the release's config and secrets by their versioned names,
    so a change of what the pods consume (image, environment, config files, secret values)
    rolls them, while a change of anything else (replicas, a Service) leaves the pods
    alone. Re-applying an older release yields the very same template, so a Deployment
    scales its old ReplicaSet back up (a StatefulSet or DaemonSet returns to its old
    ControllerRevision).
    """
    if item.kind in ("Deployment", "StatefulSet"):
        spec = body.setdefault("spec", {})
        if deployable.replicas is None:
            spec.pop("replicas", None)  # an autoscaler owns it
        else:
            spec.setdefault("replicas", deployable.replicas)
    for template in pod_templates(body):
        meta = template.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **managed_labels(deployable)}
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
            env_from = [s for s in container.get("envFrom") or [] if not _is_ours(s, deployable)]
            container["envFrom"] = [*copy.deepcopy(config.env_from), *env_from]
        if config.volume is not None:
            _mount_files(item, pod, config.volume, files_mount_path(item, deployable.service))


def _is_ours(source: object, deployable: Deployable) -> bool:
    """An envFrom entry naming one of the service's config objects (written by hand)."""
    if not isinstance(source, dict):
        return False
    ref = source.get("configMapRef") or source.get("secretRef") or {}
    name = str(ref.get("name", "")) if isinstance(ref, dict) else ""
    service = deployable.service
    return name in (config_map_name(service), secret_name(service)) or any(
        name.startswith(f"{fn(service)}-") for fn in VERSIONED_ROLES.values()
    )


def files_mount_path(item: SourcedObject, service: str) -> str:
    """Where a workload's containers see the config files: its annotation, else the default."""
    annotations = item.body["metadata"].get("annotations") or {}
    wanted = annotations.get(FILES_MOUNT_ANNOTATION)
    if wanted is None:
        return default_files_mount_path(service)
    raw = wanted if isinstance(wanted, str) else ""
    path = posixpath.normpath(raw) if raw else ""
    if not path.startswith("/") or path.startswith("//") or path == "/" or ".." in raw.split("/"):
        raise ManifestError(
            f"{item.source}: {item.ref}: annotation {FILES_MOUNT_ANNOTATION}: {wanted!r} is not "
            "a directory to mount the config files at; give an absolute path other than '/' "
            "without '..', e.g. /etc/nginx"
        )
    return path


def _mount_files(
    item: SourcedObject, pod: dict[str, Any], volume: Mapping[str, Any], mount_path: str
) -> None:
    """Add the files volume and mount it read-only in every container, init containers too."""
    volumes = pod.get("volumes") or []
    if any(isinstance(v, dict) and v.get("name") == FILES_VOLUME for v in volumes):
        raise ManifestError(
            f"{item.source}: {item.ref}: the pod volume name {FILES_VOLUME!r} is configcenter's "
            "(it carries the config files); rename the template's volume"
        )
    pod["volumes"] = [*volumes, copy.deepcopy(dict(volume))]
    for container in [*pod["containers"], *(pod.get("initContainers") or [])]:
        mounts = container.get("volumeMounts") or []
        for mount in mounts:
            if isinstance(mount, dict) and posixpath.normpath(str(mount.get("mountPath"))) == (
                mount_path
            ):
                raise ManifestError(
                    f"{item.source}: {item.ref}: container {container['name']} already mounts "
                    f"{mount.get('name')!r} at {mount_path}, where configcenter mounts the config "
                    f"files; set the annotation {FILES_MOUNT_ANNOTATION} to another directory"
                )
        container["volumeMounts"] = [
            *mounts,
            {"name": FILES_VOLUME, "mountPath": mount_path, "readOnly": True},
        ]


def _one_line(text: str) -> str:
    return " ".join(text.split())
