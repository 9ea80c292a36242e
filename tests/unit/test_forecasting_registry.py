"""The registry knows every built-in model, builds heavy ones lazily, and says what kind each
is; the LSTM package imports one way; the inferencer and the stream go by the contract."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from forecasting import (
    Forecaster,
    IncrementalForecaster,
    MovingAverage,
    QuantileForecast,
    available_forecasters,
    forecaster_info,
    make_forecaster,
)
from forecasting.errors import UnknownForecasterError
from forecasting.inferencer import Inferencer
from runtime.errors import ConfigError
from runtime.settings import Settings
from shelfcast import cli
from streams.forecaster_setup import local_predict, model_info, model_source

ROOT = Path(__file__).resolve().parents[2]
BUILT_IN = ("ets", "lightgbm", "lstm", "lstm_lgbm", "moving_average", "seasonal_naive", "tsb")


def test_the_registry_lists_every_built_in_model() -> None:
    assert set(BUILT_IN) <= set(available_forecasters())
    with pytest.raises(UnknownForecasterError, match="lightgbm, lstm, lstm_lgbm, moving_average"):
        forecaster_info("arima")


def _imports_after(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter has imported after running `code`."""
    probe = (f"{code}\nimport sys\n"
             "print(','.join(m for m in ('torch', 'lightgbm', 'statsforecast') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(ROOT)})
    return [m for m in out.stdout.strip().split(",") if m]


def test_importing_forecasting_and_building_peers_loads_no_heavy_library() -> None:
    assert _imports_after("import forecasting; forecasting.available_forecasters()") == []
    # ETS and LightGBM load statsforecast / lightgbm only when they forecast or fit.
    assert _imports_after("from forecasting import make_forecaster as m\n"
                          "m('ets'); m('lightgbm'); m('tsb')") == []


def test_building_the_lstm_loads_torch_then() -> None:
    pytest.importorskip("torch")
    assert _imports_after("from forecasting import make_forecaster as m\n"
                          "m('lstm', hidden=4, device='cpu')") == ["torch"]


@pytest.mark.parametrize("name", BUILT_IN)
def test_registry_flags_agree_with_the_models_it_builds(name: str) -> None:
    if name == "lstm":
        pytest.importorskip("torch")
    info = forecaster_info(name)
    model = make_forecaster(name, **({"device": "cpu"} if name == "lstm" else {}))
    assert model.name == name
    assert model.fits is info.fits
    assert model.needs_fit is info.fits  # a fresh global model is untrained
    assert isinstance(model, IncrementalForecaster) is info.incremental


def test_shared_options_reach_only_the_models_that_take_them() -> None:
    shared = {"horizon": 7, "n_jobs": 3, "device": "cpu"}
    assert make_forecaster("lightgbm", shared=shared).config.horizon == 7  # type: ignore[attr-defined]
    assert make_forecaster("ets", shared=shared).n_jobs == 3  # type: ignore[attr-defined]
    model = make_forecaster("moving_average", shared=shared, window=5)
    assert isinstance(model, MovingAverage) and model.window == 5


def test_the_lstm_package_imports_one_way() -> None:
    """No circle among forecasting/lstm's modules (module-level and TYPE_CHECKING imports
    alike; imports inside functions are lazy and allowed)."""
    package = ROOT / "forecasting" / "lstm"
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        deps: set[str] = set()
        tree = ast.parse(path.read_text())
        nodes = list(tree.body)
        while nodes:
            node = nodes.pop()
            if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks count
                nodes.extend(node.body)
            elif isinstance(node, ast.ImportFrom) and node.module \
                    and node.module.startswith("forecasting.lstm."):
                deps.add(node.module.rsplit(".", 1)[1])
        graph[path.stem] = deps
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import circle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for dep in graph.get(module, ()):
            visit(dep, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


class _DatedSpy(MovingAverage):
    """A local model that records the end dates it is given."""

    def __init__(self) -> None:
        super().__init__(window=7)
        self.seen: list[object] = []

    def _predict(self, windows: np.ndarray, horizon: int,
                 end_days: object) -> QuantileForecast:
        self.seen.append(end_days)
        return super()._predict(windows, horizon, end_days)


async def test_a_keyed_request_to_a_model_without_state_passes_the_dates_on() -> None:
    model = _DatedSpy()
    day = np.datetime64("2024-03-01")
    async with Inferencer(model, max_wait_ms=0) as inferencer:
        await inferencer.predict_keyed(["a", "b"], np.ones((2, 14)), 3, day)
    (ends,) = model.seen
    assert np.array_equal(np.asarray(ends), np.array([day, day], dtype="datetime64[D]"))


async def test_local_predict_hands_the_end_dates_to_the_model() -> None:
    model = _DatedSpy()
    ends = np.array(["2024-03-01", "2024-03-02"], dtype="datetime64[D]")
    served = await local_predict(model)(np.ones((2, 14)), 3, end_days=ends)
    assert served.forecast.n_series == 2 and model.seen[0] is ends
    assert served.model_version == model.model_version and served.states is None


def test_an_unknown_model_name_is_a_one_line_error_listing_the_registered_ones(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHELFCAST_MODEL", "arima")
    settings = Settings()  # runtime/ knows no model names: the name is checked where used
    with pytest.raises(ConfigError, match="registered: ets, lightgbm, lstm"):
        model_info(settings)
    assert cli.main(["settings"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("shelfcast: error: SHELFCAST_MODEL='arima'")
    assert all(name in err for name in BUILT_IN)


def test_the_stream_serves_local_models_and_artifacts_but_not_an_unfitted_peer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELFCAST_MODEL", "seasonal_naive")
    model, version = model_source(Settings())
    assert isinstance(model, Forecaster) and model.name == "seasonal_naive" and version is None
    monkeypatch.setenv("SHELFCAST_MODEL", "lightgbm")
    with pytest.raises(ConfigError, match="no saved form"):
        model_source(Settings())
    monkeypatch.setenv("SHELFCAST_MODEL", "lstm")
    with pytest.raises(ConfigError, match="SHELFCAST_MODEL_PATH is not set"):
        model_source(Settings())
