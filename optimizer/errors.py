"""Typed errors of the optimizer: bad policy inputs, migrations, and the PostgreSQL store."""

from __future__ import annotations

__all__ = [
    "MigrationError",
    "OptimizerError",
    "PolicyInputError",
    "StoreError",
    "StoreUnavailable",
]


class OptimizerError(Exception):
    """Base class of every optimizer error."""


class PolicyInputError(OptimizerError, ValueError):
    """An inventory-policy input outside its domain (case pack < 1, NaN levels, ...)."""

    def __init__(self, message: str, *, field: str, value: object) -> None:
        super().__init__(f"{field}={value!r}: {message}")
        self.field = field
        self.value = value


class StoreError(OptimizerError):
    """A PostgreSQL store operation that cannot succeed as asked."""


class MigrationError(StoreError):
    """A migration file set that is malformed, or an applied migration whose file changed."""


class StoreUnavailable(StoreError):
    """PostgreSQL stayed unreachable through every retry; `attempts` says how many were made."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts
