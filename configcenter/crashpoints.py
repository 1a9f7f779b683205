"""Named crash points, so tests can kill a real process between any two steps.

Crash-safety claims ("a crash at any step leaves the repo before or after the
commit") are only worth something if every step boundary is actually tested.
Code marks its boundaries with ``crash_point("area.step")``; a test sets
``CONFIGCENTER_CRASH_AT`` to one name and runs the real code in a child process,
which dies with SIGKILL right there: no cleanup handlers, no flushing, exactly
like a power cut or OOM kill of that process.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "CONFIGCENTER_CRASH_AT"


def crash_point(name: str) -> None:
    """Die with SIGKILL here when ``CONFIGCENTER_CRASH_AT`` equals ``name``."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
