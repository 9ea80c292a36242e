"""Strings as PostgreSQL `text` holds them."""

from __future__ import annotations

__all__ = ["pg_text"]


def pg_text(value: str) -> str:
    """`value` with NUL, which a valid event may carry in a free-form id or name but `text`
    cannot store, as U+FFFD: a poison record would otherwise fail every retry of its
    batch."""
    return value.replace("\x00", "\ufffd")
