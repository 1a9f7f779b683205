"""A separate process for the lock and crash tests: the real adapter, no test hooks.

``hold URL BRANCH CACHE [EXPIRY]``: take the lock, print "locked", hold it until stdin
closes.
``apply URL BRANCH CACHE SPEC``: what the apply use case does with the deploy repo:
under the lock, sync, commit the change set on the head, push, and on a rejected
push sync and try again. SPEC is a JSON file: {"message": ..., "changes": {path:
text or null}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from configcenter.adapters.git_deploy_repo import GitDeployRepo


def main(argv: list[str]) -> int:
    mode, url, branch, cache = argv[:4]
    if mode == "hold":
        repo = GitDeployRepo(url, branch, cache, lock_expiry=float(argv[4]) if argv[4:] else 600)
        with repo.lock(timeout=30):
            print("locked", flush=True)
            sys.stdin.read()
        return 0
    repo = GitDeployRepo(url, branch, cache)
    spec = json.loads(Path(argv[4]).read_text())
    changes = {k: None if v is None else v.encode() for k, v in spec["changes"].items()}
    with repo.lock(timeout=30):
        for _attempt in range(10):
            head = repo.sync()
            sha = repo.commit(changes, spec["message"], head)
            if sha is None or repo.push(sha):
                print(json.dumps({"head": sha or head}), flush=True)
                return 0
    print("push rejected 10 times in a row", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
