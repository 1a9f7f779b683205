"""pytest fixtures: the Marathon REST double and adapters pointed at it.

* ``marathon_server``: a `MarathonDouble` (Marathon + DC/OS secret store) on a
  free 127.0.0.1 port; deployments complete after 0.2 s unless a test changes
  ``deploy_seconds``. Pure Python, so it never skips.
* ``marathon_platform``: a factory for `MarathonPlatform` on that server, with a
  short poll interval so rollouts are observed within tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from configcenter.adapters.marathon import MarathonPlatform
from configcenter.ports.platform import PlatformTarget
from tests.support.marathon_double import MarathonDouble

MarathonFactory = Callable[..., MarathonPlatform]


@pytest.fixture
def marathon_server() -> Iterator[MarathonDouble]:
    double = MarathonDouble(deploy_seconds=0.2)
    double.start()
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture
def marathon_platform(marathon_server: MarathonDouble) -> MarathonFactory:
    def make(
        env: str = "dev",
        *,
        settings: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> MarathonPlatform:
        merged = {
            "url": marathon_server.url,
            "group": f"/shop/{env}",
            "secrets_url": f"{marathon_server.url}/secrets/v1",
        }
        merged.update(settings or {})
        kwargs.setdefault("poll_interval", 0.02)
        kwargs.setdefault("retry_delay", 0.01)
        target = PlatformTarget(name="mesos", kind="marathon", env=env, settings=merged)
        return MarathonPlatform(target, **kwargs)

    return make
