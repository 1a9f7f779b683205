"""Writing a promotion's pins into the target's service file, and what they need.

The pins go into `environments/<to>/<service>.yaml` with ruamel.yaml round-trip
editing, so the target file keeps its comments, order and values.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import yaml

from configcenter.core.model import HEAD
from configcenter.core.promotion import Pin, PromotionError
from configcenter.usecases.workspace import Workspace

if TYPE_CHECKING:
    from ruamel.yaml import YAML


def _yaml() -> YAML:
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap a user's long lines
    return y


def pin_file(text: str, pin: Pin, rel: str) -> str:
    """`text` (a service file) with the pins of `pin`; unchanged text when nothing differs."""
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.error import YAMLError

    y = _yaml()
    try:
        data = y.load(text)
    except YAMLError as error:
        raise PromotionError(f"{rel} is not valid YAML ({error}): fix it, then promote") from None
    if not isinstance(data, CommentedMap):
        raise PromotionError(f"{rel} is not a mapping: it must hold template:, image:, values:")
    changed = False
    if str(data.get("template")) != pin.template:
        data["template"] = pin.template
        changed = True
    if pin.image is not None:
        current = data.get("image")
        if not (
            isinstance(current, dict) and set(current) == {"ref"} and current["ref"] == pin.image
        ):
            image = CommentedMap()
            image["ref"] = pin.image
            if pin.image_note:
                image.yaml_add_eol_comment(pin.image_note, "ref")
            data["image"] = image
            changed = True
    if not changed:
        return text
    out = io.StringIO()
    y.dump(data, out)
    return out.getvalue()


def template_env_keys(ws: Workspace, service: str, tag: str) -> list[str]:
    """The ENV list of templates/<service> at `tag` (HEAD: the work tree)."""
    tree = ws.source.template_tree(service, None if tag == HEAD else tag)
    raw = tree.read("template.yaml") if tree is not None else None
    if raw is None:
        raise PromotionError(
            f"templates/{service}/template.yaml is missing at tag {service}/{tag}: "
            "fetch the config repo's tags (git fetch --tags) and promote again"
        )
    data = yaml.safe_load(raw) or {}
    keys = data.get("env") if isinstance(data, dict) else None
    return [str(k) for k in keys] if isinstance(keys, list) else []
