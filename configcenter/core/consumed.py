"""What a service consumes: its ENV list plus the names its templates reference.

Only these values count for the service's plan, values digest and releases, so
a shared key in `_env.yaml` that no template of a service uses is no change for
it (no release, no commit, no restart). Names are found from the Jinja AST
(`jinja2.meta`), following `include`/`import`/`extends`; a template that uses
`values` as a whole, or includes a template chosen at render time, consumes
everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from configcenter.core.model import Template

if TYPE_CHECKING:  # Jinja is imported by the function that parses templates
    import jinja2

#: Names the engine puts in every template's context besides the values.
CONTEXT_NAMES = frozenset(
    {"values", "env", "service", "project", "template_tag", "replicas", "image", "platform"}
)
#: Recorded in the state instead of a name list when a service consumes every value.
EVERYTHING = "*"


@dataclass(frozen=True)
class Consumption:
    """The value names one template version reads; `everything` when it reads `values` whole."""

    names: frozenset[str]
    everything: bool = False

    def select(self, tree: Mapping[str, Any]) -> dict[str, Any]:
        """The part of a merged value tree this service consumes."""
        if self.everything:
            return dict(tree)
        return {key: tree[key] for key in tree if key in self.names}

    def covers(self, key: str) -> bool:
        return self.everything or key in self.names

    def to_record(self) -> list[str]:
        return [EVERYTHING] if self.everything else sorted(self.names)

    @classmethod
    def from_record(cls, record: Iterable[str] | None) -> Consumption | None:
        if record is None:
            return None
        names = [str(name) for name in record]
        if EVERYTHING in names:
            return cls(frozenset(), True)
        return cls(frozenset(names))


#: What one template source reads: (undeclared variables, referenced templates), or None
#: when the caller should parse it with Jinja itself.
NameFinder = Callable[[str], "tuple[frozenset[str], tuple[str | None, ...]] | None"]


def find_consumption(
    template: Template, environment: jinja2.Environment, names_of: NameFinder | None = None
) -> Consumption:
    """Parse every output of `template` (and what they include) for the names they read.

    `names_of` may answer for a source without parsing it (the renderer's shared
    compile knows them per shape of source); the answer must be `jinja2.meta`'s."""
    import jinja2
    from jinja2 import meta

    names: set[str] = set(template.env_keys)
    names.update(str(arg) for arg in (template.build or {}).get("args") or [])
    ignored = CONTEXT_NAMES | set(environment.globals)
    pending = [output + ".j2" for output in template.outputs]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        data = template.tree.read(name)
        if data is None:
            continue  # rendering reports the missing template with its file
        try:
            text = data.decode("utf-8")
            found = names_of(text) if names_of is not None else None
            if found is None:
                ast = environment.parse(text, name)
                found = (
                    frozenset(meta.find_undeclared_variables(ast)),
                    tuple(meta.find_referenced_templates(ast)),
                )
        except (UnicodeDecodeError, jinja2.TemplateSyntaxError):
            continue  # rendering reports it with its file and line
        used, referenced_templates = found
        if "values" in used:
            return Consumption(frozenset(), True)
        names.update(used - ignored)
        for referenced in referenced_templates:
            if referenced is None:
                return Consumption(frozenset(), True)
            pending.append(referenced)
    return Consumption(frozenset(names))
