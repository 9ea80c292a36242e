"""Typed errors raised when a record cannot become an event."""

from __future__ import annotations

__all__ = ["InvalidEvent", "SchemaError"]


class SchemaError(Exception):
    """Base class of every schema-layer error."""


class InvalidEvent(SchemaError):
    """A raw record that cannot be decoded or validated; `reason` goes to the dead-letter topic."""

    def __init__(self, reason: str, *, kind: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # short machine-readable class: invalid_json, validation, oversized, ...
