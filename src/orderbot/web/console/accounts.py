"""Named console accounts: who may sign in, with which role, and their password hashes.

Passwords are hashed with argon2id (argon2-cffi's defaults: memory-hard, parameters stored in
the hash, so they can be raised later and old hashes rehashed at the next sign-in). Hashing
runs in a thread: it takes tens of milliseconds by design and must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from orderbot.errors import OrderbotError
from orderbot.web.console.sql.base import Row, SqlRunner

__all__ = [
    "ROLES",
    "AccountError",
    "Operator",
    "OperatorAccounts",
    "Role",
    "check_name",
    "check_password",
]

Role = Literal["admin", "operator"]
ROLES: tuple[str, ...] = get_args(Role)
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_COLUMNS = "id, name, role, disabled, created_at, updated_at"


class AccountError(OrderbotError):
    """An account request that cannot be done (the message says why); ``code`` names the
    kind: ``exists``, ``not_found``, ``invalid``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Operator:
    """A console account (never with its hash)."""

    id: int
    name: str
    role: str
    disabled: bool
    created_at: float
    updated_at: float

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _operator(row: Row) -> Operator:
    return Operator(int(row[0]), str(row[1]), str(row[2]), bool(row[3]), row[4], row[5])


def check_name(name: str) -> str:
    """``name`` if it is a valid account name; AccountError otherwise."""
    if not _NAME.match(name):
        raise AccountError(
            "invalid",
            "a name is 1-64 of letters, digits and _ . @ - (starting with a letter or digit)",
        )
    return name


def check_password(password: str) -> str:
    """``password`` if it is long enough (and not absurdly long); AccountError otherwise."""
    if len(password) < MIN_PASSWORD:
        raise AccountError("invalid", f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError("invalid", f"a password has at most {MAX_PASSWORD} characters")
    return password


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError("invalid", f"role must be one of {', '.join(ROLES)}")
    return role


class OperatorAccounts:
    """Accounts in the ``operators`` table (either profile, through ``runner``)."""

    def __init__(
        self,
        runner: SqlRunner,
        *,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._runner = runner
        self._hasher = hasher or PasswordHasher()
        self._clock = clock
        self._dummy_hash: str | None = None

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def add(self, name: str, role: str, password: str) -> Operator:
        """Create an account; AccountError ``exists`` when the name is taken."""
        check_name(name)
        _check_role(role)
        hashed = await self._hash(check_password(password))
        now = self._clock()
        rows = await self._runner.execute(
            "INSERT INTO operators (name, role, password_hash, disabled, created_at, updated_at)"  # noqa: S608 - constant columns
            " VALUES (:name, :role, :hash, :disabled, :now, :now)"
            f" ON CONFLICT (name) DO NOTHING RETURNING {_COLUMNS}",
            {"name": name, "role": role, "hash": hashed, "disabled": False, "now": now},
        )
        if not rows:
            raise AccountError("exists", f"an account named {name!r} exists already")
        return _operator(rows[0])

    async def all_accounts(self) -> list[Operator]:
        """Every account, by name."""
        rows = await self._runner.fetch(f"SELECT {_COLUMNS} FROM operators ORDER BY name")  # noqa: S608 - constant columns
        return [_operator(r) for r in rows]

    async def get(self, name: str) -> Operator | None:
        rows = await self._runner.fetch(
            f"SELECT {_COLUMNS} FROM operators WHERE name = :name",  # noqa: S608 - constant
            {"name": name},
        )
        return _operator(rows[0]) if rows else None

    async def set_disabled(self, name: str, disabled: bool = True) -> Operator:
        """Disable (or enable again) an account; disabling ends its sessions at once."""
        statements: list[tuple[str, dict[str, object]]] = [
            (
                "UPDATE operators SET disabled = :disabled, updated_at = :now WHERE name = :name"  # noqa: S608 - constant columns
                f" RETURNING {_COLUMNS}",
                {"disabled": disabled, "now": self._clock(), "name": name},
            )
        ]
        if disabled:
            statements.append(
                (
                    "DELETE FROM console_sessions WHERE operator_id IN"
                    " (SELECT id FROM operators WHERE name = :name)",
                    {"name": name},
                )
            )
        found = await self._runner.transaction(statements)
        if not found[0]:
            raise AccountError("not_found", f"no account named {name!r}")
        return _operator(found[0][0])

    async def set_password(self, name: str, password: str) -> Operator:
        """Give the account a new password; its sessions end (sign in again)."""
        hashed = await self._hash(check_password(password))
        found = await self._runner.transaction(
            [
                (
                    "UPDATE operators SET password_hash = :hash, updated_at = :now"  # noqa: S608 - constant columns
                    f" WHERE name = :name RETURNING {_COLUMNS}",
                    {"hash": hashed, "now": self._clock(), "name": name},
                ),
                (
                    "DELETE FROM console_sessions WHERE operator_id IN"
                    " (SELECT id FROM operators WHERE name = :name)",
                    {"name": name},
                ),
            ]
        )
        if not found[0]:
            raise AccountError("not_found", f"no account named {name!r}")
        return _operator(found[0][0])

    async def authenticate(self, name: str, password: str) -> Operator | None:
        """The enabled account ``name`` if ``password`` is its password; None otherwise. An
        unknown name costs a hash verification too, so timing does not tell names apart."""
        rows = await self._runner.fetch(
            f"SELECT {_COLUMNS}, password_hash FROM operators WHERE name = :name",  # noqa: S608
            {"name": name},
        )
        if not rows:
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash("not-a-password-of-anyone")
            await self._verify(self._dummy_hash, password)
            return None
        operator, stored = _operator(rows[0]), str(rows[0][6])
        if not await self._verify(stored, password) or operator.disabled:
            return None
        if self._hasher.check_needs_rehash(stored):
            await self._runner.execute(
                "UPDATE operators SET password_hash = :hash WHERE id = :id",
                {"hash": await self._hash(password), "id": operator.id},
            )
        return operator

    async def _verify(self, stored: str, password: str) -> bool:
        def verify() -> bool:
            try:
                return self._hasher.verify(stored, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(verify)
