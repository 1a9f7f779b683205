"""The redactor: what it masks, what it leaves, and that threads can share it."""

from __future__ import annotations

import threading

import pytest

from configcenter.core.redact import MASK, Redactor


def test_masks_every_registered_value() -> None:
    r = Redactor(["hunter22", "tok-123456"])
    assert r.redact("pw=hunter22 token=tok-123456 pw=hunter22") == "pw=*** token=*** pw=***"
    assert r.redact("nothing secret") == "nothing secret"
    assert r.redact("") == ""


def test_ignores_values_too_short_to_mean_anything() -> None:
    r = Redactor(["abc", "", "on"])
    assert len(r) == 0
    assert r.redact("abc on") == "abc on"
    r.register("abcd")
    assert r.redact("abc abcd") == "abc ***"


def test_a_secret_containing_another_is_masked_whole() -> None:
    r = Redactor(["pass", "password-of-db"])
    assert r.redact("password-of-db / pass") == "*** / ***"


def test_values_read_with_a_trailing_newline_are_masked_without_it() -> None:
    r = Redactor(["from-a-file\n"])
    assert r.redact("secret is from-a-file.") == "secret is ***."


def test_regex_characters_are_taken_literally() -> None:
    r = Redactor(["a.b*c(d)+"])
    assert r.redact("x a.b*c(d)+ axbbbc(d)") == "x *** axbbbc(d)"


def test_redact_data_walks_keys_and_values() -> None:
    r = Redactor(["s3cret-value"])
    data = {"k": ["s3cret-value", 1, None, {"s3cret-value": ("x s3cret-value",)}], "n": 2.5}
    assert r.redact_data(data) == {"k": [MASK, 1, None, {MASK: ["x ***"]}], "n": 2.5}


def test_only_strings_can_be_registered() -> None:
    with pytest.raises(TypeError, match="must be str"):
        Redactor().register(b"bytes-secret")  # type: ignore[arg-type]


def test_registering_while_other_threads_redact() -> None:
    r = Redactor()
    secrets = [f"secret-number-{i:04d}" for i in range(200)]
    text = " ".join(secrets)
    errors: list[BaseException] = []
    gate = threading.Barrier(5)

    def register(part: list[str]) -> None:
        gate.wait(timeout=30)
        for value in part:
            r.register(value)

    def read() -> None:
        gate.wait(timeout=30)
        for _ in range(200):
            out = r.redact(text)
            # A value is either masked whole or left whole, never cut.
            for token in out.split(" "):
                if token not in (MASK, *secrets):
                    errors.append(AssertionError(token))

    threads = [threading.Thread(target=register, args=(secrets[i::3],)) for i in range(3)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(r) == 200
    assert r.redact(text) == " ".join([MASK] * 200)
