"""Everything a command needs, opened lazily: the config repo, the deploy repo, the run store."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from configcenter.core.errors import ConfigError, ProblemList, UserError
from configcenter.core.load import load_config
from configcenter.core.load_trace import load_config_kept
from configcenter.core.model import Config
from configcenter.core.redact import Redactor
from configcenter.core.render import RenderedStore, Renderer
from configcenter.core.state import EnvState

if TYPE_CHECKING:
    from configcenter.ports.config_repo import ConfigRepo
    from configcenter.ports.deploy_repo import DeployRepo, RecordCache
    from configcenter.ports.plan_digests import KeptPlanDigests
    from configcenter.ports.runstore import Run, RunStore


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def is_remote_url(url: str) -> bool:
    """scheme://... or scp-like [user@]host:path (a ':' before any '/')."""
    return "://" in url or re.match(r"^[^/]+:", url) is not None


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "configcenter"


@dataclass
class Workspace:
    root: Path
    deploy_repo_url: str | None = None  # overrides configcenter.yaml
    run_store_url: str | None = None  # overrides configcenter.yaml / the default SQLite file
    strict: bool = False
    # Commands about one environment load only it: a broken prod file does not block dev,
    # and a plan of one environment does not pay for loading the others.
    focus: tuple[str, ...] | None = None
    # A command that only reads (plan) uses deploy_repo.plan_timeout for git's network steps.
    read_only: bool = False
    # Only these services' files of each environment (history of one service); `()`: the
    # environments' settings alone. A Config loaded so must not be planned or applied.
    services: tuple[str, ...] | None = None

    @cached_property
    def source(self) -> ConfigRepo:
        from configcenter.wiring import open_config_repo

        return open_config_repo(self.root)

    @cached_property
    def problems(self) -> ProblemList:
        return ProblemList()

    @cached_property
    def config(self) -> Config:
        from configcenter.wiring import open_load_store

        try:
            config = load_config_kept(
                self.source,
                open_load_store(cache_home() / "loads"),
                self.problems,
                self.focus,
                self.services,
            )
        finally:
            self.source.save_caches()
        self.problems.raise_if_errors(self.strict)
        return config

    def adopt(self, source: ConfigRepo, problems: ProblemList, config: Config) -> None:
        """Use a config loaded before from the same content (serve keeps them per commit)."""
        self.__dict__.update(source=source, problems=problems, config=config)

    def without_environments_if_broken(self, warn: Callable[[str], None]) -> bool:
        """For commands the deploy repo alone can serve (rollback, history): when an
        environment's files do not load, go on with configcenter.yaml only (deploy
        repo, platforms, run store) after saying what is broken. True when it did.

        A broken configcenter.yaml still raises: without it there is no deploy repo.
        """
        try:
            _ = self.config
        except ConfigError as exc:
            problems = ProblemList()
            config = load_config(self.source, problems, ())
            first = exc.problems[0] if exc.problems else None
            more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
            warn(
                f"the config repo does not load: {first}{more}; going on with the deploy "
                "repo alone (fix the config before the next apply)"
            )
            self.__dict__["config"] = config  # the cached_property's slot
            return True
        return False

    @cached_property
    def redactor(self) -> Redactor:
        """Shared by every adapter: secrets resolved anywhere are masked everywhere."""
        return Redactor()

    @cached_property
    def renderer(self) -> Renderer:
        from configcenter.wiring import open_bytecode_cache

        # The consumption records come with the config repo's disk cache (~1.3 s to read at
        # 5,000 services): read only when a plan first asks what a template consumes.
        return Renderer(
            open_bytecode_cache(cache_home() / "jinja"),
            _Deferred(lambda: self.source.consumption_cache),
            self._rendered_files,
        )

    @cached_property
    def _rendered_files(self) -> RenderedStore:
        from configcenter.wiring import open_render_cache

        return open_render_cache(cache_home() / "rendered")

    def plan_digests(self, env: str) -> KeptPlanDigests:
        """`env`'s plan digests kept between commands (see `core.plan.PlanDigests`)."""
        kept = self._plan_digests.get(env)
        if kept is None:
            from configcenter.wiring import open_plan_digests

            name = f"{self.root.resolve()}\0{env}"
            kept = self._plan_digests[env] = open_plan_digests(cache_home() / "plans", name)
        return kept

    @cached_property
    def _plan_digests(self) -> dict[str, KeptPlanDigests]:
        return {}

    def close(self) -> None:
        """At the end of a command: keep the caches, and close the run store's connection
        (SQLite folds its write-ahead log back into the file only on a clean close; left
        to the collector, a command frozen out of it at exit never closed it)."""
        try:
            self.save_caches()
        finally:
            store = self.__dict__.get("run_store")
            if store is not None:
                store.close()

    def save_caches(self) -> None:
        """Keep for the next run what this one learnt (the config repo's caches, the
        rendered files, the plan digests), if opened."""
        if "source" in self.__dict__:
            self.source.save_caches()
        if "_rendered_files" in self.__dict__:
            self._rendered_files.save()
        for digests in self.__dict__.get("_plan_digests", {}).values():
            digests.save()

    def resolved_deploy_url(self) -> str | None:
        """The deploy repo's URL or absolute path.

        configcenter.yaml's `deploy_repo.url` is relative to the config repo, and so is a
        relative `deploy_repo_url` given here (the CLI makes `--deploy-repo` absolute
        against the current directory before it gets here).
        """
        url = self.deploy_repo_url or self.config.project.deploy_repo_url
        if url is None:
            return None
        if is_remote_url(url) or Path(url).is_absolute():
            return url
        return str((self.root / url).resolve())

    def _check_local_deploy_repo(self, url: str) -> None:
        """A local deploy repo path that does not exist is an error, never an empty repo."""
        if is_remote_url(url) or Path(url).exists():
            return
        from configcenter.ports.deploy_repo import DeployRepoMissing

        create = f"create it with `git init --bare {url}` (configcenter init makes one)"
        if self.deploy_repo_url:
            raise DeployRepoMissing(
                f"deploy repo {url} does not exist (from --deploy-repo / CONFIGCENTER_DEPLOY_REPO)",
                hint="a relative --deploy-repo is relative to the current directory; "
                f"fix the path, or {create}",
            )
        where = self.config.project.doc.source("deploy_repo", "url")
        raise DeployRepoMissing(
            f"deploy repo {url} does not exist (deploy_repo.url "
            f"{self.config.project.deploy_repo_url!r}, relative to the config repo)",
            file=where.file,
            line=where.line,
            hint=f"fix deploy_repo.url or pass --deploy-repo, or {create}",
        )

    @cached_property
    def deploy_repo(self) -> DeployRepo:
        from configcenter.wiring import open_deploy_repo

        url = self.resolved_deploy_url()
        if url is None:
            raise UserError(
                "no deploy repo: set deploy_repo: {url: ...} in configcenter.yaml "
                "or pass --deploy-repo"
            )
        self._check_local_deploy_repo(url)
        project = self.config.project
        return open_deploy_repo(
            url,
            project.deploy_repo_branch,
            timeout=project.deploy_repo_timeout,
            plan_timeout=project.deploy_repo_plan_timeout,
            read_only=self.read_only,
        )

    @cached_property
    def effective_run_store_url(self) -> str:
        """`--run-store`, else configcenter.yaml's run_store.url, else this project's own
        SQLite file (never a store another project writes to)."""
        from configcenter.wiring import default_run_store_url

        project = self.config.project
        return self.run_store_url or project.run_store_url or default_run_store_url(project.name)

    @cached_property
    def run_store(self) -> RunStore:
        from configcenter.wiring import open_run_store

        return open_run_store(self.effective_run_store_url, self.redactor)

    def start_run(
        self,
        kind: str,
        env: str,
        services: Sequence[str],
        trigger: str,
        actor: str,
        details: dict[str, object] | None = None,
    ) -> Run:
        """Record a new run, tagged with this process, after reaping runs whose process died."""
        self.reap_stale_runs(env)
        import socket  # only commands that record runs ask the host name

        owner: dict[str, object] = {"pid": os.getpid(), "host": socket.gethostname()}
        return self.run_store.start(
            kind, env, services, trigger, actor, {**owner, **(details or {})}
        )

    def reap_stale_runs(self, env: str) -> list[str]:
        """Finish as failed the runs left `running` by a process of this host that died.

        A SIGKILLed apply cannot record its own end; without this its run would show
        as running forever. A process on another host, or one still alive, is left alone.
        """
        import socket

        from configcenter.ports.runstore import finish_abandoned

        host = socket.gethostname()

        def dead_process(run: Run) -> str | None:
            pid = run.details.get("pid")
            if run.details.get("host") != host or not isinstance(pid, int) or _pid_alive(pid):
                return None
            return f"the process running it (pid {pid} on {host}) died before it ended"

        return finish_abandoned(
            self.run_store, self.run_store.list(env=env, limit=200), dead_process
        )

    def has_deploy_repo(self) -> bool:
        """Whether a deploy repo is configured (False: none, so nothing was deployed).

        Raises `DeployRepoMissing` when it is a local path where nothing exists: a plan
        or history read from it would be a guess, not what was deployed.
        """
        url = self.resolved_deploy_url()
        if url is None:
            return False
        self._check_local_deploy_repo(url)
        return True

    def read_state(self, env: str, rev: str | None = None) -> EnvState:
        """The env's state record; empty when the deploy repo, branch or env does not exist yet."""
        return self.peek_state(env, rev).copy()

    def peek_state(self, env: str, rev: str | None = None) -> EnvState:
        """`read_state` without the copy: the record this workspace keeps, for callers that
        only read it (the next `read_state` of the same commit starts from it)."""
        if not self.has_deploy_repo():
            return EnvState(env)
        from configcenter.usecases.state_store import read_env_state

        repo = self.deploy_repo
        if rev is not None:
            sha: str | None = rev
        elif self.read_only and self._read_head:
            sha = self._read_head[0]  # a command that only reads reads one deploy repo commit
        else:
            sha = repo.sync()
            if self.read_only:
                self._read_head[:] = [sha]
        if sha is None:
            return EnvState(env)
        # A commit's records never change, so the last state read of each env is kept
        # with its commit: plan and the platform check of the same head parse it once.
        kept = self._states.get(env)
        if kept is None or kept[0] != sha:
            name = f"{self.resolved_deploy_url()}\0{self.config.project.deploy_repo_branch}\0{env}"
            kept = (sha, read_env_state(repo, env, sha, self._record_cache, name))
            self._states[env] = kept
        return kept[1]

    @cached_property
    def _states(self) -> dict[str, tuple[str, EnvState]]:
        return {}

    @cached_property
    def _read_head(self) -> list[str | None]:
        """The deploy repo commit a read-only command synced to first (empty: none yet)."""
        return []

    @cached_property
    def _record_cache(self) -> RecordCache:
        """State records kept between commands by path and blob id (never stale)."""
        from configcenter.wiring import open_state_cache

        return open_state_cache(cache_home() / "state")

    def previous_file(self, rev: str | None = None) -> Callable[[str], bytes | None]:
        """A reader of rendered files at the synced deploy repo head (None when absent)."""
        if not self.has_deploy_repo():
            return _absent
        repo = self.deploy_repo
        if repo.head() is None and rev is None:
            return _absent
        return PreviousFiles(repo, rev)


class _Deferred(MutableMapping[str, tuple[str, ...]]):
    """A mapping opened on first use."""

    def __init__(self, open_mapping: Callable[[], MutableMapping[str, tuple[str, ...]]]) -> None:
        self._open = open_mapping
        self._mapping: MutableMapping[str, tuple[str, ...]] | None = None

    @property
    def _inner(self) -> MutableMapping[str, tuple[str, ...]]:
        if self._mapping is None:
            self._mapping = self._open()
        return self._mapping

    def __getitem__(self, key: str) -> tuple[str, ...]:
        return self._inner[key]

    def __setitem__(self, key: str, value: tuple[str, ...]) -> None:
        self._inner[key] = value

    def __delitem__(self, key: str) -> None:
        del self._inner[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._inner)

    def __len__(self) -> int:
        return len(self._inner)


class PreviousFiles:
    """Rendered files of one deploy repo revision, read in batches.

    The files of the first few services asked for are read service by service (one
    service directory: two git processes); from the next service on, every file under
    the environment is read in one batch, instead of one process per file. A plan that
    changes one service of 5,000 reads its three files, not the 25,000 of the others.
    """

    #: Services read one by one before the whole environment is read at once.
    ONE_BY_ONE = 8

    def __init__(self, repo: DeployRepo, rev: str | None) -> None:
        self.repo = repo
        self.rev = rev
        self._loaded: dict[str, dict[str, bytes]] = {}  # env -> every file under it
        self._services: dict[str, dict[str, bytes]] = {}  # "env/service" -> its files

    def __call__(self, path: str) -> bytes | None:
        env, _, rest = path.partition("/")
        files = self._loaded.get(env)
        if files is not None:
            return files.get(path)
        service = f"{env}/{rest.partition('/')[0]}"
        found = self._services.get(service)
        if found is None:
            if sum(1 for s in self._services if s.startswith(env + "/")) < self.ONE_BY_ONE:
                found = self.repo.read_under([service], self.rev)
                self._services[service] = found
            else:
                paths = self.repo.list_files(env, self.rev)
                files = self.repo.read_many(paths, self.rev) if paths else {}
                self._loaded[env] = files
                return files.get(path)
        return found.get(path)


def _absent(path: str) -> bytes | None:
    return None
