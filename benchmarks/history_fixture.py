"""Write many releases of one service into a deploy repo, as `apply --no-rollout` records them.

One `git fast-import` stream of N commits on the deploy repo's branch: each changes the
service's app.env and its state record (a new release, committed and last good) and
carries the trailers apply writes (Configcenter-Env, -Run, -Release). The state records
are encoded by configcenter's own serializer, so the files are what the product writes.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

from configcenter.core.state import EnvState, Release, state_path
from configcenter.ports.deploy_repo import compose_message
from configcenter.usecases.state_store import state_paths


def _git(repo: Path, *args: str, stdin: bytes | None = None, env: dict[str, str]) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={repo}", *args], input=stdin, capture_output=True, check=True, env=env
    ).stdout


def _read_state(repo: Path, env_name: str, head: str, env: dict[str, str]) -> EnvState:
    """The env's state at `head`, as configcenter reads it."""
    listing = _git(repo, "ls-tree", "-r", "-z", head, "--", *state_paths(env_name), env=env)
    names = [r.partition(b"\t")[2].decode() for r in listing.split(b"\0") if r]
    out = _git(
        repo,
        "cat-file",
        "--batch",
        stdin=b"".join(f"{head}:{n}\n".encode() for n in names),
        env=env,
    )
    files: dict[str, bytes] = {}
    pos = 0
    for name in names:  # "<id> blob <size>\n<content>\n" per request
        end = out.index(b"\n", pos)
        size = int(out[pos:end].split()[2])
        files[name] = out[end + 1 : end + 1 + size]
        pos = end + 2 + size
    return EnvState.from_files(env_name, files, f"{repo} at {head[:10]}")


def _quote(path: str) -> bytes:
    return b'"' + path.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def add_releases(
    repo: Path, env_name: str, service: str, count: int, *, env: dict[str, str] | None = None
) -> None:
    """Append `count` release commits of `service` in `env_name` to branch main of `repo`."""
    env = dict(env or os.environ)
    head = _git(repo, "rev-parse", "refs/heads/main", env=env).decode().strip()
    state = _read_state(repo, env_name, head, env)
    record = state.services[service]
    app_env_path = f"{env_name}/{service}/app.env"
    base = _git(repo, "cat-file", "blob", f"{head}:{app_env_path}", env=env)
    stream: list[bytes] = []
    stamp = 1_800_000_000
    for n in range(1, count + 1):
        run_id = f"2027-01-15T00:00:00.{n:06d}Z-bench{n:06d}"
        release = Release(
            id=f"{service}-20270115.{n:06d}-b{n:05d}",
            outcome="committed",
            at=f"2027-01-15T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z",
            run=run_id,
            template_tag=record.template_tag,
            image=record.image,
            values_digest=record.values_digest,
            rendered_digest=record.rendered_digest,
            inputs_digest=record.inputs_digest,
        )
        record = replace(record, release=release, last_good=release)
        changes: dict[str, bytes | None] = {app_env_path: base + f"# bench release {n}\n".encode()}
        # What EnvState.changes() writes when one service changed: that service's record
        # (computed directly: diffing every record per commit would dominate the run).
        changes[state_path(env_name, service)] = record.to_json(service)
        message = compose_message(
            f"apply {env_name}: {service} (update: values)",
            f"- {service}: update [values]",
            [
                ("Configcenter-Env", env_name),
                ("Configcenter-Run", run_id),
                ("Configcenter-Release", f"{service} {release.id}"),
            ],
        ).encode()
        ident = f"bench <bench@configcenter.invalid> {stamp + n} +0000".encode()
        stream += [
            b"commit refs/heads/main\n",
            b"author " + ident + b"\n",
            b"committer " + ident + b"\n",
            b"data %d\n" % len(message),
            message + b"\n",
        ]
        if n == 1:
            stream.append(b"from " + head.encode() + b"\n")
        for path, data in changes.items():
            if data is None:
                stream.append(b"D " + _quote(path) + b"\n")
            else:
                stream += [b"M 100644 inline " + _quote(path) + b"\n", b"data %d\n" % len(data)]
                stream += [data, b"\n"]
        stream.append(b"\n")
    stream.append(b"done\n")
    _git(repo, "fast-import", "--quiet", "--done", stdin=b"".join(stream), env=env)
