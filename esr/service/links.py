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


def _current(expires: str | None) -> bool:
    """An expiry as this module writes it (ASCII digits, a Unix time) not yet passed."""
    return bool(expires) and expires.isascii() and expires.isdigit() and len(expires) <= 20 \
        and int(expires) >= time.time()


def _matches(signature: str | None, expected: str) -> bool:
    """Compared in constant time, as bytes: whatever a link or cookie carries (compare_digest
    refuses a str with non-ASCII characters)."""
    return signature is not None and hmac.compare_digest(signature.encode(), expected.encode())


def report_link_valid(key: bytes, run_id: str, extension: str, expires: str | None,
                      signature: str | None) -> bool:
    return _current(expires) and _matches(
        signature, _signature(key, "report", run_id, extension, expires))


def session_value(key: bytes, token_id: str, ttl_s: float) -> str:
    expires = str(int(time.time() + ttl_s))
    return f"{token_id}.{expires}.{_signature(key, 'session', token_id, expires)}"


def session_token_id(key: bytes, value: str | None) -> str | None:
    """The token a session cookie stands for, if it is genuine and not expired."""
    token_id, _, rest = (value or "").partition(".")
    expires, _, signature = rest.partition(".")
    if not _current(expires) or not _matches(
            signature, _signature(key, "session", token_id, expires)):
        return None
    return token_id
