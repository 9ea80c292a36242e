"""Without torch (the base install) every command that needs it says what to install in one
line and exits non-zero; serving needs no torch. torch's absence is simulated by an import
hook in a child process, so this runs whether or not torch is installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NO_TORCH = (
    "import sys, importlib.abc\n"
    "class NoTorch(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "        return None\n"
    "sys.meta_path.insert(0, NoTorch())\n"
    "import importlib.util\n"
    "importlib.util.find_spec = lambda name, *a: None if name.split('.')[0] == 'torch' "
    "else _find(name, *a)\n"
)


def _shelfcast(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    code = ("import importlib.util\n_find = importlib.util.find_spec\n" + NO_TORCH
            + "from shelfcast.cli import main\n"
            f"sys.exit(main({args!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                          timeout=120)


@pytest.mark.parametrize("args", [
    ["train", "--data", "demand.csv", "--out", "model"],
    ["backtest", "--data", "demand.csv", "--models", "lstm"],
    ["retrain", "--model-dir", "model"],
])
def test_a_command_that_needs_torch_says_what_to_install(tmp_path: Path,
                                                         args: list[str]) -> None:
    done = _shelfcast(args, tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "pip install 'shelfcast[train]'" in lines[0] and "Traceback" not in done.stderr


def test_an_artifact_without_model_npz_asks_for_torch_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    code = ("import importlib.util\n_find = importlib.util.find_spec\n" + NO_TORCH
            + "from forecasting import make_forecaster\n"
            "try:\n"
            "    make_forecaster('lstm', path='model', shared={'device': 'cpu'})\n"
            "except ValueError as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(ROOT)}, timeout=120)
    assert "pip install 'shelfcast[train]'" in done.stdout, done.stdout + done.stderr
