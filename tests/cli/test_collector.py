"""A command runs with the cycle collector off, and a thread that collects if it runs long."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import atexit, gc, sys, threading
atexit.register(lambda: print("collector", gc.isenabled(),
                              sorted(t.name for t in threading.enumerate())))
sys.argv = ["configcenter", "--help"]
from configcenter.cli import main
main()
"""


def test_a_command_turns_the_cycle_collector_off_and_starts_its_collecting_thread() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout
    assert out.splitlines()[-1] == "collector False ['MainThread', 'configcenter-gc']"
