"""Opening adapters by kind: the edge where the adapter registry meets the code.

Use cases and `serve` never import an adapter module; they call the openers
here, which look the kind up in `configcenter.core.kinds.REGISTRY` and import
the module the entry names. Every adapter of a port is opened through that
port's one factory signature:

    platform   open_platform(target, redactor, *, force=False)   ports.platform.PlatformFactory
    builder    open_builder(settings, context)                    ports.builder.BuilderFactory
    forge      open_forge(settings, context)                      ports.forge.ForgeFactory
    run store  open_store(url, redactor)                          RunStoreFactory below

Ports with one adapter are opened here too, so nothing else imports it:
`open_config_repo`, `open_config_git`, `open_config_lineage`, `open_deploy_repo`, `open_job_store`,
`open_lease_leader`, `open_source_checkouts`, `open_registry`,
`open_bytecode_cache` and `open_state_cache`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from configcenter.adapters.secrets import SecretError
from configcenter.core import kinds
from configcenter.core.errors import UserError
from configcenter.core.redact import Redactor

if TYPE_CHECKING:  # the ports (their modules: the adapters and use cases that use them)
    import jinja2.bccache

    from configcenter.adapters.config_git import ConfigGit
    from configcenter.core.load_trace import LoadStore
    from configcenter.core.render import BytecodeStore, RenderedStore
    from configcenter.ports.builder import Builder, BuilderContext, BuilderFactory, RegistryAccess
    from configcenter.ports.config_lineage import ConfigLineage
    from configcenter.ports.config_repo import ConfigRepo
    from configcenter.ports.deploy_repo import DeployRepo, RecordCache
    from configcenter.ports.forge import Forge, ForgeContext, ForgeFactory
    from configcenter.ports.jobstore import JobStore
    from configcenter.ports.leadership import Leadership
    from configcenter.ports.plan_digests import KeptPlanDigests
    from configcenter.ports.platform import (
        ConfigFilesCheck,
        Platform,
        PlatformFactory,
        PlatformTarget,
        UndeliveredFiles,
    )
    from configcenter.ports.registry import Registry
    from configcenter.ports.runstore import RunStore
    from configcenter.ports.source import SourceCheckouts


class UnknownKind(UserError):
    """configcenter.yaml names a kind no adapter is registered for."""


RunStoreFactory = Callable[[str | None, Redactor | None], "RunStore"]


def entry(port: kinds.Port, kind: str) -> kinds.AdapterKind:
    found = kinds.REGISTRY.find(port, kind)
    if found is None or not found.factory:
        known = [k for k in kinds.REGISTRY.kinds(port) if _opens(port, k)]
        choices = " or ".join([", ".join(known[:-1]), known[-1]] if len(known) > 1 else known)
        raise UnknownKind(f"unknown {port.replace('_', ' ')} kind '{kind}': use {choices}")
    return found


def _opens(port: kinds.Port, kind: str) -> bool:
    found = kinds.REGISTRY.find(port, kind)
    return found is not None and bool(found.factory)


def factory(port: kinds.Port, kind: str) -> Callable[..., Any]:
    """The callable the registry entry names (its module is imported now, not before)."""
    found = entry(port, kind)
    module = importlib.import_module(found.module)
    return cast(Callable[..., Any], getattr(module, found.factory))


def supports(port: kinds.Port, kind: str, capability: str) -> bool:
    return kinds.REGISTRY.supports(port, kind, capability)


def open_platform(target: PlatformTarget, redactor: Redactor, *, force: bool = False) -> Platform:
    opener = cast("PlatformFactory", factory("platform", target.kind))
    return opener(target, redactor, force=force)


def check_config_files(
    kind: str, platform: str, settings: Mapping[str, object], files: Mapping[str, bytes]
) -> UndeliveredFiles | None:
    """Config files of a release that platform `platform` (of `kind`, configured with
    `settings`) could not deliver; None when it can, or when the kind has no `config_files`
    capability (its module is not asked, or even imported)."""
    if not supports("platform", kind, kinds.CONFIG_FILES):
        return None
    module = importlib.import_module(entry("platform", kind).module)
    check = cast("ConfigFilesCheck", module.check_config_files)
    return check(platform, settings, files)


def open_builder(settings: Mapping[str, Any], context: BuilderContext) -> Builder:
    opener = cast("BuilderFactory", factory("builder", str(settings.get("kind", "buildah"))))
    return opener(settings, context)


def open_forge(settings: Mapping[str, Any], context: ForgeContext) -> Forge:
    opener = cast("ForgeFactory", factory("forge", str(settings.get("kind", "local"))))
    return opener(settings, context)


def open_run_store(url: str | None = None, redactor: Redactor | None = None) -> RunStore:
    """Open the run store a URL names; None means the SQLite file in the state dir.

    `sqlite://PATH` (so `sqlite:///var/lib/cc/runs.sqlite3` is absolute; `~` is
    expanded) or `postgresql://user:password@host:port/dbname` (libpq's URL
    form; `postgres://` works too). The adapters are imported only when asked for.
    """
    scheme = "sqlite" if url is None else (url.split(":", 1)[0].lower() if ":" in url else "")
    if not _opens("run_store", scheme):
        from configcenter.adapters.runstores import default_sqlite_path, mask_url
        from configcenter.ports.runstore import RunStoreError

        raise RunStoreError(
            f"unsupported run store URL {mask_url(str(url))!r}: use "
            "sqlite:///path/to/runs.sqlite3 or postgresql://user:password@host:5432/dbname "
            f"(or omit it for the default SQLite file {default_sqlite_path()})"
        )
    opener = cast(RunStoreFactory, factory("run_store", scheme))
    return opener(url, redactor)


def default_run_store_url(project: str) -> str:
    """The run store a project uses when none is configured: its own SQLite file."""
    from configcenter.adapters.runstores import project_sqlite_path

    return f"sqlite://{project_sqlite_path(project)}"


def open_job_store(run_store_url: str | None = None) -> JobStore:
    """serve's job queue beside the run store `run_store_url` names: the same PostgreSQL
    database, or a SQLite file next to the run store's (None: next to the default one)."""
    from configcenter.adapters.sql_jobs import open_job_store as open_store

    return open_store(run_store_url)


def open_bytecode_cache(directory: Path) -> BytecodeStore:
    """Jinja's compiled templates kept in `directory` (created when a template first
    compiles; best effort: a cache that cannot be used costs a compile and one warning,
    never a command)."""
    return _BytecodeOnFirstUse(directory)


class _BytecodeOnFirstUse:
    """The adapter (and Jinja with it, ~30 ms) opened when the renderer first asks: a
    command that renders nothing (a plan with nothing changed) never imports them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: BytecodeStore | None = None

    def _opened(self) -> BytecodeStore:
        if self._cache is None:
            from configcenter.adapters.jinja_cache import BestEffortBytecodeCache

            self._cache = BestEffortBytecodeCache(self.directory)
        return self._cache

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._opened().load_bytecode(bucket)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._opened().dump_bytecode(bucket)


def open_state_cache(directory: Path) -> RecordCache:
    """The deploy repo's state records kept in `directory` by path and blob id (best
    effort: a file that cannot be read or written costs a parse)."""
    from configcenter.adapters.state_cache import StateRecordCache

    return StateRecordCache(directory)


def open_plan_digests(directory: Path, name: str) -> KeptPlanDigests:
    """Each service's plan digests for `name` (a config repo and environment), kept in
    `directory` by all their inputs (best effort: a file that cannot be read costs the
    encoding of every service's values once)."""
    from configcenter.adapters.plan_digests import PlanDigestFile

    return PlanDigestFile(directory, name)


def open_render_cache(directory: Path) -> RenderedStore:
    """Rendered files kept in `directory` by everything they were made of (best effort:
    a pack that cannot be written costs a render next time and one warning)."""
    return _RenderedOnFirstUse(directory)


class _RenderedOnFirstUse:
    """The adapter (its module imports Jinja) opened on the first record asked for or kept;
    `save` of one never opened has nothing to keep."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._store: RenderedStore | None = None

    def _opened(self) -> RenderedStore:
        if self._store is None:
            from configcenter.adapters.rendered_cache import RenderedFilesCache

            self._store = RenderedFilesCache(self.directory)
        return self._store

    def get(self, group: str, key: str) -> Mapping[str, bytes] | None:
        return self._opened().get(group, key)

    def put(self, group: str, key: str, files: Mapping[str, bytes]) -> None:
        self._opened().put(group, key, files)

    def save(self) -> None:
        if self._store is not None:
            self._store.save()


def open_registry(access: RegistryAccess) -> Registry:
    """The project's image registry (one adapter: the OCI distribution API)."""
    from configcenter.adapters.oci_registry import OciRegistry

    return OciRegistry(access.host, insecure=access.insecure, credentials=access.credentials)


def open_load_store(directory: Path) -> LoadStore:
    """Config loads kept in `directory` between runs, used again only while all they read
    is unchanged (configcenter.core.load_trace)."""
    from configcenter.adapters.load_store import DiskLoadStore

    return DiskLoadStore(directory)


def open_config_repo(root: Path) -> ConfigRepo:
    """The config repo checkout at `root` as the core reads it (Git optional)."""
    from configcenter.adapters.git_config_repo import GitConfigRepo

    return GitConfigRepo(root)


def open_deploy_repo(
    url: str,
    branch: str,
    *,
    timeout: float | None = None,
    plan_timeout: float | None = None,
    read_only: bool = False,
) -> DeployRepo:
    """The deploy repo at `url` (one adapter: Git with a local cache of `branch`).

    `timeout` / `plan_timeout` bound git's network steps (None: the adapter's
    defaults); a `read_only` command (plan) uses `plan_timeout`.
    """
    from configcenter.adapters.git_deploy_repo import (
        DEFAULT_NETWORK_TIMEOUT,
        DEFAULT_PLAN_NETWORK_TIMEOUT,
        GitDeployRepo,
    )

    network = (
        plan_timeout or DEFAULT_PLAN_NETWORK_TIMEOUT
        if read_only
        else timeout or DEFAULT_NETWORK_TIMEOUT
    )
    return GitDeployRepo(url, branch, network_timeout=network)


def open_source_checkouts(cache_root: Path) -> SourceCheckouts:
    """Build sources as bare Git mirrors kept under `cache_root` (one adapter)."""
    from configcenter.adapters.source_checkout import GitSourceCheckouts

    return GitSourceCheckouts(cache_root)


def open_config_git(
    root: Path,
    error: Callable[[str], Exception],
    *,
    work_branch_prefix: str = "",
    prompt: bool = False,
) -> ConfigGit:
    """git in the config repo checkout at `root`; failures are raised as `error(message)`."""
    from configcenter.adapters.config_git import ConfigGit

    return ConfigGit(root, error, work_branch_prefix=work_branch_prefix, prompt=prompt)


def open_config_lineage(root: Path) -> ConfigLineage:
    """The history of the config repo checkout at `root`, for apply's guard (Git)."""
    from configcenter.adapters.git_lineage import GitLineage

    return GitLineage(root)


def open_lease_leader(
    identity: str,
    namespace: str,
    name: str,
    *,
    kubeconfig: str | None = None,
    duration: float = 15.0,
) -> Leadership:
    """serve's leader election on a Kubernetes Lease `namespace/name` (one adapter)."""
    from configcenter.adapters.k8s_lease import LeaseLeader

    return LeaseLeader(identity, namespace, name, kubeconfig=kubeconfig, duration=duration)


def resolve_secret(ref: str, redactor: Redactor) -> str:
    """The value an `env:` or `file:` reference points at, registered for masking first.

    Raises `SecretError` (naming the reference, never a value) when it cannot be read.
    """
    from configcenter.adapters.secrets import resolve_secret as resolve

    return resolve(ref, on_resolved=redactor.register)


__all__ = [
    "SecretError",
    "UnknownKind",
    "check_config_files",
    "entry",
    "factory",
    "open_builder",
    "open_bytecode_cache",
    "open_config_git",
    "open_config_repo",
    "open_deploy_repo",
    "open_forge",
    "open_job_store",
    "open_lease_leader",
    "open_platform",
    "open_registry",
    "open_render_cache",
    "open_run_store",
    "open_source_checkouts",
    "resolve_secret",
    "supports",
]
