"""Rendering: Jinja2 in a sandbox with StrictUndefined, compiled once per template version.

Compilation dominates a cold render (measured: 5.5 s cold vs 0.23 s with
compiled templates kept), so each template version (keyed by its content id)
gets one Environment whose compiled templates are reused across environments,
and an optional bytecode cache the edge passes in (`wiring.open_bytecode_cache`)
carries them across runs.

Jinja itself (configcenter.core.sandbox, shared_compile) is imported when a template is
first compiled or rendered: a command that renders nothing never loads it.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import re
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from configcenter.core import limits as bounds
from configcenter.core.consumed import CONTEXT_NAMES, Consumption, find_consumption
from configcenter.core.errors import Problem, Source
from configcenter.core.model import Config, ServiceConfig, Template
from configcenter.core.placement import misplaced_secret
from configcenter.core.values import SecretRef

if TYPE_CHECKING:
    import jinja2
    import jinja2.bccache
    from jinja2.sandbox import SandboxedEnvironment

    from configcenter.core.shared_compile import SharedCompile


class RenderError(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


@dataclass(frozen=True)
class Rendered:
    service: str
    files: dict[str, bytes]  # output name -> content


class BytecodeStore(Protocol):
    """Compiled templates kept by the edge between runs (`wiring.open_bytecode_cache`;
    any `jinja2.BytecodeCache` is one)."""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None: ...

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None: ...


class RenderedRecords(Protocol):
    """Rendered files kept by the edge between runs (`wiring.open_render_cache`).

    `key` names everything a render reads (see `Renderer.rendered_key`), so a record can
    never be stale; `group` (project/environment) only says which records go together.
    What renders them (configcenter's code, Jinja, Python) is not in the key: records
    must be kept apart by it (`adapters/rendered_cache.py` keeps one folder per engine).
    """

    def get(self, group: str, key: str) -> Mapping[str, bytes] | None: ...

    def put(self, group: str, key: str, files: Mapping[str, bytes]) -> None: ...


class RenderedStore(RenderedRecords, Protocol):
    """What the edge opens: the records, and `save` to keep this run's for the next."""

    def save(self) -> None: ...


#: Bumped whenever rendering may make other files from the same inputs (a new context
#: name, another check of the rendered files): part of every rendered record's key.
RENDERED_VERSION = 1

#: Set while a template calls something that answers differently each time (the
#: `random` filter, `lipsum`): its files are not kept, the next run renders them again.
_VOLATILE: ContextVar[bool] = ContextVar("configcenter_render_volatile", default=False)


def _volatile(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)  # keeps Jinja's pass_context marker
    def call(*args: Any, **kwargs: Any) -> Any:
        _VOLATILE.set(True)
        return fn(*args, **kwargs)

    return call


#: Bumped whenever `find_consumption` may find other names in the same files; part of the
#: key of every kept consumption record, with the Jinja version and the context names.
CONSUMPTION_VERSION = 1


class Renderer:
    def __init__(
        self,
        bytecode_cache: BytecodeStore | None = None,
        consumption_records: MutableMapping[str, tuple[str, ...]] | None = None,
        rendered_records: RenderedRecords | None = None,
    ) -> None:
        """`consumption_records`: what templates read, kept by the caller between runs (the
        config repo adapter's cache). Keys name a template tree by content, so a record can
        never be stale; without it each run parses every template version it plans.
        `rendered_records`: the files of earlier renders, by everything they were made of
        (a service whose inputs were rendered before is not rendered again)."""
        # Keyed by template label too: byte-identical templates of two services share a tree
        # id, and error locations must name the service's own template files.
        self._environments: dict[tuple[str, str, bounds.Limits], SandboxedEnvironment] = {}
        self._bases: dict[bounds.Limits, SandboxedEnvironment] = {}
        self._consumption: dict[str, Consumption] = {}
        self._records = consumption_records
        self._records_key: str | None = None
        self._rendered = rendered_records
        # Compiled templates kept between runs: the edge opens it (the core writes nothing).
        self._bytecode_store = bytecode_cache

    @functools.cached_property
    def shared_compile(self) -> SharedCompile:
        """Shared by every environment below (all made the same way): one compile per shape."""
        from configcenter.core.shared_compile import SharedCompile

        return SharedCompile()

    @functools.cached_property
    def _bytecode_cache(self) -> jinja2.BytecodeCache | None:
        if self._bytecode_store is None:
            return None
        from configcenter.core.sandbox import BytecodeUnlessShared

        return BytecodeUnlessShared(self._bytecode_store, self.shared_compile)

    def _environment(
        self, template: Template, limits: bounds.Limits = bounds.DEFAULT_LIMITS
    ) -> SandboxedEnvironment:
        key = (template.label, template.tree_id, limits)
        env = self._environments.get(key)
        if env is None:
            from configcenter.core.sandbox import TreeLoader

            # An overlay of one environment per limits: its own loader and template cache,
            # the rest shared (making a sandbox for each of 5,500 template versions was
            # ~0.15 s of a cold validate at 5,000 services).
            env = self._base(limits).overlay(loader=TreeLoader(template, limits))
            self._environments[key] = env
        return env

    def _base(self, limits: bounds.Limits) -> SandboxedEnvironment:
        base = self._bases.get(limits)
        if base is None:
            import jinja2

            from configcenter.core.sandbox import RenderSandbox

            # Immutable: a template must not be able to change the values it is given
            # (values.update(...) would alter digests and later renders).
            base = RenderSandbox(
                self.shared_compile,
                limits,
                undefined=jinja2.StrictUndefined,
                keep_trailing_newline=True,
                autoescape=False,
                bytecode_cache=self._bytecode_cache,
                auto_reload=False,
            )
            base.filters["tojson_compact"] = _tojson_compact
            base.filters["random"] = _volatile(base.filters["random"])
            base.globals["lipsum"] = _volatile(cast(Callable[..., Any], base.globals["lipsum"]))
            self._bases[limits] = base
        return base

    def consumption(self, template: Template) -> Consumption:
        """The value names `template` reads (parsed once per template version)."""
        found = self._consumption.get(template.tree_id)
        if found is None:
            env = self._environment(template)
            key = self._record_key(env, template.tree_id)
            if self._records is not None:
                found = Consumption.from_record(self._records.get(key))
            if found is None:
                found = find_consumption(
                    template, env, lambda source: self.shared_compile.names(env, source)
                )
                if self._records is not None:
                    self._records[key] = tuple(found.to_record())
            self._consumption[template.tree_id] = found
        return found

    def _record_key(self, env: SandboxedEnvironment, tree_id: str) -> str:
        if self._records_key is None:
            import jinja2

            names = sorted(CONTEXT_NAMES | set(env.globals))
            digest = hashlib.sha256("\0".join(names).encode()).hexdigest()[:16]
            self._records_key = f"{CONSUMPTION_VERSION}:{jinja2.__version__}:{digest}"
        return f"{self._records_key}:{tree_id}"

    def render(self, config: Config, service: ServiceConfig, image: str) -> Rendered:
        """The service's files, or the RenderError of the first problem in them."""
        if self._rendered is None:
            return self._render(config, service, image)
        group = f"{config.project.name}/{service.env}"
        key = rendered_key(config, service, image)
        kept = self._rendered.get(group, key)
        if kept is not None:
            return Rendered(service.name, dict(kept))
        token = _VOLATILE.set(False)
        try:
            rendered = self._render(config, service, image)
            volatile = _VOLATILE.get()
        finally:
            _VOLATILE.reset(token)
        if not volatile:
            self._rendered.put(group, key, rendered.files)
        return rendered

    def _render(self, config: Config, service: ServiceConfig, image: str) -> Rendered:
        import jinja2

        limits = config.project.limits
        env = self._environment(service.template, limits)
        context = template_context(config, service, image)
        files: dict[str, bytes] = {}
        for output in service.template.outputs:
            name = output + ".j2"
            try:
                text = bounds.render_bounded(env.get_template(name), context, limits)
            except jinja2.TemplateSyntaxError as exc:
                raise RenderError(
                    Problem(
                        Source(f"{service.template.label}/{exc.name or name}", exc.lineno or 1),
                        f"template syntax error: {exc.message}",
                        "fix the Jinja2 syntax on this line",
                    )
                ) from None
            except jinja2.UndefinedError as exc:
                raise RenderError(
                    Problem(
                        _template_frame(exc, service.template.label, name),
                        f"undefined variable while rendering {service.name} for {service.env}: "
                        f"{exc.message}",
                        _misspelt_value(service, exc.message)
                        + f"add it under values: (and to env: in {service.template.label}"
                        "/template.yaml), or use {{ NAME | default('...') }}",
                    )
                ) from None
            except bounds.TemplateFileError as exc:
                raise RenderError(Problem(exc.source, exc.message, exc.hint)) from None
            except jinja2.TemplateNotFound as exc:
                label = service.template.label
                raise RenderError(
                    Problem(
                        _template_frame(exc, label, name),
                        f"template '{exc.name}' not found while rendering {service.name} for "
                        f"{service.env}: include, import and extends read only the files of "
                        f"{label}",
                        f"name a file of the template, relative to {label} (partials/x.j2)",
                    )
                ) from None
            except jinja2.TemplateError as exc:
                raise RenderError(
                    Problem(
                        _template_frame(exc, service.template.label, name),
                        f"template error while rendering {service.name} for {service.env}: {exc}",
                    )
                ) from None
            except bounds.LimitExceeded as exc:
                raise RenderError(
                    Problem(
                        _template_frame(exc, service.template.label, name),
                        f"{service.name} in {service.env}: {exc}",
                        bounds.LIMIT_HINT,
                    )
                ) from None
            except Exception as exc:  # the template crashed Python: never a traceback
                raise RenderError(
                    Problem(
                        _template_frame(exc, service.template.label, name),
                        f"template failed while rendering {service.name} for {service.env}: "
                        + bounds.describe_crash(exc),
                        "fix the expression on this line",
                    )
                ) from None
            files[output] = text.encode("utf-8")
        too_big = bounds.check_service_output(files, limits)
        if too_big:
            raise RenderError(
                Problem(
                    Source(f"{service.template.label}/template.yaml", 1), too_big, bounds.LIMIT_HINT
                )
            )
        secret_keys = sorted(
            {f"{k}".split(".")[0] for k, v in service.values.tree.items() if _holds_secret(v)}
        )
        if secret_keys:
            misplaced = misplaced_secret(service.template, files, secret_keys)
            if misplaced is not None:
                raise RenderError(misplaced)
        return Rendered(service.name, files)


def _holds_secret(value: Any) -> bool:
    """A secret, or a map holding one among its leaves as `flatten` finds them (lists are
    leaves)."""
    if isinstance(value, SecretRef):
        return True
    return isinstance(value, dict) and any(_holds_secret(v) for v in value.values())


def rendered_key(config: Config, service: ServiceConfig, image: str) -> str:
    """Everything `Renderer.render` reads, as one digest: the template version (its label
    names the files in errors; its tree id covers every file in it), the limits, and the
    whole context (values in their order, secrets as references). `repr` tells apart what
    the YAML loader makes (str, int, float, bool, None, dates, lists, dicts, SecretRef).
    The engine (Jinja's version among it) is the records' keeper's (`RenderedRecords`):
    a render whose files are all kept never imports Jinja."""
    template = service.template
    parts = (
        RENDERED_VERSION,
        template.label,
        template.tree_id,
        template.outputs,
        config.project.limits,
        config.project.name,
        service.env,
        service.name,
        template.tag,
        service.replicas,
        image,
        platform_settings(config, service),
        service.values.tree,
    )
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _misspelt_value(service: ServiceConfig, message: str | None) -> str:
    """The start of an undefined variable's hint: a value whose name is close to it (the
    usual cause is a typo in a values file), with where it is set; else nothing."""
    match = re.fullmatch(r"'([^']+)' is undefined", message or "")
    if match is None:
        return ""
    close = difflib.get_close_matches(match.group(1), [str(k) for k in service.values.tree], n=1)
    if not close:
        return ""
    paths = sorted(path for path in service.values.entries if path[0] == close[0])
    where = str(service.values.entries[paths[0]].source) if paths else ""
    return f"did you mean the value '{close[0]}'" + (f" ({where})" if where else "") + "? or "


def template_context(config: Config, service: ServiceConfig, image: str) -> dict[str, Any]:
    values = service.values.tree
    context: dict[str, Any] = dict(values)
    context.update(
        values=values,
        env=service.env,
        service=service.name,
        project=config.project.name,
        template_tag=service.template.tag,
        replicas=service.replicas,
        image=image,
        platform=platform_settings(config, service),
    )
    return context


def platform_settings(config: Config, service: ServiceConfig) -> dict[str, str]:
    """The service's platform with its settings rendered for the env ({{ env }} etc.)."""
    spec = config.project.platforms.get(service.platform or "")
    if spec is None:
        return {}
    return {
        "name": spec.name,
        "kind": spec.kind,
        **render_setting_map(spec.settings, config, service.env),
    }


def render_setting_map(settings: Mapping[str, str], config: Config, env: str) -> dict[str, str]:
    return dict(_rendered_settings(tuple(settings.items()), env, config.project.name))


@functools.lru_cache(maxsize=256)
def _rendered_settings(
    settings: tuple[tuple[str, str], ...], env: str, project: str
) -> tuple[tuple[str, str], ...]:
    """Once per platform and environment: every service's render and digest asks for them."""
    names = {"env": env, "project": project}
    return tuple((k, _render_setting(v, names) if "{" in v else v) for k, v in settings)


#: A setting that only puts the env or project name into plain text ("shop-{{ env }}"):
#: no other Jinja syntax, no line breaks (Jinja would normalise them and drop a last one).
_PLAIN_SETTING = re.compile(r"(?:[^{}\r\n]|\{\{ *(?:env|project) *\}\})*")
_NAME_IN_SETTING = re.compile(r"\{\{ *(env|project) *\}\}")


def _render_setting(source: str, names: Mapping[str, str]) -> str:
    """What Jinja renders `source` to; the plain ones without Jinja (a plan that renders
    nothing else then never loads it), with the same result."""
    if _PLAIN_SETTING.fullmatch(source):
        return _NAME_IN_SETTING.sub(lambda m: names[m.group(1)], source)
    from configcenter.core.sandbox import setting_template

    return setting_template(source).render(names)


def _template_frame(exc: BaseException, label: str, default: str) -> Source:
    """Jinja rewrites tracebacks so template frames carry the template file and line."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith(label + "/"):
            return Source(frame.filename, frame.lineno or 1)
    return Source(f"{label}/{default}", 1)


def _tojson_compact(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
