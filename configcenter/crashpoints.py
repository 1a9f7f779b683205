"""Named crash points, so tests can kill a real process between any two steps.

Crash-safety claims ("a crash at any step leaves the repo before or after the
commit") are only worth something if every step boundary is actually tested.
Code marks its boundaries with ``crash_point("area.step")``; a test runs the real
code in a child process with the variables of ``crash_env(name)``, and the child
dies with SIGKILL right there: no cleanup handlers, no flushing, exactly like a
power cut or OOM kill of that process.

Arming takes two variables: ``CONFIGCENTER_CRASH_AT`` naming the point, and
``CONFIGCENTER_CRASH_TESTING`` set to the exact value ``ARM_VALUE``, which only
the test helpers write. One stray ``CONFIGCENTER_CRASH_AT`` left in a production
shell is ignored, with a warning, instead of killing an apply half-way.
"""

from __future__ import annotations

import logging
import os
import signal

CRASH_ENV = "CONFIGCENTER_CRASH_AT"
ARM_ENV = "CONFIGCENTER_CRASH_TESTING"
ARM_VALUE = "i-am-a-test-and-want-this-process-killed"

_warned: list[str] = []


def crash_env(point: str) -> dict[str, str]:
    """The environment variables that make a child process die at crash point `point`."""
    return {CRASH_ENV: point, ARM_ENV: ARM_VALUE}


def crash_point(name: str) -> None:
    """Die with SIGKILL here when armed (see the module docstring) for ``name``."""
    wanted = os.environ.get(CRASH_ENV)
    if wanted is None:
        return
    if os.environ.get(ARM_ENV) != ARM_VALUE:
        if not _warned:
            _warned.append(wanted)
            logging.getLogger("configcenter").warning(
                "%s is set but crash injection is not armed (a test-only switch); ignoring it",
                CRASH_ENV,
            )
        return
    if wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)
