"""Prometheus text exposition (format 0.0.4) for this serve process.

Counters and histograms are per process, the way Prometheus expects replicas
to be scraped; the small set serve needs does not warrant another dependency.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: Labels = ()) -> str:
    items = [*labels, *extra]
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metrics:
    """The serve process's counters, histogram and gauges; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}
        self._gauges: dict[str, dict[Labels, float]] = {}
        self._hist: dict[Labels, list[float]] = {}  # bucket counts, then sum, then count
        self._help = {
            "configcenter_runs_total": ("counter", "Runs serve finished, by kind and outcome."),
            "configcenter_webhook_deliveries_total": (
                "counter",
                "Webhook deliveries received, by source and result.",
            ),
            "configcenter_run_duration_seconds": ("histogram", "Wall time of runs serve ran."),
            "configcenter_recorded_runs_total": (
                "counter",
                "Finished runs the run store records (CLI, serve, every replica), by kind, "
                "outcome and trigger (trigger=cli: command-line runs); the same on every "
                "replica (use max, not sum).",
            ),
            "configcenter_drift": (
                "gauge",
                "Drift entries the last reconcile of each env found (state known, or none at "
                "0); NaN with state unknown when it failed or none has run.",
            ),
            "configcenter_jobs": ("gauge", "Jobs in serve's queue, by state."),
            "configcenter_leader": ("gauge", "1 when this replica runs the schedule."),
            "configcenter_service_status": (
                "gauge",
                "1 for each service's current status (healthy, progressing, failed, rolled_back, "
                "blocked, committed, not_deployed, unknown), 0 for the others.",
            ),
            "configcenter_service_sync": (
                "gauge",
                "1 for each service's drift state (known, none, unknown), 0 for the others.",
            ),
            "configcenter_service_drift_entries": (
                "gauge",
                "Drift entries of each service found by the last reconcile (0 unless known).",
            ),
        }
        self.collectors: list[Callable[[Metrics], None]] = []

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._gauges.setdefault(name, {})[key] = value

    def set_total(self, name: str, value: float, **labels: str) -> None:
        """Set a counter to a total counted elsewhere (the run store's runs)."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._counters.setdefault(name, {})[key] = value

    def clear(self, name: str) -> None:
        """Forget every series of a gauge (before a collector sets the current ones)."""
        with self._lock:
            self._gauges.pop(name, None)

    def observe_duration(self, seconds: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            cell = self._hist.setdefault(key, [0.0] * (len(DURATION_BUCKETS) + 2))
            for index, bound in enumerate(DURATION_BUCKETS):
                if seconds <= bound:
                    cell[index] += 1
            cell[-2] += seconds
            cell[-1] += 1

    def render(self) -> str:
        for collect in self.collectors:
            collect(self)
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in self._help.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                if kind == "counter":
                    lines += self._series(name, self._counters.get(name, {}).items())
                elif kind == "gauge":
                    lines += self._series(name, self._gauges.get(name, {}).items())
                else:
                    for key, cell in sorted(self._hist.items()):
                        for index, bound in enumerate(DURATION_BUCKETS):
                            le = (("le", _number(bound)),)
                            lines.append(f"{name}_bucket{_labels(key, le)} {_number(cell[index])}")
                        inf = (("le", "+Inf"),)
                        lines.append(f"{name}_bucket{_labels(key, inf)} {_number(cell[-1])}")
                        lines.append(f"{name}_sum{_labels(key)} {_number(cell[-2])}")
                        lines.append(f"{name}_count{_labels(key)} {_number(cell[-1])}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _series(name: str, items: Iterable[tuple[Labels, float]]) -> list[str]:
        return [f"{name}{_labels(key)} {_number(value)}" for key, value in sorted(items)]
