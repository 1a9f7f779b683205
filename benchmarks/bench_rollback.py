"""How fast a failed rollout is rolled back, on the Kubernetes test bed.

For each failure path, a fresh one-service world is applied healthy, then a
failing release is applied through `apply_env`, and the reporter's callbacks
are timed:

  rollout start   the release is committed and pushed (rollouts begin right after)
  detection       the failure is known (the "rollout of ... failed" message)
  rollback done   the restored release reports healthy
  recorded        apply_env returned (outcome committed to the deploy repo)

Two paths, each against the Deployment's `progressDeadlineSeconds`:

* fail-fast: an image marked never-ready sits in ImagePullBackOff; the
  adapter fails on the pod's waiting reason, long before the deadline.
* deadline: pods labelled never-ready never become ready; the controller
  reports ProgressDeadlineExceeded after the deadline.

Usage: .venv/bin/python benchmarks/bench_rollback.py [--rounds N] [--deadline S]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configcenter.ports.platform import RolloutStatus  # noqa: E402
from configcenter.usecases.apply import ApplyOptions, Reporter, apply_env  # noqa: E402
from tests.support import k8s_testbed  # noqa: E402
from tests.support.e2e_fixtures import SECRET_ENV  # noqa: E402
from tests.support.rollout_fixtures import (  # noqa: E402
    SENTINEL,
    make_rollout_world,
    set_service,
    workspace,
)


@dataclass
class Timing(Reporter):
    """Monotonic timestamps of the moments the benchmark cares about."""

    start: float = 0.0
    rollout_start: float | None = None
    detected: float | None = None
    back: float | None = None
    lines: list[str] = field(default_factory=list)

    def message(self, text: str) -> None:
        self.lines.append(text)
        if "committed" in text and "pushed" in text and self.rollout_start is None:
            self.rollout_start = time.monotonic()
        if " failed (" in text and "rollout of" in text and self.detected is None:
            self.detected = time.monotonic()

    def rollout(self, service: str, status: RolloutStatus) -> None:
        now = time.monotonic()
        if self.detected is not None and status.state == "healthy" and self.back is None:
            self.back = now


def one_round(base: Path, kubeconfig: Path, path: str, deadline: int) -> dict[str, float | str]:
    root = base / uuid.uuid4().hex[:8]
    os.environ["XDG_STATE_HOME"] = str(root / "state")
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    world = make_rollout_world(
        root,
        namespace=f"bench-{path}-{uuid.uuid4().hex[:6]}",
        kubeconfig=kubeconfig,
        services=("worker",),
        progress_deadline=deadline,
        replicas={"worker": 2},
    )
    first = apply_env(workspace(world), "dev", ApplyOptions())
    assert first.exit_code == 0, [r.__dict__ for r in first.results]
    if path == "fail-fast":
        set_service(world, "worker", image="registry.test/shop/worker:9-never-ready")
    else:
        set_service(world, "worker", NEVER_READY="true")
    timing = Timing(start=time.monotonic())
    result = apply_env(workspace(world), "dev", ApplyOptions(), timing)
    end = time.monotonic()
    [outcome] = result.results
    row: dict[str, float | str] = {"outcome": outcome.outcome, "reason": outcome.reason[:60]}
    if timing.rollout_start is not None and timing.detected is not None:
        row["detect"] = timing.detected - timing.rollout_start
    if timing.detected is not None and timing.back is not None:
        row["rollback"] = timing.back - timing.detected
        row["record"] = end - timing.back
    row["total"] = end - timing.start
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--deadline", type=int, default=10, help="progressDeadlineSeconds, deadline path"
    )
    parser.add_argument(
        "--fail-fast-deadline", type=int, default=120, help="progressDeadlineSeconds, fail-fast"
    )
    args = parser.parse_args()
    if not k8s_testbed.is_built():
        sys.exit("the Kubernetes test bed is not built: scripts/k8s-testbed build")
    os.environ[SECRET_ENV] = SENTINEL
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp:
        base = Path(tmp)
        bed = k8s_testbed.up(base / "bed", tie_to_parent=True)
        try:
            for path, deadline in (
                ("fail-fast", args.fail_fast_deadline),
                ("deadline", args.deadline),
            ):
                rows = [one_round(base, bed.kubeconfig, path, deadline) for _ in range(args.rounds)]
                print(f"\n{path}: progressDeadlineSeconds={deadline}, {args.rounds} rounds")
                print(f"  {'outcome':<12}{'detect':>9}{'rollback':>10}{'record':>9}{'total':>9}")
                for row in rows:
                    cells = "".join(
                        f"{row[k]:>{w}.2f}" if isinstance(row.get(k), float) else f"{'-':>{w}}"
                        for k, w in (("detect", 9), ("rollback", 10), ("record", 9), ("total", 9))
                    )
                    print(f"  {row['outcome']!s:<12}{cells}   {row['reason']}")
                for key in ("detect", "rollback"):
                    values = [float(r[key]) for r in rows if isinstance(r.get(key), float)]
                    if values:
                        print(
                            f"  {key}: median {statistics.median(values):.2f}s "
                            f"({statistics.median(values) / deadline:.1%} of the deadline)"
                        )
        finally:
            k8s_testbed.down(base / "bed")


if __name__ == "__main__":
    main()
