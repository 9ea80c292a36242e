"""The trained LSTM is the default serving model: a worker without one stops with one line
saying how to get one; a baseline serves only when asked for by name; a missing optional
package is one line naming its extra; the demo's training split and scores."""

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import ConfigError
from runtime.settings import Settings
from shelfcast import cli
from shelfcast.demo.scoring import score_forecasts, split_history
from streams.forecaster_setup import check_servable


@pytest.fixture(autouse=True)
def no_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SHELFCAST_MODEL", "SHELFCAST_MODEL_PATH"):
        monkeypatch.delenv(name, raising=False)


def test_the_default_model_is_lstm_lgbm_and_needs_a_model_directory() -> None:
    settings = Settings()
    assert settings.model == "lstm_lgbm" and settings.model_path is None
    with pytest.raises(ConfigError, match="SHELFCAST_MODEL_PATH is not set"):
        check_servable(settings)


def test_a_worker_without_a_model_says_how_to_get_one_in_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["worker"]) == 1  # before it connects to any broker
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "shelfcast train --data CSV --out DIR" in err
    assert "SHELFCAST_MODEL_PATH=DIR" in err and "SHELFCAST_MODEL=moving_average" in err


def test_a_model_path_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        check_servable(Settings(model_path=tmp_path / "missing"))


def test_a_baseline_serves_when_asked_for_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELFCAST_MODEL", "moving_average")
    assert check_servable(Settings()).name == "moving_average"


def test_a_missing_optional_package_is_one_line_naming_its_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.csv"
    data.write_text("unique_id,ds,y\n" + "".join(f"a,2024-01-{d:02d},1\n" for d in range(1, 29)))
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # as if not installed
    code = cli.main(["backtest", "--data", str(data), "--models", "moving_average,lightgbm",
                     "--folds", "1", "--horizon", "3"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "lightgbm" in err and "shelfcast[forecast]" in err


def test_an_import_error_of_our_own_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: object) -> int:
        raise ModuleNotFoundError("No module named 'streams.nope'", name="streams.nope")

    monkeypatch.setattr(cli, "_run", broken)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["settings"])


def test_the_demo_trains_on_the_days_before_the_replay(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    lines = ["InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"]
    for day in range(1, 11):
        lines.append(f"1{day},A,x,{day},2011-03-{day:02d} 10:00:00,1.0,1,UK")
        lines.append(f"2{day},B,x,2,2011-03-{day:02d} 11:00:00,1.0,1,UK")
    lines.append("C99,A,x,-1,2011-03-02 12:00:00,1.0,1,UK")  # a cancellation nets out
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    split = split_history(path, replay_lines=5, max_series=1)
    # the last 5 lines (the cancellation is the file's last) start on 2011-03-09
    assert split.replay_first_day == "2011-03-09"
    assert split.replay_from_line == 16
    panel = split.panel
    assert panel.ids == ("A@uk",)  # the SKU that sold most
    assert str(panel.dates[0]) == "2011-03-01" and str(panel.dates[-1]) == "2011-03-08"
    np.testing.assert_array_equal(panel.values[0], [1, 2, 3, 4, 5, 6, 7, 8])


def test_scores_count_the_days_a_forecast_covers_up_to_the_last_complete_one() -> None:
    levels = (0.1, 0.5, 0.9)
    quantiles = np.array([[0.0, 1.0, 2.0]] * 3)  # the same 3 days ahead
    forecasts = {("A@uk", 10): (levels, quantiles)}
    sold = {"A@uk": {11: 1.0, 12: 5.0, 13: 1.0}}
    score = score_forecasts(forecasts, sold, last_bucket=12)  # day 13 is not complete
    assert score.points == 2 and score.forecasts == 1
    assert score.coverage_80 == 0.5  # 1 inside [0, 2], 5 outside
    # day 11: y=1 -> (0.1*1 + 0 + 0.1*1)/3; day 12: y=5 -> (0.1*5 + 0.5*4 + 0.9*3)/3
    assert score.pinball == pytest.approx(((0.2) / 3 + (0.5 + 2.0 + 2.7) / 3) / 2)


def test_a_quick_model_is_trained_once_and_reused(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from shelfcast.quick_model import quick_config, synthetic_panel, train_or_reuse

    panel = synthetic_panel(12, 60, 2.0)
    first = train_or_reuse(panel, quick_config(tiny=True, max_epochs=1), cache=tmp_path)
    again = train_or_reuse(panel, quick_config(tiny=True, max_epochs=1), cache=tmp_path)
    assert not first.reused and again.reused and again.model_version == first.model_version
    assert check_servable(Settings(model="lstm", model_path=first.path)).name == "lstm"
    other = train_or_reuse(synthetic_panel(12, 60, 2.0, seed=1),
                           quick_config(tiny=True, max_epochs=1), cache=tmp_path)
    assert other.path != first.path  # another panel is another model


def test_a_quick_lstm_lgbm_is_trained_and_the_worker_loads_it(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("lightgbm")
    from forecasting.model_dir import load_model_dir, saved_model_name
    from shelfcast.quick_model import quick_config, synthetic_panel, train_or_reuse
    from streams.forecaster_setup import model_source

    panel = synthetic_panel(12, 90, 2.0)
    config = quick_config(tiny=True, max_epochs=1, year_ago=True)  # lstm_lgbm reads the ring
    lstm = train_or_reuse(panel, config, cache=tmp_path)
    mixed = train_or_reuse(panel, config, cache=tmp_path, model="lstm_lgbm")
    assert mixed.path != lstm.path and mixed.model_version.startswith("lstm_lgbm-1+")
    assert saved_model_name(mixed.path) == "lstm_lgbm" and saved_model_name(lstm.path) == "lstm"
    forecaster, version = model_source(Settings(model_path=mixed.path, device="cpu"))
    assert forecaster.name == "lstm_lgbm" and version == mixed.model_version
    assert load_model_dir(mixed.path, device="cpu").model_version == mixed.model_version


def test_the_worker_loads_its_model_on_shelfcast_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.forecaster_setup as setup
    from forecasting import make_forecaster

    asked: list[dict] = []

    def spy(name: str, **kwargs: object) -> object:
        asked.append(kwargs)
        return make_forecaster("moving_average")

    monkeypatch.setattr(setup, "make_forecaster", spy)
    setup.model_source(Settings(model_path=tmp_path, device="cuda"))
    assert asked == [{"shared": {"device": "cuda", "backend": "auto"}, "path": str(tmp_path)}]
    setup.model_source(Settings(model_path=tmp_path, lstm_backend="torch"))
    assert asked[-1] == {"shared": {"device": "auto", "backend": "torch"},
                         "path": str(tmp_path)}
