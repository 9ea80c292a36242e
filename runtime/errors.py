"""Errors the CLI turns into one-line messages."""

from __future__ import annotations

__all__ = ["ConfigError", "ServiceUnavailable", "ShelfcastError"]


class ShelfcastError(Exception):
    """Base class: an error with a message meant for the operator."""


class ConfigError(ShelfcastError):
    """A setting is missing or wrong."""


class ServiceUnavailable(ShelfcastError):
    """A broker or database could not be reached or started."""
