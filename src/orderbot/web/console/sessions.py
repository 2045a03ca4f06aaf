"""Console sign-ins: server-side sessions with idle and absolute timeouts, their CSRF tokens,
and the throttle on failed logins.

The cookie carries only a random token; the table keeps its SHA-256, the CSRF token of the
session and when it was created and last seen. A session ends at logout, after
``idle_timeout`` without a request, ``lifetime`` after sign-in, or when its account is disabled
or gets a new password. ``seen_at`` is written at most once a minute per session, so reading
pages does not turn into a write per request.

Failed logins are rows in ``login_failures``, counted per account and per address over a
window, so the limit holds across every server process (``orderbot serve --workers N``).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from orderbot.web.console.accounts import Operator
from orderbot.web.console.sql.base import SqlRunner

__all__ = ["ConsoleSessions", "LoginThrottle", "Session", "token_hash"]

TOUCH_INTERVAL = 60.0


def token_hash(token: str) -> str:
    """What the table keeps of a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    token_hash: str
    operator: Operator
    csrf_token: str
    created_at: float
    seen_at: float


class ConsoleSessions:
    """Sessions in ``console_sessions`` (either profile, through ``runner``)."""

    def __init__(
        self,
        runner: SqlRunner,
        *,
        idle_timeout: float,
        lifetime: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if idle_timeout <= 0 or lifetime <= 0:
            raise ValueError("idle_timeout and lifetime must be positive")
        self._runner = runner
        self.idle_timeout = idle_timeout
        self.lifetime = lifetime
        self._clock = clock

    async def create(self, operator: Operator, address: str) -> tuple[str, Session]:
        """A new session for ``operator``: the cookie's token and the session. Expired
        sessions of everyone are swept out at the same time."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(token_hash(token), operator, secrets.token_urlsafe(32), now, now)
        await self._runner.transaction(
            [
                (
                    "DELETE FROM console_sessions WHERE seen_at < :idle OR created_at < :old",
                    {"idle": now - self.idle_timeout, "old": now - self.lifetime},
                ),
                (
                    "INSERT INTO console_sessions"
                    " (token_hash, operator_id, csrf_token, address, created_at, seen_at)"
                    " VALUES (:hash, :operator, :csrf, :address, :now, :now)",
                    {
                        "hash": session.token_hash,
                        "operator": operator.id,
                        "csrf": session.csrf_token,
                        "address": address[:64],
                        "now": now,
                    },
                ),
            ]
        )
        return token, session

    async def load(self, token: str) -> Session | None:
        """The live session of ``token``, or None (unknown, timed out, account disabled)."""
        if not token or len(token) > 100:
            return None
        hashed = token_hash(token)
        rows = await self._runner.fetch(
            "SELECT s.csrf_token, s.created_at, s.seen_at, o.id, o.name, o.role, o.disabled,"
            " o.created_at, o.updated_at FROM console_sessions s"
            " JOIN operators o ON o.id = s.operator_id WHERE s.token_hash = :hash",
            {"hash": hashed},
        )
        if not rows:
            return None
        csrf, created, seen, *account = rows[0]
        operator = Operator(
            int(account[0]), str(account[1]), str(account[2]), bool(account[3]), *account[4:]
        )
        now = self._clock()
        if (
            operator.disabled
            or now - float(seen) > self.idle_timeout
            or now - float(created) > self.lifetime
        ):
            await self.end(hashed)
            return None
        if now - float(seen) > TOUCH_INTERVAL:
            await self._runner.execute(
                "UPDATE console_sessions SET seen_at = :now WHERE token_hash = :hash",
                {"now": now, "hash": hashed},
            )
            seen = now
        return Session(hashed, operator, str(csrf), float(created), float(seen))

    async def end(self, hashed: str) -> None:
        """Sign the session out (idempotent)."""
        await self._runner.execute(
            "DELETE FROM console_sessions WHERE token_hash = :hash", {"hash": hashed}
        )


class LoginThrottle:
    """At most ``per_account`` failed logins per account and ``per_address`` per address in
    ``window`` seconds; more are refused (429) until the oldest failure leaves the window."""

    def __init__(
        self,
        runner: SqlRunner,
        *,
        per_account: int = 5,
        per_address: int = 20,
        window: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._runner = runner
        self.per_account = per_account
        self.per_address = per_address
        self.window = window
        self._clock = clock

    @staticmethod
    def _scopes(name: str, address: str) -> tuple[str, str]:
        return f"account:{name.lower()[:150]}", f"address:{address[:150]}"

    async def retry_after(self, name: str, address: str) -> float | None:
        """Seconds until another attempt for ``name`` from ``address`` is taken, or None when
        it may be tried now."""
        account, place = self._scopes(name, address)
        now = self._clock()
        rows = await self._runner.fetch(
            "SELECT scope, COUNT(*), MIN(created_at) FROM login_failures"
            " WHERE scope IN (:account, :place) AND created_at > :since GROUP BY scope",
            {"account": account, "place": place, "since": now - self.window},
        )
        waits = [
            float(oldest) + self.window - now
            for scope, count, oldest in rows
            if int(count) >= (self.per_account if scope == account else self.per_address)
        ]
        return max(1.0, max(waits)) if waits else None

    async def failed(self, name: str, address: str) -> None:
        """Count a failed login (and forget failures older than the window)."""
        account, place = self._scopes(name, address)
        now = self._clock()
        await self._runner.transaction(
            [
                ("DELETE FROM login_failures WHERE created_at < :old", {"old": now - self.window}),
                (
                    "INSERT INTO login_failures (scope, created_at) VALUES (:scope, :now)",
                    {"scope": account, "now": now},
                ),
                (
                    "INSERT INTO login_failures (scope, created_at) VALUES (:scope, :now)",
                    {"scope": place, "now": now},
                ),
            ]
        )

    async def succeeded(self, name: str) -> None:
        """A good login clears its account's failures (not its address's)."""
        account, _ = self._scopes(name, "")
        await self._runner.execute(
            "DELETE FROM login_failures WHERE scope = :scope", {"scope": account}
        )
