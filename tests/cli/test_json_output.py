"""--json output: the JSON of an indented dump, written by the C encoder below two levels."""

from __future__ import annotations

import json
from typing import Any

import pytest

from configcenter.cli import json_text


@pytest.mark.parametrize(
    "value",
    [
        {
            "ok": True,
            "empty": [],
            "none": {},
            "services": [{"service": "api", "values": {"changed": {"A": {"from": 1, "to": "é"}}}}],
            "nested": {"deeper": {"deepest": [1, 2.5, None]}},
            "pair": (1, "two"),
            7: "a number key",
        },
        [],
        {},
        "text",
        3,
    ],
)
def test_the_text_reads_as_the_indented_dump_does(value: Any) -> None:
    text = json_text(value)
    assert json.loads(text) == json.loads(json.dumps(value, indent=2, default=str))


def test_each_item_of_a_top_level_list_is_one_line() -> None:
    text = json_text({"ok": True, "services": [{"service": "api", "files": {"a": "x"}}, {"b": 1}]})
    assert text.splitlines() == [
        "{",
        '  "ok": true,',
        '  "services": [',
        '    {"service": "api", "files": {"a": "x"}},',
        '    {"b": 1}',
        "  ]",
        "}",
    ]
