"""Agencies and their tokens: who may do what, load which targets, and how much.

A token's secret is shown once, when it is made; the store keeps only its SHA-256.
Each token carries its agency's policy (scopes, the targets it may load, limits), so a
pipeline's token can be narrower than a person's.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from esr.service.store import Store, Token

SECRET_PREFIX = "esr_"
SCOPES = ("runs:start", "runs:read")
AGENCY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
DEFAULT_PORTS = {"http": 80, "https": 443}


class Unauthorized(Exception):
    """No token, a wrong one, or a revoked one (401)."""


class Forbidden(Exception):
    """A valid token without the scope this needs (403)."""


@dataclass(frozen=True)
class Policy:
    scopes: tuple[str, ...] = SCOPES
    # Origins the agency may load: scheme, host and port, compared parsed (never as text).
    targets: tuple[str, ...] = ()
    max_concurrent: int = 1  # the agency's runs in progress at once
    max_queued: int = 10  # and waiting
    max_citizens: int = 10_000  # concurrent citizens in one run, after --user-scale
    max_duration_s: float = 3600.0  # one run's planned length, after --time-scale

    @classmethod
    def of(cls, token: Token) -> Policy:
        data = dict(token.policy)
        return cls(**{**data, "scopes": tuple(data.get("scopes", SCOPES)),
                      "targets": tuple(data.get("targets", ()))})

    def as_dict(self) -> dict:
        return asdict(self)

    def allows(self, url: str) -> bool:
        origin = origin_of(url)
        return origin is not None and origin in {origin_of(t) for t in self.targets}


@dataclass(frozen=True)
class Caller:
    """Who a request comes from, once its token is checked."""

    token: Token
    policy: Policy = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "policy", Policy.of(self.token))

    @property
    def agency(self) -> str:
        return self.token.agency

    def require(self, scope: str) -> None:
        if scope not in self.policy.scopes:
            raise Forbidden(f"this token lacks the scope '{scope}' (it has "
                            f"{', '.join(self.policy.scopes) or 'none'})")


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL; None for anything else or anything odd."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower().rstrip("."), port or DEFAULT_PORTS[parts.scheme]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(store: Store, agency: str, policy: Policy) -> tuple[Token, str]:
    """A new token for an agency, and its secret (shown once, never stored)."""
    if not AGENCY_NAME.fullmatch(agency):
        raise ValueError(f"agency '{agency}': use lower-case letters, digits, - and _ "
                         "(it names a folder)")
    unknown = [scope for scope in policy.scopes if scope not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)} (known: {', '.join(SCOPES)})")
    bad = [target for target in policy.targets if origin_of(target) is None]
    if bad:
        raise ValueError(f"--allow-target {bad[0]!r} is not an http(s) URL such as "
                         "https://staging.example.gov or http://127.0.0.1:8080")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    token = store.add_token(f"tok_{secrets.token_hex(6)}", agency, hash_secret(secret),
                            policy.as_dict())
    return token, secret


def authenticate(store: Store, authorization: str | None) -> Caller:
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("send the token as 'Authorization: Bearer esr_…'")
    return caller_of(store.token_by_hash(hash_secret(secret.strip())))


def caller_of(token: Token | None) -> Caller:
    if token is None:
        raise Unauthorized("unknown token")
    if token.revoked_at is not None:
        raise Unauthorized("this token was revoked")
    return Caller(token)
