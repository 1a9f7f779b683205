"""Limits on what a config repo can make configcenter do (the sandbox that holds them while
templates render is configcenter.core.sandbox).

Anyone who can commit to the config repo runs code here (Jinja templates) and feeds
the parsers (YAML): under `serve` on every push. Every limit below turns a bomb into
one clear error at a file and line, never a hang, a traceback or a machine out of
memory. Defaults fit real config repos with a wide margin; `limits:` in
configcenter.yaml changes them within the hard bounds (`BOUNDS`).

How the render deadline holds even for pure-Python loops: a single watchdog thread
keeps the deadline of every template being rendered; when one passes, it raises
`RenderDeadline` inside the rendering thread (CPython's PyThreadState_SetAsyncExc),
which the interpreter delivers between two bytecodes of whatever that thread runs,
a `for` loop of Jinja's compiled code included. One long C call (a single huge sort)
finishes first; those are bounded by the size checks instead.
"""

from __future__ import annotations

import heapq
import itertools
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from configcenter.core.errors import Source

if TYPE_CHECKING:  # Jinja is imported where templates render (configcenter.core.sandbox)
    import jinja2

KiB = 1024
MiB = 1024 * KiB

#: Nothing in the config repo is read past this size, whatever configcenter.yaml says.
HARD_MAX_FILE_BYTES = 64 * MiB


@dataclass(frozen=True)
class Limits:
    yaml_file_bytes: int = 512 * KiB  # one YAML file of the config repo
    yaml_nodes: int = 50_000  # nodes of one YAML document, each use of an alias counted again
    yaml_depth: int = 64  # nesting of mappings and lists in one YAML document
    template_file_bytes: int = 1 * MiB  # one template source (*.j2, template.yaml)
    output_file_bytes: int = 1 * MiB  # one rendered file (a ConfigMap holds at most 1 MiB)
    service_output_bytes: int = 4 * MiB  # every rendered file of one service together
    render_seconds: float = 10.0  # rendering one template file


DEFAULT_LIMITS = Limits()

#: configcenter.yaml key -> (Limits field, kind, lowest, highest).
SETTINGS: dict[str, tuple[str, str, float, float]] = {
    "yaml_file_size": ("yaml_file_bytes", "size", 1 * KiB, HARD_MAX_FILE_BYTES),
    "yaml_nodes": ("yaml_nodes", "count", 100, 5_000_000),
    "yaml_depth": ("yaml_depth", "count", 4, 200),
    "template_size": ("template_file_bytes", "size", 1 * KiB, HARD_MAX_FILE_BYTES),
    "output_size": ("output_file_bytes", "size", 1 * KiB, HARD_MAX_FILE_BYTES),
    "service_output_size": ("service_output_bytes", "size", 1 * KiB, 256 * MiB),
    "render_timeout": ("render_seconds", "duration", 0.1, 600.0),
}
assert {f for f, _, _, _ in SETTINGS.values()} == {f.name for f in fields(Limits)}

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB|k|M|G)?\s*$")
_UNITS = {
    None: 1,
    "B": 1,
    "KiB": KiB,
    "MiB": MiB,
    "GiB": 1024 * MiB,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "k": KiB,
    "M": MiB,
    "G": 1024 * MiB,
}


def parse_size(raw: object) -> int:
    """512KiB, 1MiB, 1000000 -> bytes; ValueError with what is accepted."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    match = _SIZE.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise ValueError(f"{str(raw)[:40]!r} is not a size; write it like 512KiB, 4MiB or 100000")
    return int(match.group(1)) * _UNITS[match.group(2)]


def human_size(n: float) -> str:
    for unit, size in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{int(n // size)} {unit}"
    return f"{int(n)} bytes"


class LimitExceeded(Exception):
    """A limit was hit while rendering; the message says which and how to change it."""


LIMIT_HINT = (
    "make the template produce less (or loop less); if this is really needed, raise the limit "
    "under limits: in configcenter.yaml"
)


class TemplateFileError(Exception):
    """A template source that cannot be used as it is: too large, or not UTF-8."""

    def __init__(self, source: Source, message: str, hint: str) -> None:
        self.source = source
        self.message = message
        self.hint = hint
        super().__init__(f"{source}: {message}")


def template_source(data: bytes, label: str, limits: Limits) -> str:
    """A template file's text, checked for size and encoding (the error names the file)."""
    if len(data) > limits.template_file_bytes:
        raise TemplateFileError(
            Source(label, 1),
            f"template is {len(data)} bytes, over the limit of "
            f"{human_size(limits.template_file_bytes)} (limits.template_size)",
            "split it, or raise limits.template_size in configcenter.yaml",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TemplateFileError(
            Source(label, line),
            f"template is not UTF-8 text (byte 0x{data[exc.start]:02x} on this line)",
            "save the file as UTF-8",
        ) from None


class RenderDeadline(BaseException):
    """Raised inside a rendering thread by the watchdog (a BaseException, so no
    `except Exception` inside Jinja or a filter can swallow it)."""


# -- the render deadline ----------------------------------------------------------------------


class _Watchdog:
    """One daemon thread for the whole process; deadlines are (when, token, thread id)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, int]] = []
        self._armed: set[int] = set()
        self._fired: set[int] = set()
        self._tokens = itertools.count(1)
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        token = next(self._tokens)
        entry = (time.monotonic() + seconds, token, threading.get_ident())
        with self._lock:
            heapq.heappush(self._heap, entry)
            self._armed.add(token)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="configcenter-render-deadline", daemon=True
                )
                self._thread.start()
            # Wake the watchdog only when this deadline comes first; otherwise it is already
            # waiting for an earlier one (disarmed entries are dropped when they come up).
            if self._heap[0] is entry:
                self._wake.notify()
        return token

    def disarm(self, token: int) -> None:
        """Stop the deadline; one that fired but was not delivered yet is withdrawn."""
        with self._lock:
            self._armed.discard(token)
            if token in self._fired:
                self._fired.discard(token)
                _set_async_exc(threading.get_ident(), None)

    def _run(self) -> None:
        with self._lock:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                when, token, thread_id = self._heap[0]
                delay = when - time.monotonic()
                if delay > 0:
                    self._wake.wait(timeout=delay)
                    continue
                heapq.heappop(self._heap)
                self._armed.discard(token)
                self._fired.add(token)
                _set_async_exc(thread_id, RenderDeadline)


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    import ctypes  # only when a render runs past its deadline (~5 ms of every start-up)

    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


_WATCHDOG = _Watchdog()


def with_deadline(seconds: float, fn: Callable[[], str]) -> str:
    """fn(), stopped with LimitExceeded when it runs past `seconds` (pure-Python loops too)."""
    token = _WATCHDOG.arm(seconds)
    try:
        try:
            result = fn()
        finally:
            # A deadline that fired but was not delivered yet is withdrawn: fn finished.
            _WATCHDOG.disarm(token)
    except RenderDeadline:
        # Delivered inside fn, or on the way out before disarm withdrew it.
        _WATCHDOG.disarm(token)
        raise LimitExceeded(
            f"rendering took longer than {seconds:g}s (limits.render_timeout)"
        ) from None
    return result


def render_bounded(template: jinja2.Template, context: Mapping[str, Any], limits: Limits) -> str:
    """Render with the output size and time limits; LimitExceeded when one is hit."""

    def run() -> str:
        pieces: list[str] = []
        size = 0
        generated = template.generate(context)
        # Counted every 64 pieces (a template yields ~50 for a file of 100 lines), not in a
        # Python loop per piece: past the limit by at most 63 pieces before it stops.
        while chunk := list(itertools.islice(generated, 64)):
            size += sum(map(len, chunk))
            if size > limits.output_file_bytes:
                raise LimitExceeded(
                    f"the rendered file is over the output limit of "
                    f"{human_size(limits.output_file_bytes)} (limits.output_size)"
                )
            pieces += chunk
        return "".join(pieces)

    return with_deadline(limits.render_seconds, run)


def check_service_output(files: Mapping[str, bytes], limits: Limits) -> str | None:
    """A message when one service's rendered files together pass the limit."""
    total = sum(len(data) for data in files.values())
    if total > limits.service_output_bytes:
        return (
            f"the rendered files of this service are {total} bytes together, over the limit of "
            f"{human_size(limits.service_output_bytes)} (limits.service_output_size)"
        )
    return None


def describe_crash(exc: BaseException) -> str:
    """A template that crashed Python itself, in one short line (never a traceback)."""
    if isinstance(exc, RecursionError):
        return "recursion too deep (a macro calling itself, or a template including itself?)"
    if isinstance(exc, MemoryError):
        return "out of memory while rendering (a value or loop far too large?)"
    text = str(exc).splitlines()[0] if str(exc) else ""
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
