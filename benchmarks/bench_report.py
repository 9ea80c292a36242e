"""The tail every benchmark script shares: the machine it ran on, and the report printed and
written as JSON."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def machine(load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    """CPUs, platform, the time and the load average at the start and now."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "loadavg_at_start": [round(x, 2) for x in load_at_start],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}


def emit(report: dict[str, Any], path: Path | None) -> None:
    """Print `report` as indented JSON, and write it to `path` (its folders made) if given."""
    text = json.dumps(report, indent=2)
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
