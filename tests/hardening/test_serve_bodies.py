"""Bullet 7: serve answers every malformed authenticated body with a 400 and a short reason."""

from __future__ import annotations

import contextlib
import json
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve.conftest import Served, start_served
from tests.support.serve_fixtures import ServeProcess, http

MB = 1024 * 1024


@pytest.fixture
def served(tmp_path: Path, serve_processes: list[ServeProcess]) -> Iterator[Served]:
    result = start_served(tmp_path, serve_processes)
    try:
        yield result
    finally:
        result.gitlab.stop()


def _gitlab(served: Served, body: bytes) -> tuple[int, dict[str, str]]:
    headers = {
        "X-Gitlab-Token": served.tokens["webhook"],
        "X-Gitlab-Event": "Push Hook",
        "Content-Type": "application/json",
    }
    result = http("POST", served.url + "/hooks/gitlab", body, headers)
    return result.status, json.loads(result.body)


def _registry(served: Served, body: bytes) -> tuple[int, dict[str, str]]:
    headers = {
        "Authorization": f"Bearer {served.tokens['registry']}",
        "Content-Type": "application/vnd.docker.distribution.events.v1+json",
    }
    result = http("POST", served.url + "/hooks/registry", body, headers)
    return result.status, json.loads(result.body)


def _short_400(status: int, answer: dict[str, str]) -> None:
    assert status == 400, answer
    assert len(answer["error"]) < 200, answer
    assert "Traceback" not in answer["error"]


def test_deeply_nested_json_is_a_400(served: Served) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    for post in (_gitlab, _registry):
        status, answer = post(served, nested)
        _short_400(status, answer)
        assert "nested deeper than 64" in answer["error"]


@pytest.mark.parametrize("field", ["target", "request", "actor"])
def test_registry_event_fields_of_the_wrong_type_are_a_400(served: Served, field: str) -> None:
    event = {
        "id": f"e-{field}",
        "action": "push",
        "target": {"repository": "shop/api", "tag": "1.0", "mediaType": "manifest"},
        "request": {"host": "registry.test"},
        "actor": {"name": "ci"},
    }
    event[field] = "a string"
    status, answer = _registry(served, json.dumps({"events": [event]}).encode())
    _short_400(status, answer)


@pytest.mark.parametrize("body", [b"[]", b'"push"', b'{"user": "x", "ref": 5}', b"\xff\xfe"])
def test_gitlab_bodies_of_the_wrong_shape_are_a_400(served: Served, body: bytes) -> None:
    status, answer = _gitlab(served, body)
    _short_400(status, answer)


@pytest.mark.parametrize("limit", ["9" * 5000, "0", "-1", "10001", "1e3", "%D9%A1%D9%A2"])
def test_listing_limits_out_of_range_are_a_400(served: Served, limit: str) -> None:
    # The job listing reads up to 10000 rows; the runs listing is paged (1000 a page).
    for path, most in (("/api/jobs", 10000), ("/api/runs", 1000)):
        result = http("GET", f"{served.url}{path}?limit={limit}", headers=served.auth())
        assert result.status == 400, (path, result.body[:300])
        assert f"limit must be a whole number from 1 to {most}" in result.json()["error"]


def test_chunked_body_is_limited_while_it_streams(served: Served) -> None:
    """No Content-Length: the server answers 413 once 25 MB came in, while we still send."""
    token = served.tokens["webhook"]
    head = (
        "POST /hooks/gitlab HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Gitlab-Event: Push Hook\r\n"
        f"X-Gitlab-Token: {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"%x\r\n%s\r\n" % (MB, b" " * MB)
    sent = 0
    total = 256 * MB
    with socket.create_connection(("127.0.0.1", served.proc.port), timeout=60) as sock:
        sock.sendall(head)
        answer = b""
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += MB
        sock.settimeout(60)
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n\r\n" not in answer or b"limit" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]  # too large, as 56c08c4 answers
    assert b"over the 26214400-byte limit" in answer
    assert sent < total, "the server answered before the body ended"
    assert http("GET", served.url + "/healthz").status == 200
