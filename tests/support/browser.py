"""Helpers for tests that look at a worker's dashboard: a free port, its JSON API and
headless Chromium (Debian's `chromium`; None when absent)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SHELFCAST_ARTIFACTS", ROOT / "artifacts"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
             "--virtual-time-budget=8000"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=90,
                          check=False)


def screenshot(binary: str, profile: Path, name: str, url: str,
               width_px: int, height_px: int) -> Path:
    """A fresh PNG of `url` at ARTIFACTS/name (an old one is removed first, so a failed run
    never leaves yesterday's picture behind)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    res = run_chromium(binary, profile, f"--window-size={width_px},{height_px}",
                       f"--screenshot={shot}", url)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    return shot
