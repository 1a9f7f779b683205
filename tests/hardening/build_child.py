"""A child process running one real buildah build with registry credentials (for kill -9).

usage: python -m tests.hardening.build_child ROOT RUNROOT BASE TARGET HOST USER PASSWORD
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from configcenter.adapters.buildah import BuildahBuilder
from configcenter.adapters.oci_registry import RegistryCredentials
from configcenter.ports.builder import BuildRequest


def main() -> None:
    root, runroot, base, target, host, user, password = sys.argv[1:8]
    builder = BuildahBuilder(
        root=Path(root),
        runroot=Path(runroot),
        insecure_registries=frozenset({host, base.split("/", 1)[0]}),
        credentials={host: RegistryCredentials(user, password)},
    )
    context = Path(tempfile.mkdtemp(prefix="ctx-"))
    builder.build_and_push(
        BuildRequest(
            service="slow",
            context_dir=context,
            dockerfile=f"FROM {base}\nRUN sleep 120\n",
            build_args={},
            target=target,
        ),
        log=lambda line: print(line, flush=True),
    )


if __name__ == "__main__":
    main()
