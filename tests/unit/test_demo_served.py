"""The demo's committed pre-trained lstm_lgbm (the served default): small, readable and served
without torch (its LSTM part in numpy), trained on the history the demo reads by default
(when the data file is here); its LSTM part serves SHELFCAST_MODEL=lstm."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shelfcast.demo.served import COMMITTED_MODEL, DEMO_EVENTS, DEMO_SERIES, committed_model

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared/data/uci_online_retail/transactions.csv.gz"


def test_the_committed_model_is_small_and_documented() -> None:
    model = committed_model()
    assert model is not None and model.kind == "lstm_lgbm"
    assert model.model_version.startswith("lstm_lgbm-")
    files = [f for f in COMMITTED_MODEL.rglob("*") if f.is_file()]
    assert {str(f.relative_to(COMMITTED_MODEL)) for f in files} >= {
        "metadata.json", "combination.json", "lstm/model.npz", "lstm/metadata.json",
        "lightgbm/lightgbm.json", "lightgbm/booster_0.txt.gz", "README.md"}
    assert sum(f.stat().st_size for f in files) <= 1_000_000
    assert not [f for f in files if f.name == "model.pt"]  # numpy serves it: no torch weights
    readme = (COMMITTED_MODEL / "README.md").read_text()
    assert model.model_version in readme and model.data_fingerprint in readme
    assert "python -m shelfcast.demo.served" in readme
    lstm = model.serving("lstm")  # its LSTM part: an LSTM model directory of its own
    assert lstm is not None and lstm.kind == "lstm" and lstm.path == COMMITTED_MODEL / "lstm"
    assert lstm.model_version.startswith("lstm-1+") and lstm.model_version in readme
    assert lstm.data_fingerprint == model.data_fingerprint
    assert model.serving("moving_average") is None


@pytest.mark.parametrize(("name", "path", "served"), [
    ("lstm_lgbm", "", "LSTMLightGBMForecaster/NumpyLSTMForecaster"),
    ("lstm", "lstm", "NumpyLSTMForecaster"),
])
def test_it_serves_without_importing_torch(name: str, path: str, served: str) -> None:
    """As the base install serves it: torch hidden by the import hook the no-torch demo test
    uses (an import of torch on the serving path fails), whether or not it is installed."""
    from tests.integration.test_demo_cli import NO_TORCH

    code = NO_TORCH + (
        "import sys, numpy as np; from forecasting import make_forecaster; "
        f"m = make_forecaster({name!r}, path={str(COMMITTED_MODEL / path)!r}); "
        "f = m.predict(np.random.default_rng(0).poisson(3.0, (5, 120)).astype(float), 14, "
        "end_days=np.datetime64('2011-12-01')); "
        "assert f.mean.shape == (5, 14) and np.isfinite(f.mean).all(); "
        "assert not [n for n in sys.modules if n.split('.')[0] == 'torch']; "
        "kind = type(m).__name__ + ('/' + type(m.lstm).__name__ if hasattr(m, 'lstm') "
        "else ''); print(kind, m.model_version)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT)}, timeout=120)
    model = committed_model(COMMITTED_MODEL / path)
    assert model is not None and model.kind == name
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [served, model.model_version], done.stderr


def test_torch_serves_the_same_numbers_from_the_same_weights() -> None:
    pytest.importorskip("torch")
    import torch

    from forecasting.lstm import LSTMNet
    from forecasting.lstm.artifact_files import load_numpy
    from forecasting.lstm.features import INPUT_DIM
    from forecasting.lstm.forecaster import LSTMForecaster

    served = load_numpy(COMMITTED_MODEL / "lstm")
    net = LSTMNet(INPUT_DIM, served.config)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in served.weights.items()})
    torch_fc = LSTMForecaster(net, log_scale_mean=served.log_scale_mean,
                              log_scale_std=served.log_scale_std, model_id=served.model_id,
                              device="cpu", calibration=served.calibration)
    assert torch_fc.state_fingerprint() == served.state_fingerprint()
    w = np.random.default_rng(1).poisson(2.0, (64, 400)).astype(float)
    w[:8, :300] = np.nan
    end = np.datetime64("2011-12-01")
    a, b = torch_fc.predict(w, 14, end_days=end), served.predict(w, 14, end_days=end)
    for x, y in ((a.daily, b.daily), (a.cumulative, b.cumulative)):
        assert np.mean(np.abs(x - y) > 1e-3) < 0.01 and np.abs(x - y).max() <= 1.0 + 1e-3
    np.testing.assert_allclose(b.mean, a.mean, rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(not DATA.exists(), reason=f"demo data not found at {DATA}")
def test_it_was_trained_on_the_history_the_demo_reads_by_default() -> None:
    from shelfcast.cli import _parser
    from shelfcast.demo.scoring import split_history

    assert _parser().parse_args(["demo"]).events == DEMO_EVENTS
    model = committed_model()
    assert model is not None
    panel = split_history(DATA, DEMO_EVENTS, max_series=DEMO_SERIES).panel
    assert panel.fingerprint() == model.data_fingerprint


def _split():  # type: ignore[no-untyped-def]
    from shelfcast.demo.scoring import HistorySplit
    from shelfcast.quick_model import synthetic_panel

    return HistorySplit(0, "2024-01-01", synthetic_panel(6, 60, 2.0))


def _serve(split, tmp_path: Path, **fields):  # type: ignore[no-untyped-def]
    from rich.console import Console

    from runtime.settings import Settings
    from shelfcast.demo.runner import DemoOptions, DemoSummary, _served_model

    summary = DemoSummary()
    console = Console(file=open(tmp_path / "console.txt", "w"), width=200)
    settings = _served_model(Settings(**fields), DemoOptions(data=tmp_path / "x.csv", events=1,
                                                     model_cache=tmp_path / "models"),
                             split, console, summary)
    console.file.close()
    return settings, summary, (tmp_path / "console.txt").read_text()


@pytest.mark.parametrize("name", ["lstm_lgbm", "lstm"])
def test_the_demo_serves_the_committed_model_on_its_history(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shelfcast.demo.served as served

    split = _split()
    real = committed_model()
    assert real is not None
    fake = served.CommittedModel(real.path, real.model_version, split.panel.fingerprint())
    part = fake.serving("lstm")
    assert part is not None
    monkeypatch.setattr(served, "committed_model", lambda path=real.path: (
        fake if path == real.path else dataclasses.replace(
            part, data_fingerprint=split.panel.fingerprint())))
    settings, summary, _ = _serve(split, tmp_path, model=name)
    expected = real if name == "lstm_lgbm" else part
    assert settings.model == name and settings.model_path == expected.path
    assert summary.model == name and summary.model_version == expected.model_version
    assert summary.model_source.startswith("pre-trained, committed")
    assert not (tmp_path / "models").exists()


def test_on_other_data_without_torch_it_says_so_and_serves_the_committed_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else find(name, *a))
    split = _split()
    settings, summary, printed = _serve(split, tmp_path)  # the default: lstm_lgbm
    real = committed_model()
    assert real is not None and settings.model_path == real.path
    assert settings.model == summary.model == "lstm_lgbm"
    assert summary.model_version == real.model_version
    assert "on other data" in summary.model_source
    assert split.panel.fingerprint() in summary.model_source
    assert "pip install 'shelfcast[train]'" in printed
    assert not (tmp_path / "models").exists()


def test_without_a_committed_model_or_torch_it_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import shelfcast.demo.served as served
    from runtime.errors import ConfigError

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else find(name, *a))
    monkeypatch.setattr(served, "committed_model", lambda path=None: None)
    with pytest.raises(ConfigError, match=r"no committed model .*shelfcast\[train\]"):
        _serve(_split(), tmp_path)
    assert not (tmp_path / "models").exists()
