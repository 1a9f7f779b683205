"""Applying a release to Kubernetes: server-side apply, immutable config versions, prune, heal.

Objects come from `k8s_manifests` (pure); they are applied with the field
manager `configcenter`. Secret values are resolved here, at apply time,
registered with the target's `Redactor`, and never logged.

Pruning: once a release was verified healthy (`prune`, called by the use case
after `wait`), objects of the same env and service that it no longer renders are
deleted, so the namespace matches the deploy repo. Only objects carrying
configcenter's labels for that env and service, that configcenter itself applied
(its field manager did an Apply) and that no controller owns are candidates, and
only of the kinds it ever applied for the service (recorded on the `<service>-config` ConfigMap).
"""

from __future__ import annotations

import base64
import binascii
import copy
import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from configcenter.adapters.k8s_client import KubeClient
from configcenter.adapters.k8s_manifests import (
    APPLIED_KINDS_ANNOTATION,
    ENV_LABEL,
    FIELD_MANAGER,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    RECORDED_OBJECT_KINDS,
    RELEASE_OBJECTS_ANNOTATION,
    SERVICE_LABEL,
    ManifestError,
    SourcedObject,
    apply_rank,
    build_objects,
    config_map_name,
    env_selector,
    is_versioned,
    pod_templates,
    release_refs,
    secret_objects,
    service_selector,
    versions_to_collect,
)
from configcenter.adapters.k8s_observe import OBSERVED_KINDS
from configcenter.adapters.secrets import SecretError, resolve_secret, secret_scheme
from configcenter.core.secretrefs import SecretsRotated, find_refs, separate_rotated
from configcenter.ports.platform import Deployable, PlatformError

log = logging.getLogger("configcenter.adapters.kubernetes")  # one logger name for the adapter

#: Connect and read timeouts (seconds) of the reads a plan makes.
PLAN_REQUEST_TIMEOUT = (5, 15)
#: Reads and PUTs of one object a heal makes when its PUT keeps losing to another writer.
REPLACE_ATTEMPTS = 5


class ReleaseApplier:
    """Apply, prune, heal and secret comparison for one target (see the module doc)."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.target = client.target
        self.namespace = client.namespace
        self.redactor = client.redactor
        #: The env's Secrets, listed once for a plan's `secrets_match` calls (one list call
        #: for every service); any apply through this instance drops it.
        self._env_secrets: dict[str, dict[str, dict[str, Any]]] | None = None
        #: Why that list failed, so the plan's other services say so without asking again.
        self._env_secrets_error: str | None = None

    def apply(
        self,
        deployable: Deployable,
        *,
        dry_run: bool = False,
        replace: frozenset[str] = frozenset(),
    ) -> list[str]:
        """Server-side apply of the release's objects (field manager `configcenter`), then prune.

        A dry run applies with the server's dry run and prunes nothing: it logs
        what it would prune. The objects `replace` names (`Kind/name`, changed by hand)
        are first replaced whole with what the release renders, in apply order (so after
        the config versions they refer to exist): a server-side apply alone would keep
        the fields other managers added inside them. Returns those replaced.
        """
        self.check_env(deployable)
        self._env_secrets = None
        self._env_secrets_error = None
        namespace_exists = self.ensure_namespace(dry_run)
        # A generation's Secrets are immutable: when they exist, they hold the values that
        # generation was made with (a rollback gets back exactly those), so nothing is
        # resolved. Only a generation new to the platform resolves its references now.
        missing = self._missing_secrets(deployable) if namespace_exists else None
        values = self.resolve_secrets(deployable) if missing or missing is None else None
        objects = build_objects(deployable, self.namespace, values)
        record = config_map_name(deployable.service)
        release_objects = sorted(
            o.ref for o in objects if o.kind in RECORDED_OBJECT_KINDS and o.name != record
        )
        if missing is not None:
            objects = [
                o
                for o in objects
                if o.kind != "Secret" or o.name in missing or not is_versioned(o.body)
            ]
        resources = [(obj, self.client.resource_for(obj)) for obj in objects]
        if dry_run and not namespace_exists:
            log.warning(
                "dry run: namespace %s does not exist yet, so the server cannot check %s's "
                "objects in it; they were checked for shape only",
                self.namespace,
                deployable.service,
            )
            return []
        # Recorded before anything is applied, so a crash halfway still leaves
        # every kind that may now exist in the record the next apply prunes from.
        kinds = self._recorded_kinds(deployable.service) | {
            (str(obj.body["apiVersion"]), obj.kind) for obj in objects
        }
        _record_kinds(objects, record, kinds, release_objects)
        replaced: list[str] = []
        for obj, resource in resources:
            if is_versioned(obj.body):
                self._create_version(obj, resource, deployable, dry_run=dry_run)
                continue
            if obj.ref in replace and not dry_run and self._replace_one(obj):
                log.warning(
                    "replaced %s in namespace %s (changed by hand) with release %s",
                    obj.ref,
                    self.namespace,
                    deployable.release_id,
                )
                replaced.append(obj.ref)
            self.client.call(
                f"{obj.source}: apply {obj.ref}",
                resource.server_side_apply,
                body=obj.body,
                name=obj.name,
                namespace=self.namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                dry_run="All" if dry_run else None,
                query_params=[("fieldValidation", "Strict")],
            )
            log.info(
                "%s %s in namespace %s (release %s)",
                "dry run: would apply" if dry_run else "applied",
                obj.ref,
                self.namespace,
                deployable.release_id,
            )
        if dry_run:
            self._prune(deployable, objects, kinds, dry_run=True)
        return replaced

    def prune(self, deployable: Deployable) -> list[str]:
        """Delete what earlier releases of the service left and this one no longer renders.

        Call once the release was verified healthy: a release that fails is rolled
        back to objects it must find still there (a Service keeps its UID and IP).
        """
        self.check_env(deployable)
        objects = build_objects(deployable, self.namespace, None)
        kinds = self._recorded_kinds(deployable.service) | {
            (str(obj.body["apiVersion"]), obj.kind) for obj in objects
        }
        pruned = self._prune(deployable, objects, kinds)
        self._collect_versions(deployable, objects)
        return pruned

    def secrets_match(
        self, deployable: Deployable, generations: list[int]
    ) -> int | SecretsRotated | str:
        """Compare freshly resolved secret values with each generation's live Secrets; when
        none matches, which references differ from the first generation's, key by key."""
        self.check_env(deployable)
        probe = secret_objects(deployable, None)
        if not generations:
            return "no secrets generation to compare with"
        if not probe:
            return generations[0]
        try:
            values = self.resolve_secrets(deployable)
            live = self._env_secret_data().get(deployable.service, {})
        except PlatformError as exc:
            return str(exc)
        for generation in generations:
            candidate = replace(deployable, secrets_generation=generation)
            wanted = secret_objects(candidate, values)
            if any(o.name not in live for o in wanted):
                continue
            if all(live[o.name] == o.body["data"] for o in wanted):
                return generation
        first = replace(deployable, secrets_generation=generations[0])
        missing = [o.name for o in secret_objects(first, values) if o.name not in live]
        if missing:
            # Another generation that is there says nothing about this one's values.
            secrets = "Secret " if len(missing) == 1 else "Secrets "
            return (
                f"generation {generations[0]}'s {secrets}{', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not on the platform (not rolled out "
                "yet, or deleted)"
            )
        return _rotated_refs(first, live, values)

    def secrets_unavailable(self) -> str | None:
        """Why no secret value of the target's environment can be compared now (its Secrets
        cannot be listed), asked once per instance; None once they were listed."""
        try:
            self._env_secret_data()
        except PlatformError as exc:
            return str(exc)
        return None

    def _env_secret_data(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The env's Secrets' data by service and name: one list call for every service's
        comparison (a scan per service would be quadratic at 500 services); its failure is
        kept, so the plan's other services say so without asking again."""
        if self._env_secrets_error is not None:
            raise PlatformError(self._env_secrets_error)
        if self._env_secrets is None:
            try:
                listing = self.client.call(
                    "list Secrets to compare secret values",
                    self.client.get_json,
                    self.client.resource("v1", "Secret"),
                    namespace=self.namespace,
                    label_selector=env_selector(self.target.env),
                    # A plan must not hang on an unreachable cluster: it says it cannot tell.
                    _request_timeout=PLAN_REQUEST_TIMEOUT,
                )
            except PlatformError as exc:
                self._env_secrets_error = str(exc)
                raise
            found: dict[str, dict[str, dict[str, Any]]] = {}
            for item in listing.get("items") or []:
                owner = (item["metadata"].get("labels") or {}).get(SERVICE_LABEL)
                if owner is None:
                    continue
                name = str(item["metadata"]["name"])
                found.setdefault(str(owner), {})[name] = item.get("data") or {}
            self._env_secrets = found
        return self._env_secrets

    def replace_drifted(self, deployable: Deployable, refs: Iterable[str]) -> list[str]:
        """Make the objects `refs` (`Kind/name`) equal to the release again, by replacing them.

        Server-side apply only sets the fields configcenter owns: an env var added by
        `kubectl set env`, a ConfigMap key added by hand or a Service port edited to
        a new key stay next to ours. A replace (PUT) of what the release renders
        removes them. Labels and annotations other managers added to an object (or
        its pod template) are kept, and so are the addresses the API server
        allocated (a Service's cluster IPs). Objects that do not exist are left to
        `apply`. An object the release does not render (an orphan, as `diff` names
        it: made by hand with configcenter's labels, which `prune` never deletes) is
        deleted, when it carries configcenter's labels for this env and service and no
        controller owns it. Returns the refs replaced or deleted.
        """
        self.check_env(deployable)
        wanted = set(refs)
        rendered = {obj.ref for obj in build_objects(deployable, self.namespace, None)}
        replaced: list[str] = []
        if wanted & rendered:
            replaced += self._replace(deployable, wanted)
        for ref in sorted(wanted - rendered):
            if self._delete_orphan(deployable, ref):
                replaced.append(ref)
        return replaced

    def server_defaults(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """`body` (a desired object, Secret values masked) as the API server would store it
        in place of the live object: a dry-run replace, so every field the server defaults
        is filled in as it would be. None when the server refuses the dry run (no right to
        update it, a masked Secret value it will not take): nothing is taken for a default.
        """
        meta = body.get("metadata") or {}
        try:
            resource = self.client.resource(str(body.get("apiVersion")), str(body.get("kind")))
            stored = resource.replace(
                body=copy.deepcopy(dict(body)),
                name=meta.get("name"),
                namespace=self.namespace,
                dry_run="All",
                field_manager=FIELD_MANAGER,
                _request_timeout=PLAN_REQUEST_TIMEOUT,
            )
        except Exception as exc:
            log.info(
                "no dry run of %s/%s to learn its defaults: %s",
                body.get("kind"),
                meta.get("name"),
                self.redactor.redact(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return None
        found = stored.to_dict() if hasattr(stored, "to_dict") else stored
        return dict(found) if isinstance(found, Mapping) else None

    def _delete_orphan(self, deployable: Deployable, ref: str) -> bool:
        """Delete `ref` if it is one of the service's objects the release does not render."""
        kind, _, name = ref.partition("/")
        api_version = next((v for v, k in OBSERVED_KINDS if k == kind), None)
        if api_version is None or not name:
            return False  # only the kinds `observe` lists are reported as orphans
        resource = self.client.resource(api_version, kind)
        try:
            live = self.client.get_json(resource, name=name, namespace=self.namespace)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return False
            raise self.client.api_error(f"read {ref} to heal it", exc) from None
        if not _orphan(live, deployable.env, deployable.service):
            return False
        if not self.client.delete_object(resource, live, f"delete {ref} to heal it"):
            return False
        # The caller says so, once per object (apply: "put back", reconcile: "deleted").
        log.debug(
            "healed %s in namespace %s: deleted (release %s of %s does not render it)",
            ref,
            self.namespace,
            deployable.release_id,
            deployable.service,
        )
        return True

    def _replace(self, deployable: Deployable, wanted: set[str]) -> list[str]:
        values = self.resolve_secrets(deployable)
        replaced: list[str] = []
        for obj in build_objects(deployable, self.namespace, values):
            if obj.ref in wanted and self._replace_one(obj):
                # The caller says so, once per object (apply: "put back", reconcile: "replaced").
                log.debug(
                    "healed %s in namespace %s: replaced with release %s",
                    obj.ref,
                    self.namespace,
                    deployable.release_id,
                )
                replaced.append(obj.ref)
        return replaced

    def _replace_one(self, obj: SourcedObject) -> bool:
        """PUT `obj` over the live object (False when there is none). A controller writing
        the object's status between the read and the PUT makes the PUT a conflict (409):
        it is read and sent again, a few times, as Kubernetes clients retry on conflict."""
        resource = self.client.resource_for(obj)
        for attempt in range(1, REPLACE_ATTEMPTS + 1):
            try:
                live = self.client.get_json(resource, name=obj.name, namespace=self.namespace)
            except Exception as exc:
                if getattr(exc, "status", None) == 404:
                    return False
                raise self.client.api_error(f"read {obj.ref} to heal it", exc) from None
            try:
                resource.replace(
                    body=_replacement(obj.body, live),
                    name=obj.name,
                    namespace=self.namespace,
                    field_manager=FIELD_MANAGER,
                )
                return True
            except PlatformError:
                raise
            except Exception as exc:
                if getattr(exc, "status", None) == 409 and attempt < REPLACE_ATTEMPTS:
                    continue
                raise self.client.api_error(
                    f"{obj.source}: replace {obj.ref} to heal it", exc
                ) from None
        return False

    def check_env(self, deployable: Deployable) -> None:
        if deployable.env != self.target.env:
            raise PlatformError(
                f"{deployable.service}: release is for env {deployable.env!r} but platform "
                f"{self.target.name!r} was set up for env {self.target.env!r}; "
                "build the platform from that environment's target"
            )

    def resolve_secrets(self, deployable: Deployable) -> dict[str, str]:
        """Read every secret the release delivers now, by reference, registering each value
        (and its base64) for masking."""
        values: dict[str, str] = {}
        keys = {ref: key for key, ref in deployable.secrets.items()}
        for ref in sorted(release_refs(deployable)):
            try:
                if secret_scheme(ref) == "k8s":
                    value = self._read_cluster_secret(ref)
                else:
                    value = resolve_secret(ref)
            except SecretError as exc:
                where = f"value {keys[ref]}" if ref in keys else f"secret {ref}"
                raise PlatformError(
                    f"{deployable.service}: {where}: {self.redactor.redact(str(exc))}"
                ) from None
            self.redactor.register(value)
            self.redactor.register(base64.b64encode(value.encode("utf-8")).decode("ascii"))
            values[ref] = value
        return values

    def cluster_secret_problem(self, ref: str) -> tuple[str, str] | None:
        """Why `ref` (`k8s:ns/name/key`) cannot be read now and the fix, or None when it can
        (the value is registered for masking, never kept). Raises `PlatformError` when the
        cluster does not answer (a plan or apply must not hang on it: short timeouts)."""
        try:
            value = self._read_cluster_secret(ref, timeout=PLAN_REQUEST_TIMEOUT)
        except SecretError as exc:
            return self.redactor.redact(exc.problem), exc.fix
        except PlatformError:
            raise
        except Exception as exc:
            raise self.client.api_error(f"read the Secret of {ref}", exc) from None
        self.redactor.register(value)
        self.redactor.register(base64.b64encode(value.encode("utf-8")).decode("ascii"))
        return None

    def _read_cluster_secret(self, ref: str, timeout: tuple[int, int] | None = None) -> str:
        parts = ref.partition(":")[2].split("/")
        if len(parts) != 3 or not all(parts):
            raise SecretError(ref, "expected k8s:namespace/name/key", "name all three parts")
        namespace, name, key = parts
        resource = self.client.resource("v1", "Secret")
        try:
            extra = {} if timeout is None else {"_request_timeout": timeout}
            secret = self.client.get_json(resource, name=name, namespace=namespace, **extra)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 404:
                raise SecretError(
                    ref,
                    f"Secret {namespace}/{name} does not exist",
                    "create it or fix the reference",
                ) from None
            if status == 403:
                raise SecretError(
                    ref,
                    f"not allowed to read Secret {namespace}/{name}",
                    "grant this context `get` on secrets in that namespace",
                ) from None
            raise
        data = secret.get("data") or {}
        if key not in data:
            known = ", ".join(sorted(data)) or "none"
            raise SecretError(
                ref, f"Secret {namespace}/{name} has no key {key!r} (keys: {known})", "fix the key"
            )
        try:
            return base64.b64decode(data[key], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise SecretError(
                ref, f"key {key!r} of Secret {namespace}/{name} is not UTF-8 text"
            ) from None

    def ensure_namespace(self, dry_run: bool) -> bool:
        """Create the target namespace if missing; True when it exists (now)."""
        resource = self.client.resource("v1", "Namespace")
        try:
            self.client.get_json(resource, name=self.namespace)
            return True
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 403:
                # Namespaced credentials may not read namespaces; applying will tell.
                return True
            if status != 404:
                raise self.client.api_error(f"read namespace {self.namespace}", exc) from None
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": self.namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
            },
        }
        try:
            resource.create(body=body, dry_run="All" if dry_run else None)
        except Exception as exc:
            if getattr(exc, "status", None) == 409:
                return True
            raise self.client.api_error(f"create namespace {self.namespace}", exc) from None
        if not dry_run:
            log.info("created namespace %s", self.namespace)
        return not dry_run

    def _missing_secrets(self, deployable: Deployable) -> set[str]:
        """Names of the release's Secrets not on the platform yet."""
        names = {obj.name for obj in secret_objects(deployable, None)}
        live = {
            str(item["metadata"]["name"])
            for item in self._service_items("Secret", deployable, "look for its Secrets")
        }
        return names - live

    def _service_items(self, kind: str, deployable: Deployable, why: str) -> list[dict[str, Any]]:
        listing = self.client.call(
            f"list {kind}s of {deployable.service} to {why}",
            self.client.get_json,
            self.client.resource("v1", kind),
            namespace=self.namespace,
            label_selector=service_selector(deployable.env, deployable.service),
        )
        return list(listing.get("items") or [])

    def _create_version(
        self, obj: SourcedObject, resource: Any, deployable: Deployable, *, dry_run: bool
    ) -> None:
        """Create an immutable config or secret version unless it exists (then it is kept)."""
        try:
            resource.create(
                body=obj.body, namespace=self.namespace, dry_run="All" if dry_run else None
            )
        except Exception as exc:
            if getattr(exc, "status", None) == 409:
                return  # same name, same content (or the generation's own values): keep it
            raise self.client.api_error(f"{obj.source}: create {obj.ref}", exc) from None
        log.info(
            "%s %s in namespace %s (release %s)",
            "dry run: would create" if dry_run else "created",
            obj.ref,
            self.namespace,
            deployable.release_id,
        )

    def _collect_versions(self, deployable: Deployable, objects: Iterable[SourcedObject]) -> None:
        """Delete config and secret versions older than the newest few of each role."""
        in_use = {(obj.kind, obj.name) for obj in objects}
        items = [
            dict(item, kind=kind)  # list items carry no kind of their own
            for kind in ("ConfigMap", "Secret")
            for item in self._service_items(kind, deployable, "collect old versions")
        ]
        for item in versions_to_collect(items, in_use):
            kind = str(item["kind"])
            ref = f"{kind}/{item['metadata']['name']}"
            if self.client.delete_object(self.client.resource("v1", kind), item, f"collect {ref}"):
                log.info("collected %s in namespace %s (an old version)", ref, self.namespace)

    def _prune(
        self,
        deployable: Deployable,
        objects: Iterable[SourcedObject],
        kinds: Iterable[tuple[str, str]],
        *,
        dry_run: bool = False,
    ) -> list[str]:
        """Delete the service's objects that `objects` (the applied release) no longer has.

        Call only after `objects` were applied. Returns the pruned (or, in a dry
        run, prunable) objects as `Kind/name`, workloads first.
        """
        wanted = {(_group(str(o.body["apiVersion"])), o.kind, o.name) for o in objects}
        selector = service_selector(deployable.env, deployable.service)
        found: list[tuple[Any, dict[str, Any]]] = []
        seen: set[str] = set()
        for api_version, kind in sorted({*kinds, *OBSERVED_KINDS}):
            try:
                resource = self.client.resource(api_version, kind)
            except ManifestError:
                continue  # no longer served (its CRD is gone), so nothing of it exists
            if not resource.namespaced:
                continue
            listing = self.client.call(
                f"list {kind}s of {deployable.service} to prune",
                self.client.get_json,
                resource,
                namespace=self.namespace,
                label_selector=selector,
            )
            for item in listing.get("items") or []:
                uid = str(item["metadata"].get("uid"))
                key = (_group(api_version), kind, str(item["metadata"]["name"]))
                if uid in seen or key in wanted:
                    continue
                if _prunable(item, kind, deployable.env, deployable.service):
                    seen.add(uid)
                    found.append((resource, item))
        found.sort(key=lambda pair: (-apply_rank(pair[0].kind), pair[0].kind))
        pruned: list[str] = []
        for resource, item in found:
            ref = f"{resource.kind}/{item['metadata']['name']}"
            # Warnings, not info: deleting is worth seeing without turning logging up.
            if dry_run:
                log.warning(
                    "dry run: would prune %s in namespace %s (%s's templates no longer render it)",
                    ref,
                    self.namespace,
                    deployable.service,
                )
                pruned.append(ref)
                continue
            if self.client.delete_object(resource, item, f"prune {ref} of {deployable.service}"):
                log.warning(
                    "pruned %s in namespace %s (%s's templates no longer render it)",
                    ref,
                    self.namespace,
                    deployable.service,
                )
                pruned.append(ref)
        return pruned

    def _recorded_kinds(self, service: str) -> set[tuple[str, str]]:
        """The kinds earlier applies recorded for the service (none before the first)."""
        name = config_map_name(service)
        try:
            config_map = self.client.get_json(
                self.client.resource("v1", "ConfigMap"), name=name, namespace=self.namespace
            )
        except PlatformError:
            raise
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return set()
            raise self.client.api_error(f"read ConfigMap {name}", exc) from None
        annotations = (config_map.get("metadata") or {}).get("annotations") or {}
        return _parse_kinds(str(annotations.get(APPLIED_KINDS_ANNOTATION) or ""))


#: Service spec fields the API server allocates: kept from the live object on replace.
_ALLOCATED_SERVICE_FIELDS = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")


def _rotated_refs(
    deployable: Deployable, live: Mapping[str, Mapping[str, Any]], values: Mapping[str, str]
) -> SecretsRotated:
    """Which references resolve to a value other than `deployable`'s generation holds,
    compared entry by entry (an ENV key of the env Secret, a whole file of the secret-files
    Secret), every one of which is live. Values are compared in memory only; nothing
    derived from them is returned."""
    wanted = secret_objects(deployable, values)
    refs = sorted(release_refs(deployable))
    # The same objects with every placeholder left as it is: what each entry refers to.
    placeholders = {ref: f"${{secret:{ref}}}" for ref in refs}
    texts = {o.name: o.body["data"] for o in secret_objects(deployable, placeholders)}
    entries: dict[str, tuple[list[str], bool]] = {}
    for obj in wanted:
        for key, data in obj.body["data"].items():
            text = base64.b64decode(texts[obj.name][key]).decode("utf-8")
            entries[f"{obj.name}/{key}"] = (find_refs(text), live[obj.name].get(key) == data)
    return separate_rotated(entries, what="Secret entry")


def _replacement(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """What a PUT sends to make `live` what `desired` renders, keeping others' metadata."""
    body = copy.deepcopy(dict(desired))
    live_meta = live.get("metadata") or {}
    meta = body.setdefault("metadata", {})
    meta["resourceVersion"] = live_meta.get("resourceVersion")
    _keep_foreign_metadata(meta, live_meta)
    for template, live_template in zip(pod_templates(body), pod_templates(live), strict=False):
        _keep_foreign_metadata(
            template.setdefault("metadata", {}), live_template.get("metadata") or {}
        )
    live_spec = live.get("spec") or {}
    if body.get("kind") in ("Deployment", "StatefulSet") and "replicas" in live_spec:
        # `replicas: auto` renders none: an autoscaler's count stays (a PUT without one is 1).
        body.setdefault("spec", {}).setdefault("replicas", live_spec["replicas"])
    if body.get("kind") == "Service":
        spec = body.setdefault("spec", {})
        for key in _ALLOCATED_SERVICE_FIELDS:
            if key not in spec and key in live_spec:
                spec[key] = live_spec[key]
    return body


def _keep_foreign_metadata(meta: dict[str, Any], live_meta: Mapping[str, Any]) -> None:
    for key in ("labels", "annotations"):
        theirs = {
            k: v for k, v in (live_meta.get(key) or {}).items() if k not in (meta.get(key) or {})
        }
        if theirs:
            meta[key] = {**theirs, **(meta.get(key) or {})}
    if live_meta.get("finalizers") and "finalizers" not in meta:
        meta["finalizers"] = live_meta["finalizers"]


def _group(api_version: str) -> str:
    """The API group of an apiVersion: one object is listed the same under every version."""
    return api_version.rpartition("/")[0]


def _record_kinds(
    objects: Iterable[SourcedObject],
    config_map: str,
    kinds: Iterable[tuple[str, str]],
    release_objects: Iterable[str],
) -> None:
    record = ",".join(sorted(f"{api_version}/{kind}" for api_version, kind in kinds))
    for obj in objects:
        if obj.kind == "ConfigMap" and obj.name == config_map:
            annotations = obj.body["metadata"].setdefault("annotations", {})
            annotations[APPLIED_KINDS_ANNOTATION] = record
            annotations[RELEASE_OBJECTS_ANNOTATION] = ",".join(release_objects)


def _parse_kinds(record: str) -> set[tuple[str, str]]:
    kinds: set[tuple[str, str]] = set()
    for entry in record.split(","):
        api_version, _, kind = entry.strip().rpartition("/")
        if api_version and kind:
            kinds.add((api_version, kind))
    return kinds


def _orphan(item: Mapping[str, Any], env: str, service: str) -> bool:
    """Whether a live object a release does not render is the service's to delete when
    healing: configcenter's labels for this env and service (whoever made it), not a
    config or secret version kept for rollbacks, and no controller owns it."""
    meta = item.get("metadata") or {}
    labels = meta.get("labels") or {}
    if is_versioned(item) or (
        labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE
        or labels.get(ENV_LABEL) != env
        or labels.get(SERVICE_LABEL) != service
    ):
        return False
    return not any(owner.get("controller") for owner in meta.get("ownerReferences") or [])


def _prunable(item: Mapping[str, Any], kind: str, env: str, service: str) -> bool:
    """Whether configcenter applied this object for this env and service, and nothing owns it."""
    meta = item.get("metadata") or {}
    labels = meta.get("labels") or {}
    if (
        kind == "Namespace"
        or is_versioned(item)
        or (
            labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE
            or labels.get(ENV_LABEL) != env
            or labels.get(SERVICE_LABEL) != service
        )
    ):
        return False
    # ReplicaSets and pods inherit the labels from the pod template: their
    # controller owns them, and they go when it goes.
    if any(owner.get("controller") for owner in meta.get("ownerReferences") or []):
        return False
    return any(
        entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply"
        for entry in meta.get("managedFields") or []
    )
