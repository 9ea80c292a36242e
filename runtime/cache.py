"""Where shelfcast keeps what it makes once per host: `$SHELFCAST_CACHE_DIR`, else
`~/.cache/shelfcast` (Kafka jars, quick-trained models, compiled LightGBM trees)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_base"]


def cache_base() -> Path:
    """The cache's root: `$SHELFCAST_CACHE_DIR` when set (and not empty), else
    `~/.cache/shelfcast`. Each user keeps a subdirectory of its own."""
    root = os.environ.get("SHELFCAST_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "shelfcast"
