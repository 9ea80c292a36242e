"""Censored demand on stock-out days (issue 16): the loader carries `Panel.censored`
(stockout_hours > 0), training reads it (`LSTMConfig.censored_loss`, `LightGBMConfig.censored`)
and a panel without stock-out information trains as before, bit for bit."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from forecasting.data import Panel, load_panel
from forecasting.lightgbm_peer import LightGBMForecaster
from forecasting.lstm.config import LSTMConfig

torch = pytest.importorskip("torch")

START = np.datetime64("2024-01-01")


def _panel(n: int = 12, days: int = 120, seed: int = 0,
           censored: bool = True) -> Panel:
    """Demand whose stock-out days (about one in three) sell at most a third of it."""
    rng = np.random.default_rng(seed)
    level = rng.gamma(4.0, 2.0, (n, 1))
    demand = rng.poisson(np.broadcast_to(level, (n, days))).astype(np.float64)
    out = rng.random((n, days)) < 0.35
    values = np.where(out, np.floor(demand / 3), demand)
    values[0, :20] = np.nan  # a late starter
    return Panel(tuple(f"s{i}" for i in range(n)), START, values, None,
                 out if censored else None)


def _write(path: Path, stockout: bool) -> None:
    head = "unique_id,ds,y,discount,activity_flag" + (",stockout_hours" if stockout else "")
    rows = [head]
    for sid, hours in (("a", [0, 3, 0, 24]), ("b", [1, 0, 0, 0])):
        for d, h in enumerate(hours):
            row = f"{sid},2024-03-{d + 1:02d},{d + 1}.5,1.0,0"
            rows.append(row + (f",{h}" if stockout else ""))
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(rows) + "\n")


def test_the_loader_reads_the_mask_and_head_and_subset_keep_it(tmp_path: Path) -> None:
    _write(tmp_path / "s.csv.gz", stockout=True)
    panel = load_panel(tmp_path / "s.csv.gz", covariates=True)
    assert panel.censored is not None
    assert panel.censored.tolist() == [[False, True, False, True], [True, False, False, False]]
    assert panel.head(2).censored.tolist() == [[False, True], [True, False]]  # type: ignore[union-attr]
    assert panel.subset([1]).censored.tolist() == [[True, False, False, False]]  # type: ignore[union-attr]
    # without covariates, or a file without the column: no stock-out information
    assert load_panel(tmp_path / "s.csv.gz").censored is None
    _write(tmp_path / "n.csv.gz", stockout=False)
    plain = load_panel(tmp_path / "n.csv.gz", covariates=True)
    assert plain.censored is None
    assert plain.fingerprint() == panel.fingerprint()  # the mask is no forecast input


def test_off_keeps_the_config_json_of_before() -> None:
    assert "censored_loss" not in LSTMConfig().to_json()
    on = LSTMConfig(censored_loss="pinball")
    assert LSTMConfig.from_json(on.to_json()) == on


def test_the_mask_reaches_the_training_targets() -> None:
    from forecasting.lstm.training import _prepare

    panel = _panel()
    cfg = LSTMConfig(horizon=7, hidden=8, head_hidden=8, censored_loss="drop")
    data, _, _ = _prepare(panel, cfg, torch.device("cpu"))
    assert data.daily_cens is not None and data.cum_cens is not None
    # series 1 (observed from day 0): origin t's step h is day t + h
    cens = panel.censored
    assert cens is not None
    t = 30
    assert data.daily_cens[1, t].tolist() == cens[1, t + 1 : t + 8].tolist()
    assert data.cum_cens[1, t].tolist() == np.logical_or.accumulate(
        cens[1, t + 1 : t + 8]).tolist()
    # series 0 starts on day 20: its row is left-aligned
    assert data.daily_cens[0, 0].tolist() == cens[0, 21:28].tolist()
    off, _, _ = _prepare(panel, LSTMConfig(horizon=7, hidden=8, head_hidden=8),
                         torch.device("cpu"))
    assert off.daily_cens is None


def _weights(panel: Panel, mode: str) -> tuple[dict[str, np.ndarray], str]:
    from forecasting.lstm.training import train_net

    cfg = LSTMConfig(horizon=7, hidden=8, head_hidden=8, max_epochs=2, censored_loss=mode,
                     year_ago=False, year_ago_prior=False)
    trained = train_net(panel, cfg, device="cpu")
    state = {k: v.detach().numpy().copy() for k, v in trained.net.state_dict().items()}
    return state, trained.net.config.censored_loss


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_censored_training_differs_and_without_stockouts_is_bit_identical() -> None:
    panel = _panel()
    base, mode = _weights(panel, "none")
    assert mode == "none"
    drop, mode = _weights(panel, "drop")
    assert mode == "drop" and not _same(base, drop)
    one_sided, mode = _weights(panel, "pinball")
    assert mode == "pinball" and not _same(base, one_sided) and not _same(drop, one_sided)
    # no stock-out information (None, or no censored day): the net of before, bit for bit
    plain = _panel(censored=False)
    never = Panel(plain.ids, plain.start, plain.values, None,
                  np.zeros(plain.values.shape, dtype=bool))
    for p in (plain, never):
        for m in ("drop", "pinball"):
            got, mode = _weights(p, m)
            assert mode == "none" and _same(got, base)


def test_censored_pinball_pushes_the_quantiles_up() -> None:
    """A censored target only penalises forecasts below it: trained that way, the median
    forecast (and the mean) sit higher than when the censored days count as demand."""
    from forecasting.lstm.forecaster import train_lstm

    panel = _panel(n=16, days=150)
    end = panel.start + np.timedelta64(panel.n_days - 1, "D")
    medians: dict[str, tuple[float, float]] = {}
    for mode in ("none", "pinball"):
        cfg = LSTMConfig(horizon=7, hidden=8, head_hidden=8, max_epochs=15, patience=15,
                         ema_decay=0.0, lr=1e-2, batch_series=4, censored_loss=mode,
                         year_ago=False, year_ago_prior=False, calibrate=False)
        model = train_lstm(panel, cfg, device="cpu").forecaster
        fc = model.predict(panel.values, 7, end_days=end)
        medians[mode] = (float(np.mean(fc.daily[:, :, int(np.argmin(abs(fc.levels - 0.5)))])),
                         float(np.mean(fc.mean)))
    assert medians["pinball"][0] > medians["none"][0]
    assert medians["pinball"][1] > medians["none"][1]


def test_lightgbm_drops_censored_targets_only_when_asked() -> None:
    panel = _panel(days=90)
    plain = _panel(days=90, censored=False)
    x0, y0, k0 = LightGBMForecaster(7).training_rows(plain)
    x1, y1, k1 = LightGBMForecaster(7).training_rows(panel)  # off: the mask is not read
    assert np.array_equal(x0, x1, equal_nan=True)
    assert np.array_equal(y0, y1) and np.array_equal(k0, k1)
    on = LightGBMForecaster(7, censored=True)
    x2, y2, _ = on.training_rows(plain)  # on, without stock-out information: as before
    assert np.array_equal(x0, x2, equal_nan=True) and np.array_equal(y0, y2)
    _, y3, _ = on.training_rows(panel)
    assert 0 < y3.size < y0.size  # the censored targets' rows are gone
