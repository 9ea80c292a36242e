"""Long-CSV loading and the rolling-origin backtest (scores, JSON shape, CLI)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from forecasting.backtest import rolling_origin, score
from forecasting.base import QuantileForecast
from forecasting.data import DataFormatError, Panel, load_panel
from forecasting.seasonal_naive import SeasonalNaive
from runtime.settings import Settings
from shelfcast.cli import main
from shelfcast.cli_forecasting import resolve_models

WEEK = np.array([3.0, 5.0, 0.0, 2.0, 8.0, 13.0, 1.0])


def _write_store_item(path: Path, days: int = 84) -> np.ndarray:
    rng = np.random.default_rng(0)
    values = rng.poisson(5.0, (2, 3, days))
    dates = np.datetime64("2013-01-01") + np.arange(days)
    lines = ["date,store,item,sales"]
    for d in range(days):
        for s in range(2):
            for i in range(3):
                lines.append(f"{dates[d]},{s + 1},{i + 1},{values[s, i, d]}")
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return values.reshape(6, days).astype(float)


def test_load_store_item_layout_with_multi_column_ids(tmp_path: Path) -> None:
    path = tmp_path / "train.csv.gz"
    values = _write_store_item(path)
    panel = load_panel(path)
    assert panel.ids == ("1/1", "1/2", "1/3", "2/1", "2/2", "2/3")
    assert panel.start == np.datetime64("2013-01-01") and panel.n_days == 84
    np.testing.assert_array_equal(panel.values, values)
    again = load_panel(path, id_cols=["item", "store"], date_col="date", target_col="sales")
    assert again.ids[0] == "1/1" and again.ids[1] == "1/2"  # item/store now
    assert panel.fingerprint() == load_panel(path).fingerprint()


def test_load_long_csv_with_gaps_and_late_starts(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("unique_id,ds,y\nb,2011-01-02,4\na,2011-01-01,1\na,2011-01-03,2\n"
                    "a,2011-01-03,1\n")
    panel = load_panel(path)
    assert panel.ids == ("a", "b")
    np.testing.assert_array_equal(panel.values[0], [1.0, np.nan, 3.0])  # duplicates summed
    assert np.isnan(panel.values[1, 0]) and panel.values[1, 1] == 4.0
    with pytest.raises(DataFormatError, match="missing column"):
        load_panel(path, target_col="sales")


def test_score_of_a_perfect_forecast() -> None:
    from forecasting import SeasonalNaive

    history = np.tile(WEEK, 6)[None, :]
    fc = SeasonalNaive().predict(history, 14)
    s = score(fc, np.tile(WEEK, 2)[None, :], history)
    assert s["mase"] == pytest.approx(0.0) or np.isnan(s["mase"])  # scale 0 -> NaN
    assert s["wape"] == 0.0 and s["pinball"] == 0.0 and s["coverage_80"] == 1.0


def _panel(n: int = 8, days: int = 120) -> Panel:
    rng = np.random.default_rng(3)
    rate = rng.gamma(2.0, 2.0, (n, 1)) * np.tile(WEEK / WEEK.mean(), days // 7 + 1)[:days]
    return Panel(tuple(f"s{i}" for i in range(n)), np.datetime64("2012-01-02"),
                 rng.poisson(rate).astype(float))


def test_rolling_origin_folds_and_summary() -> None:
    panel = _panel()
    result = rolling_origin(panel, ["seasonal_naive", "moving_average"], horizon=14, folds=3)
    doc = result.to_json()
    assert set(doc["models"]) == {"seasonal_naive", "moving_average"}
    for scores in doc["models"].values():
        for key in ("mase", "wape", "pinball", "coverage_80", "coverage_95", "fit_seconds",
                    "predict_seconds"):
            assert np.isfinite(scores[key])
    assert doc["origins"] == [str(panel.dates[c]) for c in (120 - 42, 120 - 28, 120 - 14)]
    assert len(doc["folds"]) == 6
    json.dumps(doc)
    # Seasonal structure plus noise: seasonal naive beats nothing-at-all but is noisy.
    assert doc["models"]["moving_average"]["mase"] < 2.0


def test_backtest_cli_writes_json_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "train.csv.gz"
    _write_store_item(path, days=98)
    out, png = tmp_path / "bt.json", tmp_path / "bt.png"
    code = main(["backtest", "--data", str(path), "--horizon", "7", "--folds", "2",
                 "--models", "seasonal_naive,moving_average", "--json", str(out),
                 "--plot", str(png)])
    assert code == 0
    doc = json.loads(out.read_text())
    assert set(doc["models"]) == {"seasonal_naive", "moving_average"}
    assert png.stat().st_size > 1000
    for scores in doc["models"].values():  # the mean's and the median's point scores
        assert {"mase", "mase_median", "wape", "wape_median"} <= set(scores)
    assert doc["served"] == Settings.model_fields["model"].default


def test_backtest_models_accept_served(tmp_path: Path) -> None:
    path = tmp_path / "train.csv.gz"
    _write_store_item(path, days=98)
    out = tmp_path / "bt.json"
    code = main(["backtest", "--data", str(path), "--horizon", "7", "--folds", "2",
                 "--models", "served,seasonal_naive", "--json", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    served = Settings.model_fields["model"].default
    assert doc["served"] == served and served in doc["models"]
    assert resolve_models(f"served,{served},tsb") == [served, "tsb"]  # no duplicate run


def test_median_scores_differ_from_the_mean_scores_on_skewed_forecasts() -> None:
    history = np.arange(42.0)[None, :] % 5  # not weekly: a non-zero seasonal-naive scale
    levels = SeasonalNaive().predict(history, 7).levels
    daily = np.broadcast_to(np.linspace(0.0, 8.0, levels.size), (1, 7, levels.size))
    skewed = QuantileForecast(levels, daily, np.cumsum(daily, axis=1), np.full((1, 7), 6.0))
    s = score(skewed, np.full((1, 7), 4.0), history)
    assert s["wape_median"] == pytest.approx(0.0)  # the median (4) is exact
    assert s["wape"] == pytest.approx(0.5) and s["mase"] > s["mase_median"]


def test_ets_peer_speaks_the_contract() -> None:
    pytest.importorskip("statsforecast")
    from forecasting.ets import ETSForecaster

    windows = _panel(n=3, days=70).values
    windows[0, :30] = np.nan
    fc = ETSForecaster().predict(windows, 7)
    assert fc.daily.shape == (3, 7, 9) and np.all(np.isfinite(fc.cumulative))
    # Row chunks in forked workers give the same numbers.
    parallel = ETSForecaster(n_jobs=2).predict(windows, 7)
    np.testing.assert_array_equal(parallel.daily, fc.daily)


def test_models_in_forked_processes_score_like_one_process() -> None:
    panel = _panel()
    models = ["seasonal_naive", "moving_average"]
    one = rolling_origin(panel, models, horizon=14, folds=2)
    forked = rolling_origin(panel, models, horizon=14, folds=2, jobs=2)
    assert list(forked.models) == models
    for name in models:
        for key in ("mase", "wape", "pinball", "coverage_80"):
            assert forked.models[name][key] == one.models[name][key]
        np.testing.assert_array_equal(forked.forecasts[name][-1].forecast.daily,
                                      one.forecasts[name][-1].forecast.daily)
    assert [r["model"] for r in forked.folds] == [r["model"] for r in one.folds]


def test_a_failing_model_in_a_forked_process_names_itself() -> None:
    def factory(name: str) -> object:
        if name == "broken":
            raise ValueError("no such thing")
        from forecasting.registry import make_forecaster

        return make_forecaster(name)

    with pytest.raises(RuntimeError, match=r"'broken'.*no such thing"):
        rolling_origin(_panel(), ["seasonal_naive", "broken"], horizon=14, folds=2,
                       factory=factory, jobs=2)  # type: ignore[arg-type]


def test_lstm_flags_reach_the_config() -> None:
    from shelfcast.cli import _parser
    from shelfcast.cli_forecasting import _config

    base = ["backtest", "--data", "x.csv"]
    default = _config(_parser().parse_args(base))
    assert default.head_month == "onehot" and default.year_ago_prior
    cfg = _config(_parser().parse_args([*base, "--head-month", "fourier", "--head-month-pairs",
                                        "3", "--no-year-ago-prior", "--no-year-ago-mask"]))
    assert (cfg.head_month, cfg.head_month_pairs) == ("fourier", 3)
    assert not (cfg.year_ago_prior or cfg.year_ago_masks_calendar)
