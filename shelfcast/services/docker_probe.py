"""Whether a Docker engine is reachable (to choose testcontainers or local services)."""

from __future__ import annotations

import functools

__all__ = ["docker_available"]


@functools.cache
def docker_available(timeout: float = 2.0) -> bool:
    """True when `docker.from_env().ping()` succeeds; any error (no SDK, no engine) → False."""
    try:
        import docker  # imported on demand: optional, and slow-ish to import

        client = docker.from_env(timeout=int(max(1, timeout)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False
