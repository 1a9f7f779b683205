"""The environment every git command configcenter starts runs in.

A git hook (or an alias, or `git rebase --exec`) runs its commands with variables that
point git at *its* repository: GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE, the object
directories, and in a pre-receive hook the quarantine. configcenter started from such a
hook must not inherit them: each of its git commands names the repository it means
(`-C`, `--git-dir`, a working directory), and these variables would silently win over
that, reading (or writing the index of) another repository. They are the repository-local
variables git itself clears when it runs a command in another repository
(`git rev-parse --local-env-vars`), except the config ones (`git -c` settings and
GIT_CONFIG_COUNT, e.g. credentials a CI job gives), plus the quarantine and namespace.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: Variables that would point a git command at some other repository, index or objects.
GIT_LOCATION_VARS = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_IMPLICIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_GRAFT_FILE",
        "GIT_SHALLOW_FILE",
        "GIT_REPLACE_REF_BASE",
        "GIT_NO_REPLACE_OBJECTS",
        "GIT_PREFIX",
        "GIT_INTERNAL_SUPER_PREFIX",
        "GIT_NAMESPACE",
        "GIT_QUARANTINE_PATH",
    }
)


def git_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """`base` (the process environment by default) without the git location variables,
    with GIT_OPTIONAL_LOCKS=0 and `extra` added: the `env=` of every git command
    configcenter runs.

    GIT_OPTIONAL_LOCKS=0: configcenter's `git status` (apply's guard, serve's look at its
    checkout every few seconds) only asks; left to itself, status also refreshes the
    index and takes `.git/index.lock` to do so, and a person's (or a test's) `git add` or
    `git commit` in the same checkout at that moment fails with "index.lock: File
    exists". git documents the variable for exactly such background readers."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k not in GIT_LOCATION_VARS}
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env.update(extra)
    return env
