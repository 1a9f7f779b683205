"""The forge port without a forge (`forge: {kind: local}`).

Teams without GitLab still promote through a reviewable step: the request is
recorded as a small JSON file under the config repo's
`.git/configcenter/merge-requests/` (inside the Git directory, so it is never
committed or pushed) and its `web_url` is the `git merge` command line that
carries the promotion out. A request counts as merged once its target branch
has moved to contain its source branch, and as closed once its source branch is
gone, so `find_open` stops returning it after the user ran the command.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from configcenter.adapters.git_env import git_env
from configcenter.ports.forge import ForgeContext, ForgeError, MergeRequest, MergeRequestNotFound

RECORD_DIR = Path("configcenter") / "merge-requests"
FORMAT_VERSION = 1


class LocalForge:
    """Merge requests recorded next to a config repo's Git data."""

    def __init__(self, config_repo: Path | str) -> None:
        self.config_repo = Path(config_repo).resolve()
        self._records: Path | None = None
        self._held = threading.local()

    def __repr__(self) -> str:
        return f"LocalForge(config_repo={str(self.config_repo)!r})"

    # -- the port --------------------------------------------------------------------

    def find_open(self, source_branch: str, target_branch: str) -> MergeRequest | None:
        with self._locked():
            return self._find_open(source_branch, target_branch)

    def _find_open(self, source_branch: str, target_branch: str) -> MergeRequest | None:
        for record in self._all_records():
            if (
                record["source_branch"] == source_branch
                and record["target_branch"] == target_branch
                and self._refresh_state(record)["state"] == "opened"
            ):
                return self._to_merge_request(record)
        return None

    def open(
        self,
        source_branch: str,
        target_branch: str,
        title: str,
        description: str,
        labels: Sequence[str],
        draft: bool,
    ) -> MergeRequest:
        check_branches(source_branch, target_branch)
        for branch in (source_branch, target_branch):
            if self._branch_sha(branch) is None:
                raise ForgeError(
                    f"branch {branch!r} does not exist in {self.config_repo}: "
                    "create and commit it before opening the merge request"
                )
        with self._locked():
            existing = self._find_open(source_branch, target_branch)
            if existing is not None:
                return self.update(existing.iid, title, description, labels, draft)
            now = _now()
            record: dict[str, Any] = {
                "version": FORMAT_VERSION,
                "source_branch": source_branch,
                "target_branch": target_branch,
                "title": _check_title(title),
                "description": description,
                "labels": clean_labels(labels),
                "draft": draft,
                "state": "opened",
                # The target's tip when recorded: a merge moves it, which is how
                # "merged" is told apart from "nothing to merge yet".
                "target_sha": self._branch_sha(target_branch),
                "source_sha": self._branch_sha(source_branch),
                "created_at": now,
                "updated_at": now,
                "notes": [],
            }
            record["iid"] = self._create(record)
            return self._to_merge_request(record)

    def update(
        self, iid: int, title: str, description: str, labels: Sequence[str], draft: bool
    ) -> MergeRequest:
        with self._locked():
            record = self._read(iid)
            record.update(
                title=_check_title(title),
                description=description,
                labels=clean_labels(labels),
                draft=draft,
                updated_at=_now(),
            )
            if record["state"] == "opened":
                record["source_sha"] = self._branch_sha(record["source_branch"])
            self._write(record)
            return self._to_merge_request(self._refresh_state(record))

    def get(self, iid: int) -> MergeRequest:
        with self._locked():
            return self._to_merge_request(self._refresh_state(self._read(iid)))

    def add_note(self, iid: int, body: str) -> None:
        check_note(iid, body)
        with self._locked():
            record = self._read(iid)
            record["notes"].append({"body": body, "created_at": _now()})
            record["updated_at"] = _now()
            self._write(record)

    def notes(self, iid: int) -> list[str]:
        """The notes of a request, oldest first (the CLI shows them)."""
        return [note["body"] for note in self._read(iid)["notes"]]

    # -- internals -------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across threads and processes (flock), reentrant per thread.

        Without it two runs promoting the same branches could both see no open
        request and record two.
        """
        depth = getattr(self._held, "depth", 0)
        if depth:
            self._held.depth = depth + 1
            try:
                yield
            finally:
                self._held.depth = depth
            return
        with open(self._records_dir() / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _git(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["git", "-C", str(self.config_repo), *args],
                capture_output=True,
                text=True,
                check=False,
                env=git_env(),
            )
        except FileNotFoundError:
            raise ForgeError("git is not installed: install git to use the local forge") from None

    def _records_dir(self) -> Path:
        if self._records is None:
            result = self._git("rev-parse", "--path-format=absolute", "--git-common-dir")
            if result.returncode != 0:
                raise ForgeError(
                    f"{self.config_repo} is not a Git repository ({result.stderr.strip()}): "
                    "point -C at the config repo"
                )
            self._records = Path(result.stdout.strip()) / RECORD_DIR
        self._records.mkdir(parents=True, exist_ok=True)
        return self._records

    def _branch_sha(self, branch: str) -> str | None:
        result = self._git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}")
        return result.stdout.strip() or None

    def _refresh_state(self, record: dict[str, Any]) -> dict[str, Any]:
        """Work out from the branches whether an open request was merged or dropped."""
        if record["state"] != "opened":
            return record
        # A source branch deleted after the merge still counts as merged:
        # fall back to the source tip recorded at the last open/update.
        source = self._branch_sha(record["source_branch"]) or record["source_sha"]
        target = self._branch_sha(record["target_branch"])
        if (
            target is not None
            and target != record["target_sha"]
            and source is not None
            and (self._git("merge-base", "--is-ancestor", source, target).returncode == 0)
        ):
            state = "merged"
        elif target is None or self._branch_sha(record["source_branch"]) is None:
            state = "closed"
        else:
            state = "opened"
        if state != "opened":
            record.update(state=state, updated_at=_now())
            self._write(record)
        return record

    def _path(self, iid: int) -> Path:
        return self._records_dir() / f"{iid}.json"

    def _all_records(self) -> list[dict[str, Any]]:
        iids = sorted(int(p.stem) for p in self._records_dir().glob("*.json") if p.stem.isdigit())
        return [self._read(iid) for iid in iids]

    def _read(self, iid: int) -> dict[str, Any]:
        path = self._path(iid)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise MergeRequestNotFound(
                f"no local merge request !{iid} in {path.parent}: check the iid "
                "(each request is a <iid>.json file there)"
            ) from None
        except ValueError as error:
            raise ForgeError(
                f"{path} is not valid JSON ({error}): fix or delete the file"
            ) from None
        if not isinstance(data, dict) or data.get("iid") != iid:
            raise ForgeError(f"{path} is not a merge request record: fix or delete the file")
        return data

    def _create(self, record: dict[str, Any]) -> int:
        """Claim the next free iid with a hard link, which fails if the name is taken.

        The record is complete before its name appears, so readers never see half a file.
        """
        directory = self._records_dir()
        taken = [int(p.stem) for p in directory.glob("*.json") if p.stem.isdigit()]
        iid = max(taken, default=0) + 1
        while True:
            tmp = self._write_temp(directory, {**record, "iid": iid})
            try:
                os.link(tmp, directory / f"{iid}.json")
            except FileExistsError:
                iid += 1
                continue
            finally:
                tmp.unlink(missing_ok=True)
            return iid

    def _write(self, record: dict[str, Any]) -> None:
        """Replace the record atomically: readers see the old or the new file, never half."""
        path = self._path(int(record["iid"]))
        tmp = self._write_temp(path.parent, record)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _write_temp(directory: Path, record: dict[str, Any]) -> Path:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle, indent=2, sort_keys=True)
                handle.write("\n")
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name)

    def _merge_command(self, record: dict[str, Any]) -> str:
        repo = shlex.quote(str(self.config_repo))
        target = shlex.quote(record["target_branch"])
        source = shlex.quote(record["source_branch"])
        message = shlex.quote(f"{record['title']} (!{record['iid']})")
        return (
            f"git -C {repo} checkout {target} && git -C {repo} merge --no-ff -m {message} {source}"
        )

    def _to_merge_request(self, record: dict[str, Any]) -> MergeRequest:
        return MergeRequest(
            iid=int(record["iid"]),
            web_url=self._merge_command(record),
            source_branch=record["source_branch"],
            target_branch=record["target_branch"],
            title=record["title"],
            description=record["description"],
            draft=bool(record["draft"]),
            state=record["state"],
            labels=tuple(record["labels"]),
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_title(title: str) -> str:
    if not title.strip():
        raise ForgeError("merge request title is empty: give the promotion a title")
    return title.strip()


# The checks every forge makes before it talks to anything (the GitLab forge
# imports them), so both refuse the same input with the same words.


def check_branches(source_branch: str, target_branch: str) -> None:
    """A merge request into its own source branch could never merge anything."""
    if source_branch == target_branch:
        raise ForgeError(
            f"cannot open a merge request from {source_branch!r} into itself: "
            "promote between two different branches"
        )


def check_note(iid: int, body: str) -> None:
    """An empty comment says nothing on the request and only notifies its watchers."""
    if not body.strip():
        raise ForgeError(f"refusing to add an empty note to merge request !{iid}")


def clean_labels(labels: Sequence[str]) -> list[str]:
    """Labels stripped, blank ones dropped, repeats kept once, first order kept."""
    cleaned: list[str] = []
    for label in labels:
        if label.strip() and label.strip() not in cleaned:
            cleaned.append(label.strip())
    return cleaned


def open_forge(settings: Mapping[str, Any], context: ForgeContext) -> LocalForge:
    """The registry's factory (`configcenter.core.kinds`): requests live in the config repo."""
    return LocalForge(context.config_root)
