"""Who may do what: team tokens, browser sessions, CSRF tokens and the rate limit.

    secret = load_secret(comp.secret_file)          # made once (32 random bytes, mode 0600)
    token = new_token()                             # shown to its team once; the database keeps only
    h = token_hash(secret, token)                   #   this keyed hash (HMAC-SHA256 with the secret)
    cookie = session_value(secret, team.id, team.token_hash)    # signed; dies with the token
    team_id = session_team(secret, cookie, lambda i: hash_of(i))
    limiter = RateLimiter(30); limiter.hit("203.0.113.9")       # seconds to wait once over 30 a minute
    tokens = issue_tokens(db, comp, secret, ["alpha", "beta"])   # {name: token}, each shown once

Tokens are 32 random bytes (256 bits), so a keyed hash is what storing them needs: a copy of
the database without the secret file lets nobody check guesses, and nothing slower than HMAC is
needed against guessing 2^256 values. A session cookie is team id, expiry and an HMAC over them
and the team's token hash: reissuing a token ends every session of the old one. Forms carry a
CSRF token equal to the `cnnlab_csrf` cookie (double submit; the cookies are SameSite=Strict and
HttpOnly as well); the API takes `Authorization: Bearer TOKEN`, which no other site can make a
browser send.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write, make_dirs

TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
TOKEN_PREFIX = "cnl_"
SESSION_COOKIE = "cnnlab_session"
CSRF_COOKIE = "cnnlab_csrf"
SESSION_SECONDS = 12 * 3600


def load_secret(path: Path) -> bytes:
    """The server's secret (32 bytes, hex in a 0600 file), made on first use."""
    path = Path(path)
    if not path.exists():
        make_dirs(path.parent)
        old = os.umask(0o077)
        try:
            atomic_write(path, lambda f: f.write(secrets.token_hex(32)))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise CnnlabError(f"{path} is not a server secret (64 hex digits): move it away and a new one is made "
                          "(every team then needs a new token)")
    return secret


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(secret: bytes, token: str) -> str:
    return hmac.new(secret, token.strip().encode(), hashlib.sha256).hexdigest()


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    kind, _, value = header.partition(" ")
    return value.strip() if kind.lower() == "bearer" and value.strip() else None


def _sign(secret: bytes, text: str) -> str:
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def session_value(secret: bytes, team_id: int, team_token_hash: str, now: float | None = None) -> str:
    expires = int((now or time.time()) + SESSION_SECONDS)
    return f"{team_id}.{expires}.{_sign(secret, f'session.{team_id}.{expires}.{team_token_hash}')}"


def session_team(secret: bytes, value: str | None, hash_of, now: float | None = None) -> int | None:
    """The team id a session cookie stands for, or None (absent, expired, forged, or its token reissued).
    `hash_of(team_id)` gives the team's current token hash (None for no such team)."""
    try:
        team, expires, sig = (value or "").split(".")
        team_id, expires = int(team), int(expires)
    except ValueError:
        return None
    if expires < (now or time.time()):
        return None
    current = hash_of(team_id)
    if current is None:
        return None
    return team_id if hmac.compare_digest(sig, _sign(secret, f"session.{team_id}.{expires}.{current}")) else None


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(cookie: str | None, form_value: str | None) -> bool:
    return bool(cookie) and bool(form_value) and hmac.compare_digest(str(cookie), str(form_value))


class RateLimiter:
    """At most `per_minute` hits per key in any 60 s (a sliding window), in this process."""

    def __init__(self, per_minute: int, window: float = 60.0):
        self.limit, self.window = per_minute, window
        self.hits: dict[str, deque] = {}
        self.lock = threading.Lock()

    def hit(self, key: str, now: float | None = None) -> float:
        """0 when allowed (and counted); else the seconds until the next hit is allowed."""
        now = time.monotonic() if now is None else now
        with self.lock:
            q = self.hits.setdefault(key, deque())
            while q and q[0] <= now - self.window:
                q.popleft()
            if len(q) >= self.limit:
                return max(0.1, q[0] + self.window - now)
            q.append(now)
            if len(self.hits) > 10_000:  # forget idle clients
                for k in [k for k, v in self.hits.items() if not v or v[-1] <= now - self.window]:
                    del self.hits[k]
            return 0.0


def check_team_names(names) -> list[str]:
    names = [str(n).strip() for n in names]
    for n in names:
        if not TEAM_NAME.match(n):
            raise CnnlabError(f"bad team name {n!r}: use up to 64 letters, digits, spaces, '.', '_' or '-', "
                              "starting with a letter or digit")
    if len(set(names)) != len(names):
        raise CnnlabError(f"a team is named twice in {', '.join(names)}")
    return names


def issue_tokens(db, comp, secret: bytes, names, role: str = "team", reissue: bool = False) -> dict:
    """A new token for each named team (created, or with `reissue` given a new token, which ends the old
    one and its sessions); {name: token}. Nothing is written if any name is refused."""
    from sqlalchemy import select

    from cnnlab.serve.db import Team

    names = check_team_names(names)
    tokens = {n: new_token() for n in names}
    with db.session() as s, s.begin():
        existing = {t.name: t for t in s.execute(select(Team).where(Team.competition == comp.name,
                                                                    Team.name.in_(names))).scalars()}
        for n in names:
            team = existing.get(n)
            if team is None:
                s.add(Team(competition=comp.name, name=n, role=role, token_hash=token_hash(secret, tokens[n])))
            elif not reissue:
                raise CnnlabError(f"team {n!r} exists already in {comp.name}: pass --reissue to give it a new token "
                                  "(its old token stops working)")
            elif team.role != role:
                raise CnnlabError(f"{n!r} is the {team.role}'s name in {comp.name}, not a {role}'s: choose another name")
            else:
                team.token_hash = token_hash(secret, tokens[n])
    return tokens
