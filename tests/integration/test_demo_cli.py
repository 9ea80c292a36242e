"""`shelfcast demo` runs to completion on its embedded defaults (tansu broker, local PostgreSQL)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
DATA = SHARED / "data/uci_online_retail/transactions.csv.gz"


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.skipif(not DATA.exists(), reason=f"benchmark data not found at {DATA}")
def test_demo_runs_on_embedded_services(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFCAST_")}
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "shelfcast", "demo", "--data", str(DATA), "--events", "12000",
         "--day-seconds", "0", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["events_in"] == 12000
    assert summary["broker"] == "embedded tansu"
    for key in ("dlq", "forecasts", "restocks", "plans"):
        assert summary[key] > 0, (key, summary)
    assert summary["plan_lines"] == summary["restocks"]  # each restock planned exactly once


def test_cli_mistakes_get_one_line_errors(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "shelfcast", "demo", "--data", str(tmp_path / "nope.csv")],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "not found" in proc.stderr and "Traceback" not in proc.stderr
    env = {**os.environ, "SHELFCAST_TOPIC_PARTITIONS": "zero"}
    proc = subprocess.run([sys.executable, "-m", "shelfcast", "settings"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "topic_partitions" in proc.stderr
    assert "Traceback" not in proc.stderr
