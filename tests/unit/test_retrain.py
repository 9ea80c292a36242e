"""Retraining's pure parts: the promotion rule, the panel built from recorded buckets, the
backtest protocol, the model-directory swap, and the command's one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from forecasting.data import Panel
from forecasting.promotion import ModelScores, decide_promotion
from forecasting.registry import make_forecaster
from forecasting.retrain import (
    BacktestProtocol,
    RetrainError,
    backtest_pair,
    load_champion,
    panel_from_rows,
    replace_directory,
    staging_directory,
)
from shelfcast.cli import main


def scores(pinball: float, coverage_80: float = 0.8, mase: float = 1.0) -> ModelScores:
    return ModelScores(pinball, coverage_80, mase)


# --------------------------------------------------------------------------- the decision


def test_without_a_champion_the_challenger_is_promoted():
    decision = decide_promotion(scores(5.0), None)
    assert decision.promote and "no champion" in decision.reason
    assert decision.pinball_gain is None


def test_a_challenger_better_by_more_than_the_margin_is_promoted():
    decision = decide_promotion(scores(0.90), scores(1.00))
    assert decision.promote and decision.reason.startswith("challenger wins")
    assert decision.pinball_gain == pytest.approx(0.10)
    assert "-10.0%" in decision.reason


def test_a_worse_challenger_is_not_promoted_even_with_better_coverage():
    decision = decide_promotion(scores(1.10, coverage_80=0.80), scores(1.00, coverage_80=0.5))
    assert not decision.promote and "challenger worse" in decision.reason


def test_within_the_margin_coverage_breaks_the_tie():
    champion = scores(1.000, coverage_80=0.70)
    # 0.4% better on pinball: a tie at the default 0.5% margin
    closer = decide_promotion(scores(0.996, coverage_80=0.78), champion)
    assert closer.promote and "tie-break" in closer.reason
    barely = decide_promotion(scores(0.996, coverage_80=0.705), champion)
    assert not barely.promote and "champion kept on a tie" in barely.reason
    # the margin is the edge: just under 0.5% better is a tie, just over a win
    assert not decide_promotion(scores(0.9951, coverage_80=0.70), champion).promote
    assert decide_promotion(scores(0.9949, coverage_80=0.70), champion).promote


def test_margins_are_options():
    champion = scores(1.0)
    assert not decide_promotion(scores(0.95), champion, margin=0.10).promote
    assert decide_promotion(scores(0.999), champion, margin=0.0).promote
    with pytest.raises(ValueError):
        decide_promotion(scores(1.0), champion, margin=-0.1)


def test_the_same_version_is_never_promoted_over_itself():
    decision = decide_promotion(scores(0.5), scores(1.0), challenger_version="lstm-1+abc",
                                champion_version="lstm-1+abc")
    assert not decision.promote and "the challenger is the champion" in decision.reason


def test_non_finite_scores():
    assert not decide_promotion(scores(math.nan), scores(1.0)).promote
    assert decide_promotion(scores(1.0), scores(math.inf)).promote
    assert not decide_promotion(scores(0.1), scores(0.0)).promote  # a perfect champion stays


def test_scores_round_trip_and_json_has_no_nan():
    s = ModelScores.from_mapping({"pinball": 1.5, "coverage_80": 0.75, "mase": math.nan,
                                  "wape": 0.3})
    assert s.to_json() == {"pinball": 1.5, "coverage_80": 0.75, "mase": None}
    assert ModelScores.from_mapping(s.to_json()).pinball == 1.5
    assert s.coverage_error == pytest.approx(0.05)


# --------------------------------------------------------------------------- the panel


def test_panel_from_rows_reads_buckets_as_the_worker_does():
    day0 = int(np.datetime64("2024-03-01", "D").astype(np.int64))
    keys = ["A@wh1", "B@wh1"]
    # A: days 0, 1, 3 (day 2 has no row: no demand); B starts on day 2, a net return on day 3
    series = [0, 0, 0, 1, 1, 1]
    days = [day0, day0 + 1, day0 + 3, day0 + 2, day0 + 3, day0 + 3]
    qty = [4.0, 2.0, 5.0, 1.0, -3.0, 1.0]
    panel = panel_from_rows(keys, series, days, qty)
    assert panel.ids == ("A@wh1", "B@wh1") and panel.start == np.datetime64("2024-03-01")
    np.testing.assert_array_equal(panel.values[0], [4.0, 2.0, 0.0, 5.0])
    np.testing.assert_array_equal(panel.values[1], [np.nan, np.nan, 1.0, 0.0])


def test_panel_from_no_rows_is_a_clear_error():
    with pytest.raises(RetrainError, match="demand_history is empty"):
        panel_from_rows([], [], [], [])


# --------------------------------------------------------------------------- the protocol


def weekly_panel(n_days: int, n_series: int = 3) -> Panel:
    rng = np.random.default_rng(0)
    t = np.arange(n_days)
    values = rng.poisson(5 * (1 + 0.5 * np.sin(2 * np.pi * t / 7)), (n_series, n_days))
    return Panel(tuple(f"S{i}@wh1" for i in range(n_series)), np.datetime64("2024-01-01"),
                 values.astype(float))


def test_protocol_needs_training_days_before_the_folds():
    protocol = BacktestProtocol(horizon=14, folds=2, val_days=14)
    assert protocol.eval_days == 28 and protocol.min_days == 43 + 28
    protocol.check(weekly_panel(71))
    with pytest.raises(RetrainError, match="too little history: 70 days recorded"):
        protocol.check(weekly_panel(70))
    doc = protocol.to_json(weekly_panel(71))
    assert doc["origins"] == ["2024-02-13", "2024-02-27"]
    assert doc["train_days"] == 43
    with pytest.raises(RetrainError):
        BacktestProtocol(folds=0)


def test_backtest_pair_scores_frozen_models_on_the_same_folds():
    panel = weekly_panel(120)
    protocol = BacktestProtocol(horizon=7, folds=3, val_days=14)
    models = {"champion": make_forecaster("moving_average"),
              "challenger": make_forecaster("seasonal_naive")}
    seen: list[tuple[str, int]] = []
    result = backtest_pair(panel, protocol, models, lambda role, k, s: seen.append((role, k)))
    assert set(result) == {"champion", "challenger"}
    assert seen == [("champion", 0), ("champion", 1), ("champion", 2),
                    ("challenger", 0), ("challenger", 1), ("challenger", 2)]
    assert all(s.pinball > 0 and 0 <= s.coverage_80 <= 1 for s in result.values())
    # seasonal naive on a pure weekly pattern: MASE of the mean is about 1 by definition
    assert result["challenger"].mase == pytest.approx(1.0, abs=0.35)


# --------------------------------------------------------------------------- the model dir


def fake_model(directory: Path, version: str) -> None:
    (directory / "metadata.json").write_text(f'{{"model_version": "{version}"}}')
    (directory / "model.pt").write_bytes(version.encode())


def test_replace_directory_swaps_whole_directories(tmp_path: Path):
    target = tmp_path / "models" / "current"
    staged = staging_directory(target)
    fake_model(staged, "v1")
    assert replace_directory(staged, target) is None  # nothing replaced the first time
    assert (target / "model.pt").read_bytes() == b"v1" and not staged.exists()

    staged = staging_directory(target)
    fake_model(staged, "v2")
    previous = replace_directory(staged, target)
    assert (target / "model.pt").read_bytes() == b"v2"
    assert previous == target.with_name("current.previous")
    assert (previous / "model.pt").read_bytes() == b"v1"
    assert sorted(p.name for p in target.parent.iterdir()) == ["current", "current.previous"]

    staged = staging_directory(target)
    fake_model(staged, "v3")
    assert replace_directory(staged, target, keep_previous=True) == previous
    assert (previous / "model.pt").read_bytes() == b"v2"  # only the last one is kept


def test_load_champion_none_for_an_empty_directory_error_for_junk(tmp_path: Path):
    assert load_champion(tmp_path / "absent") is None
    (tmp_path / "empty").mkdir()
    assert load_champion(tmp_path / "empty") is None
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    with pytest.raises(RetrainError, match="holds no readable model"):
        load_champion(junk)


# --------------------------------------------------------------------------- the command


def test_retrain_without_a_database_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]):
    monkeypatch.delenv("SHELFCAST_DATABASE_URL", raising=False)
    assert main(["retrain", "--model-dir", "/nonexistent/model"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("shelfcast: error: no database configured")


def test_retrain_without_a_model_dir_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("SHELFCAST_DATABASE_URL", "postgresql://u@127.0.0.1:9/db")
    monkeypatch.delenv("SHELFCAST_MODEL_PATH", raising=False)
    assert main(["retrain"]) == 1
    assert "pass --model-dir DIR or set SHELFCAST_MODEL_PATH" in capsys.readouterr().err
    assert main(["retrain", "--model-dir", "m", "--folds", "0"]) == 1
    assert "--folds, --step and --horizon must be >= 1" in capsys.readouterr().err


async def test_the_dashboard_without_a_database_says_so():
    from runtime.settings import Settings
    from streams.web import WorkerWeb

    web = WorkerWeb(Settings(database_url=None), None)
    status, ctype, body = await web.aroute("/api/models/", {})
    assert status == 200 and ctype == "application/json"
    assert body == b'{"database": false, "versions": []}'
    status, _, _ = await web.aroute("/api/overview/", {})  # the other routes pass through
    assert status == 200
