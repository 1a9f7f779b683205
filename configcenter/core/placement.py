"""Where a secret may appear in rendered output: only where it can be delivered as a value.

A secret renders as its placeholder; the platform substitutes the value in the
environment (the ENV list, `.env` outputs) and in config files, which it then
delivers through a Secret or the secret store. A placeholder in a platform
descriptor (a Kubernetes manifest, a Marathon app definition) or in a build
input (a Dockerfile) would reach the platform or the image as text, so it is a
validation error at the template line that puts it there.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping

from configcenter.core.errors import Problem, Source
from configcenter.core.model import Template
from configcenter.core.secretrefs import MARKER, has_refs

_BUILD_FILES = ("Dockerfile", "Containerfile")


def misplaced_secret(
    template: Template, files: Mapping[str, bytes], secret_keys: list[str]
) -> Problem | None:
    """The first output that carries a secret where it cannot be delivered safely."""
    for name in sorted(files):
        data = files[name]
        if MARKER.encode() not in data:
            continue
        text = data.decode("utf-8", "replace")
        if not has_refs(text):
            continue
        what = _descriptor(name, text)
        if what is None:
            continue
        return Problem(
            _template_line(template, name, text, secret_keys),
            f"a secret value is rendered into {name}, {what}, where it would reach the "
            "platform as text",
            "use the secret only in the ENV list (env: in template.yaml), an .env output "
            "or a config file: configcenter delivers those through a Secret",
        )
    return None


def _descriptor(name: str, text: str) -> str | None:
    base = posixpath.basename(name)
    if base in _BUILD_FILES or base.endswith(tuple(f".{b}" for b in _BUILD_FILES)):
        return "a build input (it would be baked into the image)"
    if name.endswith((".yaml", ".yml")):
        import yaml  # only when a rendered file is checked (a plan renders none unchanged)

        try:
            docs = list(yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
        except yaml.YAMLError:
            return None
        if any(_is_k8s_object(doc) for doc in docs):
            return "a Kubernetes manifest"
    if name.endswith(".json"):
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        if isinstance(doc, dict) and "id" in doc and ({"container", "cmd", "instances"} & set(doc)):
            return "a Marathon app definition"
    return None


def _is_k8s_object(doc: object) -> bool:
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("apiVersion"), str)
        and isinstance(doc.get("kind"), str)
        and isinstance(doc.get("metadata"), dict)
    )


def _template_line(template: Template, output: str, rendered: str, keys: list[str]) -> Source:
    """The template line that uses a secret: the first expression naming one of `keys`."""
    name = output + ".j2"
    label = f"{template.label}/{name}"
    source = template.tree.read(name)
    if source is not None and keys:
        pattern = re.compile(r"\{\{[^}]*\b(" + "|".join(map(re.escape, keys)) + r"|values)\b")
        for number, line in enumerate(source.decode("utf-8", "replace").splitlines(), 1):
            if pattern.search(line):
                return Source(label, number)
    for number, line in enumerate(rendered.splitlines(), 1):
        if MARKER in line:
            return Source(label, number)
    return Source(label, 1)
