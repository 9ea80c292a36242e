"""Typed errors of the optimizer: bad policy inputs, migrations, and the PostgreSQL store."""

from __future__ import annotations

__all__ = [
    "MigrationError",
    "OffsetsBehind",
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


class OffsetsBehind(StoreError):
    """PostgreSQL holds offsets behind a batch's first records: commits it acknowledged were lost
    (a crash under `synchronous_commit = off`), or another consumer of the group wrote an older
    position. Nothing of the batch was written. `stored`: the offset stored for each partition
    that is behind (None: no row at all, though this consumer wrote one)."""

    def __init__(self, message: str, *, stored: dict[tuple[str, int], int | None]) -> None:
        super().__init__(message)
        self.stored = stored
