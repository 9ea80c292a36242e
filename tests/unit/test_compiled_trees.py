"""LightGBM boosters served compiled (lleaves): the same numbers as LightGBM's predict, NaN
features included; compiled once and read from the cache after; a corrupt cache file rebuilt;
LightGBM's predict when lleaves is missing or fails; the thread cap reaches LightGBM."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("lightgbm")

from forecasting import compiled_trees
from forecasting.compiled_trees import COMPILED_TREES_ENV, compile_boosters
from forecasting.data import Panel
from forecasting.lag_features import FEATURE_NAMES
from forecasting.lightgbm_peer import LightGBMForecaster
from shelfcast.demo.served import COMMITTED_MODEL
from tests.support.demand import weekly_panel

needs_lleaves = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("lleaves", "llvmlite")),
    reason="lleaves/llvmlite not installed")

def _panel(n: int = 20, days: int = 200, seed: int = 0) -> Panel:
    panel = weekly_panel(n, days, seed)
    panel.values[5, 150:160] = np.nan  # a gap inside the history
    return panel


def _rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.gamma(1.0, 2.0, (n, len(FEATURE_NAMES)))
    x[rng.random(x.shape) < 0.15] = np.nan
    return x


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Panel]:
    """A small model (4 boosters of 12 trees) trained here and saved: compiles in ~1 s."""
    panel = _panel()
    model = LightGBMForecaster(14, levels=(0.1, 0.5, 0.9), n_estimators=12, num_leaves=7,
                               min_child_samples=20).fit(panel)
    out = tmp_path_factory.mktemp("tiny")
    model.save(out)
    return out, panel


@pytest.fixture(scope="module")
def demo_pair() -> tuple[LightGBMForecaster, LightGBMForecaster]:
    """The committed demo model's LightGBM part, compiled (through the user's cache, as a
    worker would: ~15-30 s once per host, a few ms after) and not."""
    compiled = LightGBMForecaster.load(COMMITTED_MODEL / "lightgbm", compiled=True)
    plain = LightGBMForecaster.load(COMMITTED_MODEL / "lightgbm", compiled=False)
    return compiled, plain


def _texts(path: Path) -> list[str]:
    return [p.read_text() for p in sorted(path.glob("booster_*.txt"))]


@needs_lleaves
def test_compiled_boosters_predict_what_lightgbm_predicts(tiny: tuple[Path, Panel],
                                                          tmp_path: Path) -> None:
    path, panel = tiny
    plain = LightGBMForecaster.load(path, compiled=False)
    fast = LightGBMForecaster.load(path, compiled=False)
    assert fast.compile_trees(cache_dir=tmp_path) and fast.trees_backend == "compiled"
    assert plain.trees_backend == "lightgbm"
    x = _rows(500)
    for k in range(len(plain._models)):
        np.testing.assert_allclose(fast._booster_predict(k, x), plain._models[k].predict(x),
                                   rtol=0, atol=1e-9)
    # the whole forecast: counts, so integer quantiles; the rounding sees no difference
    a = plain.predict(panel.values, 14, end_days=panel.dates[-1])
    b = fast.predict(panel.values, 14, end_days=panel.dates[-1])
    np.testing.assert_array_equal(a.daily, b.daily)
    np.testing.assert_array_equal(a.cumulative, b.cumulative)
    np.testing.assert_allclose(a.mean, b.mean, rtol=0, atol=1e-9)
    assert np.all(a.daily == np.round(a.daily))


@needs_lleaves
def test_the_demo_model_compiled_gives_lightgbm_s_forecast(
        demo_pair: tuple[LightGBMForecaster, LightGBMForecaster]) -> None:
    fast, plain = demo_pair
    assert fast.trees_backend == "compiled"
    x = _rows(2_000, seed=3)
    for k in range(len(plain._models)):
        np.testing.assert_allclose(fast._booster_predict(k, x), plain._models[k].predict(x),
                                   rtol=0, atol=1e-9)
    rng = np.random.default_rng(1)
    windows = rng.poisson(2.0, (300, 392)).astype(float)
    windows[:50, :300] = np.nan
    windows[rng.random(windows.shape) < 0.05] = np.nan
    end = np.datetime64("2011-11-20")
    a, b = plain.predict(windows, 14, end_days=end), fast.predict(windows, 14, end_days=end)
    np.testing.assert_array_equal(a.daily, b.daily)
    np.testing.assert_array_equal(a.cumulative, b.cumulative)
    np.testing.assert_allclose(a.mean, b.mean, rtol=0, atol=1e-9)


@needs_lleaves
def test_the_cache_is_reused_and_a_corrupt_file_is_rebuilt(
        tiny: tuple[Path, Panel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = tiny
    texts = _texts(path)
    first = compile_boosters(texts, cache_dir=tmp_path)
    assert first is not None and not any(p.cached for p in first)
    objects = sorted(tmp_path.glob("*.o"))
    assert len(objects) == len(texts)
    assert not list(tmp_path.glob("*.partial"))  # written under a temporary name, renamed

    def no_compile(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("compiled although cached")

    with monkeypatch.context() as m:
        m.setattr(compiled_trees, "_compile_into", no_compile)
        again = compile_boosters(texts, cache_dir=tmp_path)
    assert again is not None and all(p.cached for p in again)

    objects[0].write_bytes(b"\x7fELF not an object at all")  # corrupt (e.g. a bad disk)
    rebuilt = compile_boosters(texts, cache_dir=tmp_path)
    assert rebuilt is not None and sum(not p.cached for p in rebuilt) == 1
    assert len(list(tmp_path.glob("*.o"))) == len(texts)
    x = _rows(64)
    for p, q in zip(first, rebuilt, strict=True):
        np.testing.assert_array_equal(p.predict(x), q.predict(x))


@needs_lleaves
def test_without_a_usable_cache_it_compiles_in_memory(tiny: tuple[Path, Panel],
                                                       tmp_path: Path) -> None:
    path, _ = tiny
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    predictors = compile_boosters(_texts(path)[:1], cache_dir=blocked)
    assert predictors is not None and not predictors[0].cached


def test_without_lleaves_lightgbm_serves_the_same_forecast(
        tiny: tuple[Path, Panel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    path, panel = tiny
    reference = LightGBMForecaster.load(path, compiled=False)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "lleaves", None)  # as if not installed
        m.setenv("SHELFCAST_CACHE_DIR", str(tmp_path))
        with caplog.at_level(logging.WARNING, logger="forecasting.compiled_trees"):
            served = LightGBMForecaster.load(path)
            served.prepare_serving()
    assert served.trees_backend == "lightgbm"
    assert [r.getMessage() for r in caplog.records if "lleaves" in r.getMessage()]
    assert len(caplog.records) == 1  # one line says so
    a = reference.predict(panel.values, 14, end_days=panel.dates[-1])
    b = served.predict(panel.values, 14, end_days=panel.dates[-1])
    np.testing.assert_array_equal(a.daily, b.daily)
    np.testing.assert_array_equal(a.mean, b.mean)


@needs_lleaves
def test_a_failing_compile_or_the_off_switch_leaves_lightgbm_serving(
        tiny: tuple[Path, Panel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import lleaves

    path, _ = tiny

    def broken(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("LLVM said no")

    with monkeypatch.context() as m:
        m.setattr(lleaves.Model, "compile", broken)
        with caplog.at_level(logging.WARNING, logger="forecasting.compiled_trees"):
            assert compile_boosters(_texts(path), cache_dir=tmp_path) is None
    assert "LLVM said no" in caplog.text
    monkeypatch.setenv(COMPILED_TREES_ENV, "0")
    model = LightGBMForecaster.load(path, compiled=False)
    assert not model.compile_trees(cache_dir=tmp_path)
    assert model.trees_backend == "lightgbm"


class _Spy:
    """A booster stand-in recording predict's keyword arguments."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        self.kwargs: list[dict[str, Any]] = []

    def predict(self, x: np.ndarray, **kwargs: Any) -> Any:
        self.kwargs.append(kwargs)
        return self.booster.predict(x, **kwargs)


def test_cap_threads_reaches_lightgbm_s_predict(tiny: tuple[Path, Panel]) -> None:
    path, panel = tiny
    model = LightGBMForecaster.load(path, compiled=False)
    spies = [_Spy(b) for b in model._models]
    model._models = spies
    model.predict(panel.values, 7, end_days=panel.dates[-1])
    assert all(s.kwargs == [{}] for s in spies)  # uncapped: LightGBM's default, as before
    model.cap_threads(1)
    model.predict(panel.values, 7, end_days=panel.dates[-1])
    assert all(s.kwargs[-1] == {"num_threads": 1} for s in spies)
    with pytest.raises(ValueError, match="threads"):
        model.cap_threads(0)


@needs_lleaves
def test_cap_threads_reaches_the_compiled_trees(tiny: tuple[Path, Panel], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path, panel = tiny
    model = LightGBMForecaster.load(path, compiled=False)
    assert model.compile_trees(cache_dir=tmp_path)
    jobs: list[int] = []
    assert model._compiled is not None
    for predictor in model._compiled:
        real = predictor.model.predict
        monkeypatch.setattr(predictor.model, "predict",
                            lambda x, n_jobs, real=real: jobs.append(n_jobs) or real(x, n_jobs))
    model.cap_threads(2)
    model.predict(panel.values, 7, end_days=panel.dates[-1])
    assert jobs and set(jobs) == {2}


def test_lstm_lgbm_forwards_cap_threads_to_its_lightgbm_part() -> None:
    from forecasting.combination import load_combination

    model = load_combination(COMMITTED_MODEL, backend="numpy")
    assert model.lightgbm is not None and model.lightgbm._threads is None
    model.cap_threads(1)
    assert model.lightgbm._threads == 1
    assert model._new_lightgbm()._threads == 1  # a part fitted later (retrain) too


async def test_the_inferencer_caps_a_swapped_in_model(tiny: tuple[Path, Panel]) -> None:
    from forecasting.inferencer import Inferencer

    path, _ = tiny
    first = LightGBMForecaster.load(path, compiled=False)
    second = LightGBMForecaster.load(path, compiled=False)
    async with Inferencer(first, torch_threads=1) as inf:
        assert first._threads == 1
        inf.swap(second)  # retrain's roll-in: a model loaded while the worker serves
        assert second._threads == 1


@needs_lleaves
def test_a_worker_s_load_compiles_a_backtest_s_does_not() -> None:
    from forecasting.combination import LSTMLightGBMForecaster, load_combination
    from runtime.settings import Settings
    from streams.forecaster_setup import model_source

    plain = load_combination(COMMITTED_MODEL, backend="numpy")  # backtest, retrain's champion
    assert plain.lightgbm is not None and plain.lightgbm.trees_backend == "lightgbm"
    served, _ = model_source(Settings(model="lstm_lgbm", model_path=COMMITTED_MODEL))
    assert isinstance(served, LSTMLightGBMForecaster) and served.lightgbm is not None
    assert served.lightgbm.trees_backend == "compiled"
