"""Applying a release to Marathon: the app definition, its secrets and its files.

The app definition is the rendered `marathon.json`; the adapter owns the app
id (`<group>/<service>`), `instances`, `container.docker.image`, `env` (values
plus secret references) and the `configcenter.io/*` labels that tie the app to
its env, service, release and config digest (what `observe` reads back).

Secrets: each secret ENV key becomes a Marathon `secrets` entry whose `source`
is a path in the DC/OS secret store (`<group>/<service>/<generation>/<KEY>`)
and an env entry `{"secret": name}`. The value is resolved (`env:` / `file:`
refs) only at apply time and written to the store's API (`secrets_url`), so it
never appears in the app JSON, Marathon's version history, logs or errors.
`k8s:` refs are rejected. Config files reach the task through the Mesos
fetcher, from configcenter serve (`files_url`, `files_key`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from configcenter.adapters.marathon_client import (
    APP_FILE,
    JSON,
    LABEL_DIGEST,
    LABEL_ENV,
    LABEL_RELEASE,
    LABEL_SERVICE,
    Deployments,
    MarathonApi,
    MarathonConflictError,
    MarathonError,
    MarathonSecretError,
    MarathonSettingsError,
)
from configcenter.adapters.marathon_diff import READ_ONLY, runs
from configcenter.adapters.secrets import SecretError, resolve_secret, secret_scheme
from configcenter.core import fileurls
from configcenter.core.secretrefs import (
    MARKER,
    SecretsRotated,
    find_refs,
    separate_rotated,
    substitute,
)
from configcenter.ports.platform import Deployable, UndeliveredFiles

log = logging.getLogger("configcenter.adapters.marathon")  # one logger name for the adapter

#: How a secret reference looks once rendered into a file (`${secret:KIND:REF}`).
SECRET_PLACEHOLDER = b"${secret:"


class MarathonApplier:
    """PUT a release's app (its secrets stored first), and compare secrets (`secrets_match`)."""

    def __init__(
        self,
        client: MarathonApi,
        deployments: Deployments,
        *,
        force: bool,
        files_url: str | None,
        files_key: str,
        on_secret: Callable[[str], None] | None,
    ) -> None:
        self.client = client
        self.target = client.target
        self.deployments = deployments
        self.force = force
        self.files_url = files_url
        self._files_key = files_key
        self._on_secret = on_secret

    def apply(
        self, deployable: Deployable, *, dry_run: bool = False, force: bool | None = None
    ) -> None:
        """PUT the app (creating it if new); a no-op when Marathon already runs this definition.

        A 409 (app locked by a running deployment) is an error unless `force`
        (per call, or the platform default) is set; the one exception is a lock
        held by a rollout this adapter's `wait` reported failed, which a
        rollback may cancel without asking, since it is known to be broken.
        """
        app_id = self.client.app_id(deployable.service)
        definition, secrets = self._definition(deployable)
        if dry_run:
            for key, (_, text) in secrets.items():
                for ref in find_refs(text):
                    resolve_ref(ref, f"{deployable.service}: {key}", None)  # proves it resolves
            return
        for key, (source, text) in secrets.items():
            self._store_secret(deployable.service, key, source, text)
        current = self.client.get_app(app_id, embed=("app.deployments",))
        if current is not None and runs(current, definition):
            running = [d["id"] for d in current.get("deployments") or []]
            if running:
                self.deployments.pending[app_id] = running[0]
            else:
                self.deployments.pending.pop(app_id, None)
            log.info("marathon %s: %s already runs this definition", self.target.name, app_id)
            return
        use_force = self.force if force is None else force
        try:
            result = self.client.put_app(app_id, definition, force=use_force)
        except MarathonConflictError as exc:
            if (
                use_force
                or not exc.deployment_ids
                or not set(exc.deployment_ids) <= self.deployments.failed
            ):
                raise
            log.warning(
                "marathon %s: %s is locked by failed rollout %s; cancelling it with force",
                self.target.name,
                app_id,
                ", ".join(exc.deployment_ids),
            )
            result = self.client.put_app(app_id, definition, force=True)
        deployment_id = str(result.get("deploymentId", ""))
        self.deployments.pending[app_id] = deployment_id
        log.info(
            "marathon %s: %s release %s -> deployment %s (version %s)",
            self.target.name,
            app_id,
            deployable.release_id,
            deployment_id,
            result.get("version"),
        )

    def secrets_match(
        self, deployable: Deployable, generations: list[int]
    ) -> int | SecretsRotated | str:
        """Compare freshly resolved values with what the secret store holds per generation;
        when none matches, which references differ from the first generation's, key by key."""
        wanted = {
            key: text
            for key, text in _env_entries(deployable).items()
            if isinstance(text, str) and find_refs(text)
        }
        if not generations:
            return "no secrets generation to compare with"
        if not wanted:
            return generations[0]
        if not self.client.secrets_url:
            return f"platforms.{self.target.name} has no secrets_url"
        try:
            values = {k: self._resolved(deployable.service, k, t) for k, t in wanted.items()}
            first: dict[str, str] = {}
            for generation in generations:
                candidate = replace(deployable, secrets_generation=generation)
                stored: dict[str, str] = {}
                for key in wanted:
                    response = self.client.secret_request(
                        "GET", self._secret_source(candidate, key), ok=(200, 404)
                    )
                    if response.status_code == 200:
                        stored[key] = str((response.json() or {}).get("value", ""))
                if generation == generations[0]:
                    first = stored
                if stored == values:
                    return generation
        except (MarathonError, SecretError, ValueError) as exc:
            return str(exc)
        absent = sorted(k for k in wanted if k not in first)
        if absent:
            # Another generation that is there says nothing about this one's values.
            return f"generation {generations[0]} has no {', '.join(absent)} in the secret store yet"
        # Compared in memory, key by key; nothing derived from a value leaves this method.
        return separate_rotated(
            {k: (find_refs(t), first[k] == values[k]) for k, t in wanted.items()},
            what="secret",
        )

    def collect_generations(self, deployable: Deployable) -> list[str]:
        """Delete the service's secret generations older than the newest few, as Kubernetes
        collects its Secrets' versions (`k8s_manifests.versions_to_collect`): a rollback to
        a release within them finds its own values; the generation `deployable` runs with is
        never collected. Returns the paths deleted. Call once the release is healthy."""
        from configcenter.adapters.k8s_manifests import KEEP_VERSIONS

        if not self.client.secrets_url:
            return []
        prefix = self.client.secret_prefix(deployable.service)
        by_generation: dict[int, list[str]] = {}
        for path in self.client.list_secrets(prefix):
            number, _, key = path.strip("/").partition("/")
            if number.isdigit() and key:  # only what this adapter stored
                by_generation.setdefault(int(number), []).append(prefix + path.strip("/"))
        keep = set(sorted(by_generation, reverse=True)[:KEEP_VERSIONS])
        keep.add(deployable.secrets_generation)
        deleted: list[str] = []
        for generation in sorted(set(by_generation) - keep):
            for source in sorted(by_generation[generation]):
                self.client.secret_request("DELETE", source, ok=(204, 404))
                deleted.append(source)
            log.info(
                "marathon %s: collected secrets generation %d of %s (an old version)",
                self.target.name,
                generation,
                deployable.service,
            )
        return deleted

    def app_definition(self, deployable: Deployable) -> JSON:
        """The JSON `apply` would PUT, secret values not included (they never are)."""
        return self._definition(deployable)[0]

    def _definition(self, deployable: Deployable) -> tuple[JSON, dict[str, tuple[str, str]]]:
        app_id = self.client.app_id(deployable.service)
        where = f"{deployable.env}/{deployable.service}/{APP_FILE}"
        raw = deployable.files.get(APP_FILE)
        if raw is None:
            raise MarathonSettingsError(
                f"{deployable.service}: the release has no rendered {APP_FILE} but its platform "
                f"{self.target.name!r} is Marathon; add {APP_FILE} to outputs in "
                f"templates/{deployable.service}/template.yaml (rendered from {APP_FILE}.j2)"
            )
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise MarathonSettingsError(f"{where}: not UTF-8 ({exc.reason})") from None
        except json.JSONDecodeError as exc:
            raise MarathonSettingsError(
                f"{where}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}; "
                f"fix templates/{deployable.service}/{APP_FILE}.j2"
            ) from None
        if not isinstance(data, dict):
            raise MarathonSettingsError(
                f"{where}: must be one JSON object (a Marathon app definition), "
                f"got {type(data).__name__}"
            )
        app: JSON = {k: v for k, v in data.items() if k not in READ_ONLY}
        if "id" in app and "/" + str(app["id"]).strip("/") != app_id:
            log.info("%s: id %r replaced by %s (the env's group)", where, app["id"], app_id)
        app["id"] = app_id
        app["instances"] = deployable.replicas
        container = app.get("container")
        if container is None:
            container = {"type": "DOCKER"}
        if not isinstance(container, dict):
            raise MarathonSettingsError(f"{where}: 'container' must be an object")
        docker = container.get("docker") or {}
        if not isinstance(docker, dict):
            raise MarathonSettingsError(f"{where}: 'container.docker' must be an object")
        container = {**container, "docker": {**docker, "image": deployable.image}}
        container.setdefault("type", "DOCKER")
        app["container"] = container

        env = app.get("env") or {}
        if not isinstance(env, dict):
            raise MarathonSettingsError(f"{where}: 'env' must be an object")
        env = dict(env)
        env.update(_env_entries(deployable))
        declared = app.get("secrets") or {}
        if not isinstance(declared, dict):
            raise MarathonSettingsError(f"{where}: 'secrets' must be an object")
        declared = dict(declared)
        secrets: dict[str, tuple[str, str]] = {}
        for key, text in sorted(env.items()):
            if not isinstance(text, str) or not find_refs(text):
                continue
            for ref in find_refs(text):
                try:
                    scheme = secret_scheme(ref)
                except SecretError as exc:
                    raise MarathonSecretError(f"{deployable.service}: {key}: {exc}") from None
                if scheme not in ("env", "file"):
                    raise MarathonSecretError(
                        f"{deployable.service}: {key}: secret {ref!r} is a '{scheme}:' "
                        "reference, which Marathon cannot read; use env:NAME or "
                        "file:/absolute/path for Marathon environments"
                    )
            # Stored per secrets generation: a rotation is a new path, so a new app
            # definition that restarts the tasks, and a rollback reads its own values.
            source = self._secret_source(deployable, key)
            secrets[key] = (source, text)
            declared[key] = {"source": source}
            env[key] = {"secret": key}
        if declared:
            app["secrets"] = declared
        app["env"] = env
        fetch = self._fetch_entries(deployable, where)
        if fetch:
            own = app.get("fetch") or []
            if not isinstance(own, list):
                raise MarathonSettingsError(f"{where}: 'fetch' must be a list")
            app["fetch"] = [*own, *fetch]

        labels = app.get("labels") or {}
        if not isinstance(labels, dict):
            raise MarathonSettingsError(f"{where}: 'labels' must be an object")
        # Labels are part of what Marathon compares to decide on a restart (a change to
        # anything but `instances` restarts every task: AppDefinition.isUpgrade), so a
        # release that only scales another carries that one's id and digest: same labels,
        # same definition but for `instances`, and Marathon scales without a restart.
        release_id, digest = deployable.workload_identity
        app["labels"] = {
            **{str(k): str(v) for k, v in labels.items()},
            **{str(k): str(v) for k, v in deployable.labels.items()},
            LABEL_ENV: deployable.env,
            LABEL_SERVICE: deployable.service,
            LABEL_RELEASE: release_id,
            LABEL_DIGEST: digest,
        }
        return app, secrets

    def _fetch_entries(self, deployable: Deployable, where: str) -> list[JSON]:
        """Mesos fetcher entries that put the release's config files into the task sandbox.

        Every rendered output but marathon.json, `.env` outputs (they are the
        environment) and build inputs is a config file. Each is fetched from
        configcenter serve by a content-addressed, signed URL (see
        `configcenter.core.fileurls`) to `$MESOS_SANDBOX/<output path>`, so a new
        release, and a rollback, point the app at exactly that release's files.
        """
        files = config_files(deployable.files)
        if not files:
            return []
        names = ", ".join(sorted(files))
        if not self.files_url or not self._files_key:
            raise MarathonSettingsError(
                f"{deployable.service}: renders config files ({names}) but platforms."
                f"{self.target.name} has no files_url and files_key, so a Marathon task cannot "
                "get them: set files_url to configcenter serve's URL as Mesos agents reach it "
                "and files_key to the same secret as serve.files_key (or render only "
                f"{APP_FILE} and .env outputs for this service)"
            )
        entries: list[JSON] = []
        for name, data in sorted(files.items()):
            if SECRET_PLACEHOLDER in data:
                raise MarathonSecretError(
                    f"{where}: config file {name} contains a secret placeholder; files are "
                    "fetched from serve and must not hold secrets on Marathon: pass the secret "
                    "as an environment variable (the ENV list) instead"
                )
            url = fileurls.file_url(self.files_url, self._files_key, deployable.env, name, data)
            entry = {"uri": url, "destPath": name, "extract": False, "executable": False}
            entries.append({**entry, "cache": False})
        return entries

    def _store_secret(self, service: str, key: str, source: str, text: str) -> None:
        """Store the value of env entry `key` (`text` with its placeholders resolved).

        A generation's path is written once: when it exists it holds the values that
        generation was made with, which is what a rollback to it must find.
        """
        if not self.client.secrets_url:
            raise MarathonSettingsError(
                f"{service}: {key} is a secret, but platforms.{self.target.name} has no "
                "secrets_url; set it to the DC/OS secret store API "
                "(e.g. https://dcos.example.com/secrets/v1) so the value can be stored there"
            )
        response = self.client.secret_request("GET", source, ok=(200, 404))
        if response.status_code == 200:
            return
        value = self._resolved(service, key, text)
        response = self.client.secret_request("PUT", source, value=value, ok=(201, 409))
        if response.status_code == 409:
            return  # stored by a concurrent apply of the same generation
        log.info(
            "marathon %s: stored secret %s for %s (%s)",
            self.target.name,
            key,
            service,
            ", ".join(find_refs(text)),
        )

    def _resolved(self, service: str, key: str, text: str) -> str:
        return substitute(text, lambda ref: resolve_ref(ref, f"{service}: {key}", self._on_secret))

    def _secret_source(self, deployable: Deployable, key: str) -> str:
        return (
            f"{self.client.secret_prefix(deployable.service)}{deployable.secrets_generation}/{key}"
        )


def config_files(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """The outputs a task reads as files: all but marathon.json, `.env`, build inputs and
    Kubernetes manifests (a template shared by both platforms renders those too)."""
    from configcenter.adapters.k8s_manifests import (
        is_build_file,
        is_env_file,
        is_manifest_file,
        parse_manifests,
    )

    return {
        name: data
        for name, data in files.items()
        if name != APP_FILE
        and not is_env_file(name)
        and not is_build_file(name)
        and not (is_manifest_file(name) and _is_manifest(name, data, parse_manifests))
    }


def check_config_files(
    platform: str, settings: Mapping[str, object], files: Mapping[str, bytes]
) -> UndeliveredFiles | None:
    """Config files reach a task through the Mesos fetcher from configcenter serve, which
    takes `files_url` and `files_key` (the `config_files` capability's check)."""
    found = tuple(sorted(config_files(files)))
    if not found or (settings.get("files_url") and settings.get("files_key")):
        return None
    return UndeliveredFiles(
        found,
        f"renders config files ({', '.join(found)}) for Marathon platform '{platform}', "
        "which has no files_url and files_key: its tasks could not get them",
        f"set platforms.{platform}.files_url to configcenter serve's URL as Mesos agents reach "
        "it and files_key to the same secret as serve.files_key, or render only "
        f"{APP_FILE} and .env outputs",
    )


def _is_manifest(name: str, data: bytes, parse: Callable[..., list[Any]]) -> bool:
    """Whether a YAML output holds Kubernetes objects (an app's own YAML holds none)."""
    from configcenter.adapters.k8s_manifests import ManifestError

    try:
        return bool(parse({name: data}))
    except ManifestError:
        return False


def _env_entries(deployable: Deployable) -> dict[str, str]:
    """The app's environment: the ENV list (secrets as placeholders) and the `.env` outputs.

    An entry that holds a placeholder anywhere is a secret (under its own key, another
    key, or inside a longer string) and goes through the secret store.
    """
    from configcenter.adapters.k8s_manifests import is_env_file, parse_env_file

    env = {key: str(value) for key, value in deployable.values.items()}
    env.update({key: MARKER + ref + "}" for key, ref in deployable.secrets.items()})
    for name in sorted(deployable.files):
        if is_env_file(name):
            env.update(parse_env_file(name, deployable.files[name]))
    return env


def resolve_ref(ref: str, where: str, on_resolved: Callable[[str], None] | None) -> str:
    try:
        return resolve_secret(ref, on_resolved=on_resolved)
    except SecretError as exc:
        raise MarathonSecretError(f"{where}: {exc}") from None
