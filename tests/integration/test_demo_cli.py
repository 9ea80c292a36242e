"""`shelfcast demo` runs to completion on its defaults: the served model (lstm_lgbm) trained on
the history before the replay (or cached), Apache Kafka where Java is installed (else tansu),
local PostgreSQL."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
DATA = SHARED / "data/uci_online_retail/transactions.csv.gz"


@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.skipif(not DATA.exists(), reason=f"benchmark data not found at {DATA}")
def test_demo_serves_the_lstm_on_local_services(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFCAST_")}
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "shelfcast", "demo", "--data", str(DATA), "--events", "12000",
         "--day-seconds", "0", "--json", str(out),
         "--model-cache", str(tmp_path / "models")],  # trains its model (none cached there)
        env=env, capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["events_in"] == 12000
    java = shutil.which("java") is not None
    assert summary["broker"].startswith("Apache Kafka" if java else "embedded tansu")
    for key in ("dlq", "forecasts", "restocks", "plans"):
        assert summary[key] > 0, (key, summary)
    assert summary["plan_lines"] == summary["restocks"]  # each restock planned exactly once
    # the served default: the LSTM + LightGBM (lstm_lgbm), trained on the spot
    assert summary["model"] == "lstm_lgbm"
    assert summary["model_version"].startswith("lstm_lgbm-")
    assert summary["model_source"].startswith("trained now")
    score = summary["score"]
    for side in ("served", "baseline"):
        assert score[side]["points"] > 100 and 0 < score[side]["coverage_80"] <= 1, score
        assert score[side]["pinball"] > 0, score
    assert score["served"]["points"] == score["baseline"]["points"]  # the same windows


# As if torch were not installed: `import torch` raises ModuleNotFoundError (name "torch") and
# importlib.util.find_spec("torch") is None. (sys.modules["torch"] = None would do both, but
# scipy.stats then fails to import: it probes sys.modules for torch.)
NO_TORCH = """import importlib.abc, importlib.util, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoTorch())
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: (None if name.split(".")[0] == "torch"
                                             else _find(name, *a))
"""


@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.skipif(not DATA.exists(), reason=f"benchmark data not found at {DATA}")
def test_demo_serves_its_committed_model_without_torch(tmp_path: Path):
    """The defaults (20,000 events) replay the history the committed model was trained on:
    the default model (lstm_lgbm) served as committed (its LSTM part in numpy), no training,
    and no process of the demo imports torch (hidden here by a sitecustomize on PYTHONPATH,
    which the worker process inherits)."""
    from shelfcast.demo.served import committed_model

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NO_TORCH)
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFCAST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(hook), str(root)])
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "shelfcast", "demo", "--data", str(DATA), "--day-seconds", "0",
         "--json", str(out), "--model-cache", str(tmp_path / "models")],
        env=env, capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    committed = committed_model()
    assert committed is not None
    assert summary["events_in"] == 20000
    assert committed.kind == "lstm_lgbm"
    assert summary["model"] == "lstm_lgbm"
    assert summary["model_version"] == committed.model_version
    assert summary["model_source"].startswith("pre-trained, committed")
    assert not (tmp_path / "models").exists()  # nothing trained
    assert summary["forecasts"] > 0 and summary["restocks"] > 0
    score = summary["score"]
    assert score["served"]["points"] == score["baseline"]["points"] > 100
    assert score["served"]["pinball"] < score["baseline"]["pinball"], score


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
