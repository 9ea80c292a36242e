"""A worker on a host without a GPU driver settles SHELFCAST_DEVICE=auto as the CPU without
importing torch (2 s of its start); with a driver present, torch decides as before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams import forecaster_setup
from streams.forecaster_setup import GPU_DRIVER_PATHS, _serving_device

ROOT = Path(__file__).resolve().parents[2]


def test_auto_is_the_cpu_where_no_gpu_driver_is(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forecaster_setup, "GPU_DRIVER_PATHS", (str(tmp_path / "nvidiactl"),))
    assert _serving_device("auto") == "cpu"
    (tmp_path / "nvidiactl").touch()  # a driver: torch settles "auto" (CUDA when it can)
    assert _serving_device("auto") == "auto"
    for asked in ("cpu", "cuda", "cuda:1"):  # what is asked for explicitly stays
        assert _serving_device(asked) == asked
    (tmp_path / "nvidiactl").unlink()
    assert _serving_device("auto", "torch") == "auto"  # torch serves: it settles it


@pytest.mark.skipif(any(Path(p).exists() for p in GPU_DRIVER_PATHS),
                    reason="a GPU driver is present: torch settles the device")
def test_a_worker_s_load_of_the_served_mix_does_not_import_torch() -> None:
    pytest.importorskip("lightgbm")
    code = (
        "import sys\n"
        "from runtime.settings import Settings\n"
        "from shelfcast.demo.served import COMMITTED_MODEL\n"
        "from streams.forecaster_setup import model_source\n"
        "served, _ = model_source(Settings(model='lstm_lgbm', model_path=COMMITTED_MODEL))\n"
        "print(type(served.lstm).__name__, 'torch' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFCAST_")}
    env.update(PYTHONPATH=str(ROOT), SHELFCAST_COMPILED_TREES="0")  # (the trees: elsewhere)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.split() == ["NumpyLSTMForecaster", "False"]
