"""Signed, expiring links: a report card a person opens in a browser without a token, and
the page's session cookie. Both are HMAC-SHA256 over what they grant, with a key kept in
the store, so nothing needs remembering server-side and nothing can be widened."""

from __future__ import annotations

import hashlib
import hmac
import time

# A report link's format, as its file extension; the run directory's name for it.
REPORT_FORMATS = {"html": "html", "pdf": "pdf", "json": "json", "xml": "junit"}


def _signature(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\n".join(parts).encode(), hashlib.sha256).hexdigest()


def report_query(key: bytes, run_id: str, extension: str, ttl_s: float) -> str:
    expires = str(int(time.time() + ttl_s))
    return f"expires={expires}&signature={_signature(key, 'report', run_id, extension, expires)}"


def report_link_valid(key: bytes, run_id: str, extension: str, expires: str | None,
                      signature: str | None) -> bool:
    if not expires or not signature or not expires.isdigit() or int(expires) < time.time():
        return False
    return hmac.compare_digest(signature, _signature(key, "report", run_id, extension, expires))


def session_value(key: bytes, token_id: str, ttl_s: float) -> str:
    expires = str(int(time.time() + ttl_s))
    return f"{token_id}.{expires}.{_signature(key, 'session', token_id, expires)}"


def session_token_id(key: bytes, value: str | None) -> str | None:
    """The token a session cookie stands for, if it is genuine and not expired."""
    token_id, _, rest = (value or "").partition(".")
    expires, _, signature = rest.partition(".")
    if not expires.isdigit() or int(expires) < time.time():
        return None
    if not hmac.compare_digest(signature, _signature(key, "session", token_id, expires)):
        return None
    return token_id
