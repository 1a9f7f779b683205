"""git in a config repo checkout, through the git CLI: fetch, worktrees, merges, commits.

The one place configcenter runs git in a config repo: promotion, template
release, the webhook triggers, `configcenter init` and serve (following the
upstream, polling it) open it via `configcenter.wiring.open_config_git`. Errors
are raised as the caller's error type, with any credentials in a remote URL
masked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from configcenter.adapters.git_env import git_env
from configcenter.core.errors import UserError

URL_USERINFO = re.compile(r"(\w+://)[^/@\s]+@")
DEFAULT_IDENTITY = {"name": "configcenter", "email": "configcenter@localhost"}


class ConfigGit:
    """git in a config repo checkout, through the git CLI; failures become `error(message)`.

    `work_branch_prefix` names branches that are never the default one (a checkout
    left on `promote/...` does not make that branch the default). `prompt` lets git
    ask for credentials on the terminal (a user's command); otherwise it never waits.
    """

    def __init__(
        self,
        root: Path,
        error: Callable[[str], Exception] = UserError,
        *,
        work_branch_prefix: str = "",
        prompt: bool = False,
    ) -> None:
        self.root = root
        self.error = error
        self.work_branch_prefix = work_branch_prefix
        self._env = git_env(LC_ALL="C")
        # A user's command may let git ask for credentials; otherwise git never waits on input.
        self._stdin: int | None = None if prompt else subprocess.DEVNULL
        if not prompt:
            self._env["GIT_TERMINAL_PROMPT"] = "0"
        if not self.run("config", "user.email", check=False):
            self._env.update(
                GIT_AUTHOR_NAME=DEFAULT_IDENTITY["name"],
                GIT_AUTHOR_EMAIL=DEFAULT_IDENTITY["email"],
                GIT_COMMITTER_NAME=DEFAULT_IDENTITY["name"],
                GIT_COMMITTER_EMAIL=DEFAULT_IDENTITY["email"],
            )

    def run(
        self, *args: str, check: bool = True, cwd: Path | None = None, timeout: float | None = None
    ) -> str:
        try:
            proc = subprocess.run(
                ["git", *args],
                cwd=cwd or self.root,
                env=self._env,
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout,
                stdin=self._stdin,
            )
        except FileNotFoundError:
            raise self.error(
                "git is not installed: install git (configcenter runs it in the config repo)"
            ) from None
        if check and proc.returncode != 0:
            raise self.error(f"git {args[0]} failed in {cwd or self.root}: {_detail(proc)}")
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def attempt(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run git in the checkout and return what happened, whatever the exit code."""
        return subprocess.run(
            ["git", *args],
            cwd=self.root,
            env=self._env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            stdin=self._stdin,
        )

    def ok(self, *args: str, cwd: Path | None = None, timeout: float | None = None) -> bool:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd or self.root,
            env=self._env,
            capture_output=True,
            check=False,
            timeout=timeout,
            stdin=self._stdin,
        )
        return proc.returncode == 0

    def is_clone(self) -> bool:
        """Whether the checkout is a Git work tree at all (serve also runs on plain dirs)."""
        return (self.root / ".git").exists()

    def current_branch(self) -> str | None:
        """The checked-out branch; None on a detached HEAD."""
        return self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False) or None

    def upstream(self, timeout: float | None = None) -> str | None:
        """The checked-out branch's upstream (`origin/main`); None when it has none."""
        found = self.run(
            "rev-parse",
            "--abbrev-ref",
            "--symbolic-full-name",
            "@{u}",
            check=False,
            timeout=timeout,
        )
        return found or None

    def fetch(self, remote: str, *, force_tags: bool = False, timeout: float | None = None) -> None:
        """Fetch `remote` with its tags (`force_tags`: moved tags too); raises `error`.

        Branches gone from the remote are pruned (tags are not: `--tags` keeps them), so a
        removed `promote/a-to-b` never blocks a new `promote/a-to-b/svc` ("cannot lock ref").
        """
        force = ["--force"] if force_tags else []
        args = ["fetch", "--quiet", "--prune", "--tags", *force, remote]
        proc = self.attempt(*args, timeout=timeout)
        if proc.returncode != 0:
            raise self.error(
                f"git fetch {remote} failed in {self.root}: {_detail(proc)}; check the remote "
                "URL and credentials"
            )

    def fast_forward(self, ref: str, timeout: float | None = None) -> bool:
        """Move the checked-out branch to `ref` if that is a fast-forward; False if not."""
        return self.ok("merge", "--ff-only", "--quiet", ref, timeout=timeout)

    def remote_head(self, remote: str, branch: str, timeout: float | None = None) -> str:
        """The commit `branch` points at on `remote` now (asked over the network)."""
        proc = self.attempt(
            "ls-remote", "--exit-code", remote, f"refs/heads/{branch}", timeout=timeout
        )
        if proc.returncode != 0 or not proc.stdout.split():
            raise self.error(
                f"git ls-remote {remote} refs/heads/{branch} failed in {self.root}: "
                f"{_detail(proc)}; check the remote URL and credentials"
            )
        return proc.stdout.split()[0]

    def checkout_state(self, timeout: float | None = None) -> tuple[str, str] | None:
        """(HEAD commit, every tag with the object it names) when the work tree is exactly
        HEAD: no modified, staged, untracked or ignored file. None otherwise (or no HEAD)."""
        status = self.attempt(
            "status",
            "--porcelain=v2",
            "--branch",
            "--untracked-files=all",
            "--ignored=traditional",
            timeout=timeout,
        )
        if status.returncode != 0:
            return None
        head = ""
        for line in status.stdout.splitlines():
            if not line.startswith("# "):
                return None  # a change, an untracked or an ignored file
            if line.startswith("# branch.oid "):
                head = line.removeprefix("# branch.oid ").strip()
        if not re.fullmatch(r"[0-9a-f]{40,64}", head):
            return None  # "(initial)": no commit yet
        tags = self.attempt(
            "for-each-ref", "--format=%(refname) %(objectname)", "refs/tags", timeout=timeout
        )
        if tags.returncode != 0:
            return None
        return head, tags.stdout

    def has_origin(self) -> bool:
        return "origin" in self.run("remote").split()

    def rev(self, ref: str) -> str | None:
        return (
            self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False) or None
        )

    def default_branch(self) -> str:
        """The remote's HEAD branch (what merge requests target); else the checked-out one."""
        if self.has_origin():
            for line in self.run("ls-remote", "--symref", "origin", "HEAD").splitlines():
                if line.startswith("ref: refs/heads/"):
                    return line.split()[1].removeprefix("refs/heads/")
            local = self.run("symbolic-ref", "--quiet", "refs/remotes/origin/HEAD", check=False)
            if local:
                return local.removeprefix("refs/remotes/origin/")
        current = self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        if current and not (
            self.work_branch_prefix and current.startswith(self.work_branch_prefix)
        ):
            return current
        if self.rev("refs/heads/main"):
            return "main"
        raise self.error(
            f"cannot tell the default branch of {self.root}: check out the default branch "
            "(e.g. git checkout main) or set origin's HEAD"
        )

    def read(self, rev: str, path: str) -> str | None:
        if not self.ok("cat-file", "-e", f"{rev}:{path}"):
            return None
        return subprocess.run(
            ["git", "show", f"{rev}:{path}"],
            cwd=self.root,
            env=self._env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    @contextmanager
    def worktree(self, rev: str) -> Iterator[Path]:
        """A throwaway detached worktree at `rev`, removed however the block ends."""
        holder = Path(tempfile.mkdtemp(prefix="configcenter-promote-"))
        tree = holder / "tree"
        try:
            self.run("worktree", "add", "--detach", "--quiet", str(tree), rev)
            yield tree
        finally:
            self.run("worktree", "remove", "--force", str(tree), check=False)
            shutil.rmtree(holder, ignore_errors=True)
            self.run("worktree", "prune", check=False)

    def commit(self, tree: Path, message: str) -> None:
        """Commit what is staged in worktree `tree` with `message` (hooks skipped)."""
        proc = subprocess.run(
            ["git", "commit", "--quiet", "--no-verify", "-F", "-"],
            cwd=tree,
            env=self._env,
            input=message,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise self.error(f"git commit failed in {tree}: {proc.stderr.strip()}")


def _detail(proc: subprocess.CompletedProcess[str]) -> str:
    """What git said, with any credentials in a remote URL masked."""
    detail = proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}"
    return URL_USERINFO.sub(r"\1***@", detail)  # a token in the remote's URL
