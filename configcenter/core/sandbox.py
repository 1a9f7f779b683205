"""Jinja's side of rendering: the bounded sandbox and what the renderer plugs into it.

Everything here subclasses or builds Jinja objects, so importing this module imports
Jinja (~30 ms). `configcenter.core.render` imports it only when a template is compiled
or rendered: commands that render nothing (a plan with nothing changed) never load Jinja.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, MutableMapping
from types import CodeType
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.bccache
from jinja2.sandbox import ImmutableSandboxedEnvironment

from configcenter.core.limits import DEFAULT_LIMITS, LimitExceeded, Limits, human_size
from configcenter.core.limits import template_source as _template_source

if TYPE_CHECKING:
    from configcenter.core.model import Template
    from configcenter.core.render import BytecodeStore
    from configcenter.core.shared_compile import SharedCompile

_SIZE_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with size checks on the operations that build big values cheaply.

    `'a' * 10**10`, `[0] * 10**9`, `10 ** 10**8` and `'x'.ljust(10**10)` are refused
    before they allocate; `tojson` renders secret references as their placeholder.
    """

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, limits: Limits = DEFAULT_LIMITS, **options: Any) -> None:
        super().__init__(**options)
        self.limits = limits
        self.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": str}
        self.filters["center"] = self._guard_width(self.filters["center"], "center")
        self.filters["indent"] = self._guard_width(self.filters["indent"], "indent")

    def _too_big(self, what: str, size: int) -> LimitExceeded:
        return LimitExceeded(
            f"{what} would make {size} characters, over the output limit of "
            f"{human_size(self.limits.output_file_bytes)} (limits.output_size)"
        )

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
                    size = len(seq) * times
                    if size > self.limits.output_file_bytes:
                        raise self._too_big("repeating a value", size)
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            bits = max(abs(left), 2).bit_length() * right
            if bits > 8 * self.limits.output_file_bytes:
                raise self._too_big("this power", bits // 3)
        return super().call_binop(context, operator, left, right)

    def call(
        __self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any
    ) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes) and getattr(__obj, "__name__", "") in _SIZE_METHODS:
            for arg in (*args, *kwargs.values()):
                if isinstance(arg, int) and arg > __self.limits.output_file_bytes:
                    raise __self._too_big(f"{__obj.__name__}({arg})", arg)
        return super().call(__context, __obj, *args, **kwargs)

    def _guard_width(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            for arg in (*args[1:], *kwargs.values()):
                if isinstance(arg, int) and arg > self.limits.output_file_bytes:
                    raise self._too_big(f"{name}({arg})", arg)
            return fn(*args, **kwargs)

        return guarded


class TreeLoader(jinja2.BaseLoader):
    """Loads templates from one template version; names are paths inside templates/<svc>/."""

    def __init__(self, template: Template, limits: Limits) -> None:
        self.template = template
        self.limits = limits

    def get_source(
        self, environment: jinja2.Environment, name: str
    ) -> tuple[str, str, Callable[[], bool]]:
        data = self.template.tree.read(name)
        if data is None:
            raise jinja2.TemplateNotFound(name)
        return (
            _template_source(data, f"{self.template.label}/{name}", self.limits),
            (f"{self.template.label}/{name}"),
            lambda: True,
        )


class RenderSandbox(BoundedSandbox):
    """The bounded sandbox, compiling through the renderer's `SharedCompile`: copies of a
    template that differ only in their text are compiled once (see core/shared_compile.py)."""

    def __init__(self, shared: SharedCompile, limits: Limits, **options: Any) -> None:
        super().__init__(limits, **options)
        self._shared = shared

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        # A dict, not Jinja's ChainMap over the environment's globals (walked twice in Python
        # by every render, ~20 us): the renderer sets those before it loads any template and
        # never changes them after, so a copy sees the same names.
        return {**self.globals, **(d or {})}

    # Jinja declares compile() with overloads on `raw`; this one keeps its signature.
    def compile(  # type: ignore[override]
        self,
        source: str | jinja2.nodes.Template,
        name: str | None = None,
        filename: str | None = None,
        raw: bool = False,
        defer_init: bool = False,
    ) -> str | CodeType:
        code = None
        if isinstance(source, str) and name is not None and not raw and not defer_init:
            code = self._shared.compile(self, source, name, filename)
        self._shared.last_served = code is not None
        if code is not None:
            return code
        return super().compile(source, name, filename, raw, defer_init)  # type: ignore[call-overload]


class BytecodeUnlessShared(jinja2.BytecodeCache):
    """The edge's bytecode cache, for templates compiled on their own (~2 ms each): code the
    shared compile served (~0.1 ms) is cheaper to make again than to write and read back."""

    def __init__(self, inner: BytecodeStore, shared: SharedCompile) -> None:
        self._inner = inner
        self._shared = shared

    def get_bucket(
        self, environment: jinja2.Environment, name: str, filename: str | None, source: str
    ) -> jinja2.bccache.Bucket:
        # Code the shared compile serves is handed to Jinja's loader as the bucket's: no
        # checksums of the source and no file looked for that is never written.
        if isinstance(environment, RenderSandbox):
            code = self._shared.compile(environment, source, name, filename)
            if code is not None:
                bucket = jinja2.bccache.Bucket(environment, "", "")
                bucket.code = code
                return bucket
        return super().get_bucket(environment, name, filename, source)

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._inner.load_bytecode(bucket)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        # Jinja's loader dumps right after the compile of the same template.
        if not self._shared.last_served:
            self._inner.dump_bytecode(bucket)


_SETTINGS_SANDBOX = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)


@functools.lru_cache(maxsize=1024)
def setting_template(source: str) -> jinja2.Template:
    """Compiled once: plans digest every service's platform settings, a compile each cost 0.4 ms."""
    return _SETTINGS_SANDBOX.from_string(source)
