"""Client tokens: HS256 JWTs signed with the gateways' `auth_hmac_secret`."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Optional, Sequence, Union

import jwt


def make_token(
    secret: str,
    *,
    sub: Optional[str] = None,
    groups: Optional[Sequence[str]] = None,
    publish: Optional[Sequence[str]] = None,
    info: Any = None,
    ttl: Union[int, float, timedelta] = 3600,
) -> str:
    """A token for one client: `sub` is its user id, `groups` and `publish` glob patterns of the
    groups it may subscribe and publish to (absent: no restriction from the token), `info` any
    JSON shown to others in presence, valid for `ttl` seconds."""
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if seconds <= 0:
        raise ValueError("ttl must be positive")
    now = int(time.time())
    claims: dict[str, Any] = {"iat": now, "exp": now + int(seconds)}
    if sub is not None:
        claims["sub"] = sub
    if groups is not None:
        claims["groups"] = list(groups)
    if publish is not None:
        claims["publish"] = list(publish)
    if info is not None:
        claims["info"] = info
    return jwt.encode(claims, secret, algorithm="HS256")
