"""Compiled LightGBM trees travel with the model: a save writes portable objects beside the
boosters; a worker's load on a host with an empty cache (a new container) reads them and
compiles nothing; what it serves equals LightGBM's own forecast; a corrupt or missing object
falls back to the host cache or a compile, never to a failure."""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("lightgbm")
if not all(importlib.util.find_spec(m) for m in ("lleaves", "llvmlite")):
    pytest.skip("lleaves/llvmlite not installed", allow_module_level=True)

from forecasting import compiled_trees
from forecasting.compiled_trees import ARTIFACT_TREES_DIR, COMPILED_TREES_ENV, PORTABLE_CPU
from forecasting.data import Panel
from forecasting.lightgbm_peer import LightGBMForecaster
from tests.support.demand import weekly_panel


class _NoCompile:
    """Fails the test if lleaves generates a module (what a compile starts with)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        raise AssertionError("lleaves compiled a booster although its object was at hand")


def _forbid_compile(monkeypatch: pytest.MonkeyPatch) -> _NoCompile:
    import lleaves.lleaves

    spy = _NoCompile()
    monkeypatch.setattr(lleaves.lleaves.compiler, "compile_to_module", spy)
    return spy


@pytest.fixture(scope="module")
def panel() -> Panel:
    return weekly_panel(20, 200, 0)


@pytest.fixture(scope="module")
def fitted(panel: Panel) -> LightGBMForecaster:
    return LightGBMForecaster(14, levels=(0.1, 0.5, 0.9), n_estimators=12, num_leaves=7,
                              min_child_samples=20).fit(panel)


@pytest.fixture
def fresh_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty host cache, as in a container that has never run this model."""
    cache = tmp_path / "host-cache"
    monkeypatch.setenv("SHELFCAST_CACHE_DIR", str(cache))
    monkeypatch.delenv(COMPILED_TREES_ENV, raising=False)
    return cache


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _same_forecast(a: LightGBMForecaster, b: LightGBMForecaster, panel: Panel) -> None:
    fa = a.predict(panel.values, 14, end_days=panel.dates[-1])
    fb = b.predict(panel.values, 14, end_days=panel.dates[-1])
    np.testing.assert_array_equal(fa.daily, fb.daily)
    np.testing.assert_array_equal(fa.cumulative, fb.cumulative)
    np.testing.assert_allclose(fa.mean, fb.mean, rtol=0, atol=1e-9)


def test_a_new_container_serves_the_saved_trees_without_compiling(
        fitted: LightGBMForecaster, panel: Panel, tmp_path: Path, fresh_host: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "model"
    fitted.save(out)  # compiles: the trainer pays it, once
    objects = sorted((out / ARTIFACT_TREES_DIR).glob("*.o"))
    assert len(objects) == len(fitted._models)
    before = _files(out)
    shutil.rmtree(fresh_host, ignore_errors=True)  # the save's host is not the worker's
    no_compile = _forbid_compile(monkeypatch)

    served = LightGBMForecaster.load(out, compiled=True)  # a worker's load
    assert served.trees_backend == "compiled"
    assert served._compiled is not None
    assert [p.source for p in served._compiled] == ["artifact"] * len(objects)
    assert no_compile.calls == 0
    assert not list(fresh_host.rglob("*.o"))  # nothing compiled into the host cache
    assert _files(out) == before  # a load never writes the artifact
    _same_forecast(served, LightGBMForecaster.load(out, compiled=False), panel)


def test_without_trees_in_the_artifact_the_worker_compiles_into_its_cache_only(
        fitted: LightGBMForecaster, panel: Panel, tmp_path: Path, fresh_host: Path) -> None:
    out = tmp_path / "model"
    fitted.save(out, trees=False)  # as saved before this layout
    assert not (out / ARTIFACT_TREES_DIR).exists()
    before = _files(out)
    served = LightGBMForecaster.load(out, compiled=True)
    assert served._compiled is not None
    assert {p.source for p in served._compiled} == {"compiled"}
    assert len(list(fresh_host.rglob("*.o"))) == len(fitted._models)
    assert _files(out) == before
    again = LightGBMForecaster.load(out, compiled=True)  # the next start on this host
    assert again._compiled is not None and {p.source for p in again._compiled} == {"cache"}
    _same_forecast(again, LightGBMForecaster.load(out, compiled=False), panel)


def test_the_off_switch_saves_no_trees(fitted: LightGBMForecaster, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(COMPILED_TREES_ENV, "0")
    fitted.save(tmp_path / "model")
    assert not (tmp_path / "model" / ARTIFACT_TREES_DIR).exists()
    assert LightGBMForecaster.load(tmp_path / "model").predict is not None


def test_a_corrupt_shipped_object_is_not_loaded(
        fitted: LightGBMForecaster, panel: Panel, tmp_path: Path, fresh_host: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "model"
    fitted.save(out)
    first = sorted((out / ARTIFACT_TREES_DIR).glob("*.o"))[0]
    first.write_bytes(b"\x7fELF not an object at all")
    with caplog.at_level(logging.WARNING, logger="forecasting.compiled_trees"):
        served = LightGBMForecaster.load(out, compiled=True)
    assert served._compiled is not None
    assert sorted(p.source for p in served._compiled).count("compiled") == 1
    assert "corrupt" in caplog.text
    _same_forecast(served, LightGBMForecaster.load(out, compiled=False), panel)


def test_objects_are_compiled_for_the_portable_cpu_whatever_the_host(
        monkeypatch: pytest.MonkeyPatch, fitted: LightGBMForecaster, tmp_path: Path) -> None:
    import lleaves
    import llvmlite.binding as llvm

    target = compiled_trees._target()
    assert PORTABLE_CPU in target and llvm.get_host_cpu_name() not in target.split("|")
    monkeypatch.setattr(llvm, "get_host_cpu_name", lambda: "some-other-cpu")
    monkeypatch.setattr(llvm, "get_host_cpu_features", lambda: None)  # never read
    assert compiled_trees._target() == target  # another node type finds the same objects

    seen: list[dict[str, Any]] = []
    real = lleaves.Model.compile

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(kwargs)
        real(self, *args, **kwargs)

    monkeypatch.setattr(lleaves.Model, "compile", spy)
    assert compiled_trees.compile_boosters([fitted._models[0].model_to_string()],
                                           cache_dir=tmp_path) is not None
    assert seen and all(k.get("target_cpu") == PORTABLE_CPU for k in seen)
    assert all(k.get("target_cpu_features") == "" for k in seen)


def test_the_served_mix_from_a_trained_artifact_starts_without_compiling(
        tmp_path: Path, fresh_host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lstm_lgbm end to end: trained, saved as `shelfcast train` saves it, then loaded as a
    worker loads it on a fresh host: compiled trees from the artifact, no compile, and the
    forecast equal to the uncompiled (backtest) load's."""
    from forecasting.combination import LSTMLightGBMForecaster, load_combination
    from forecasting.model_dir import save_model_dir
    from runtime.settings import Settings
    from streams.forecaster_setup import model_source
    from tests.support.lstm import fit_small_mix

    panel = weekly_panel(16, 150, 3)
    model, hist = fit_small_mix(panel)
    out = tmp_path / "mix"
    save_model_dir(model, out, data_fingerprint=panel.fingerprint())
    assert model.lightgbm is not None
    shipped = list((out / "lightgbm" / ARTIFACT_TREES_DIR).glob("*.o"))
    assert len(shipped) == len(model.lightgbm._models)

    spy = _forbid_compile(monkeypatch)
    served, _ = model_source(Settings(model="lstm_lgbm", model_path=out))
    assert isinstance(served, LSTMLightGBMForecaster) and served.lightgbm is not None
    assert served.lightgbm.trees_backend == "compiled" and spy.calls == 0
    plain = load_combination(out, backend="numpy")
    assert plain.lightgbm is not None and plain.lightgbm.trees_backend == "lightgbm"
    a = served.predict(hist.values, 7, end_days=hist.dates[-1])
    b = plain.predict(hist.values, 7, end_days=hist.dates[-1])
    np.testing.assert_array_equal(a.daily, b.daily)
    np.testing.assert_allclose(a.mean, b.mean, rtol=0, atol=1e-9)
