"""Content-addressed, signed URLs for rendered config files (Marathon's Mesos fetcher).

A file is named by its Git blob id (the deploy repo already stores it under that
id, so serve can hand out any release's files, rollbacks included) and the URL
carries an HMAC-SHA256 of `<env>/<blob>/<path>` under a key only configcenter
knows. The Mesos fetcher cannot send headers, so the signature is the token: a
URL grants that one file and nothing else, and cannot be forged for another.
Secret values never go this way (files holding secrets are refused before a URL
is made). Pure functions: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_BLOB = re.compile(r"^[0-9a-f]{40}$")


def blob_id(data: bytes) -> str:
    """The Git blob id (`git hash-object`) of `data`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def signature(key: str, env: str, blob: str, path: str) -> str:
    """The URL token for one file of one environment."""
    message = f"{env}/{blob}/{path}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def valid(key: str, env: str, blob: str, path: str, given: str) -> bool:
    """Whether `given` is the token for this file, compared in constant time."""
    if not key or not _BLOB.match(blob):
        return False
    return hmac.compare_digest(signature(key, env, blob, path), given)


def file_url(base: str, key: str, env: str, path: str, data: bytes) -> str:
    """`<base>/files/<env>/<blob>/<path>?sig=<token>` for `data` rendered as `path`."""
    from urllib.parse import quote

    blob = blob_id(data)
    sig = signature(key, env, blob, path)
    return f"{base.rstrip('/')}/files/{quote(env)}/{blob}/{quote(path)}?sig={sig}"
