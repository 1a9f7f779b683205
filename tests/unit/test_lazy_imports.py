"""Heavy libraries load only in the commands that use them (start-up is paid on every command).

Each check runs a fresh interpreter, since this test session has imported everything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT / "nonexistent-home")},
    ).stdout
    return {line.split(".")[0] for line in out.splitlines()}


def test_a_missing_kubeconfig_is_reported_without_loading_the_kubernetes_client() -> None:
    code = """
from configcenter.adapters.kubernetes import KubernetesPlatform
from configcenter.ports.platform import PlatformError, PlatformTarget
platform = KubernetesPlatform(PlatformTarget("local", "kubernetes", "dev", {"namespace": "n"}))
try:
    platform.client.dynamic()
except PlatformError as exc:
    assert "cannot load kubeconfig ~/.kube/config: no such file" in str(exc), exc
else:
    raise AssertionError("no error")
"""
    assert "kubernetes" not in _modules_after(code)


def test_the_cli_starts_without_rich_or_the_kubernetes_client() -> None:
    """Commands that print JSON (scripts, plan --json) never need rich; only platforms
    that are used load the Kubernetes client."""
    loaded = _modules_after(
        "from configcenter.cli import emit, warn_line\nemit({'probe': 1})\nwarn_line('a warning')\n"
    )
    assert "rich" not in loaded
    assert "kubernetes" not in loaded
