"""The worker's forecaster: a local model called directly, or a trained model loaded from its
artifact (the LSTM) behind the micro-batching inferencer (incremental per SKU), with new
model versions rolled in while the stream runs. `SHELFCAST_MODEL` is checked here against
the forecaster registry (runtime's settings know no model names)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import numpy as np

from forecasting import (
    Forecaster,
    ModelInfo,
    available_forecasters,
    forecaster_info,
    make_forecaster,
)
from forecasting.covariates import Covariates
from forecasting.errors import UnknownForecasterError
from forecasting.inferencer import Inferencer, ServedForecast
from runtime.errors import ConfigError
from runtime.settings import Settings
from streams.processor import PredictFn

__all__ = ["DeferredPredict", "check_servable", "local_predict", "model_info", "model_source",
           "provisional_version", "reads_holidays", "served_forecaster",
           "warn_without_holidays"]

log = logging.getLogger(__name__)


def local_predict(forecaster: Forecaster) -> PredictFn:
    """Call a forecaster's batched `predict` directly (the windows' end dates passed on; a
    model without calendar features ignores them; no carried state)."""

    async def predict(windows: np.ndarray, horizon: int, *, keys: Sequence[str] | None = None,
                      end_days: np.ndarray | None = None,
                      states: Sequence[bytes | None] | None = None,
                      covariates: Covariates | None = None) -> ServedForecast:
        return ServedForecast(forecaster.predict(windows, horizon, end_days=end_days,
                                                 covariates=covariates),
                              forecaster.model_version)

    return predict


def model_info(settings: Settings) -> ModelInfo:
    """What the registry knows of `settings.model`; a one-line ConfigError listing the
    registered names when it is not one of them."""
    try:
        return forecaster_info(settings.model)
    except UnknownForecasterError:
        raise ConfigError(f"SHELFCAST_MODEL={settings.model!r} is not a registered forecaster "
                          f"(registered: {', '.join(available_forecasters())})") from None


def check_servable(settings: Settings) -> ModelInfo:
    """What `model_source` would serve, checked without loading anything (a worker calls it
    before it connects): a one-line ConfigError saying how to get a model when the configured
    one cannot be served."""
    info = model_info(settings)
    if info.loads_artifact:
        if settings.model_path is None:
            raise ConfigError(
                f"SHELFCAST_MODEL={info.name} serves a trained model and SHELFCAST_MODEL_PATH "
                "is not set: train one with `shelfcast train --data CSV --out DIR`, then set "
                "SHELFCAST_MODEL_PATH=DIR (or serve a baseline: SHELFCAST_MODEL=moving_average)")
        if not settings.model_path.is_dir():
            raise ConfigError(
                f"SHELFCAST_MODEL_PATH={settings.model_path} is not a directory: train a model "
                "there with `shelfcast train --data CSV --out DIR`")
        return info
    if info.fits:
        servable = [n for n in available_forecasters()
                    if not forecaster_info(n).fits or forecaster_info(n).loads_artifact]
        raise ConfigError(f"SHELFCAST_MODEL={info.name} is trained on a panel and has no saved "
                          f"form a worker can load (servable: {', '.join(servable)})")
    return info


def model_source(settings: Settings) -> tuple[Forecaster, str | None]:
    """The configured forecaster and, for a model loaded from an artifact, the version it was
    loaded at. A model that must be trained on a panel is served from its artifact
    (SHELFCAST_MODEL_PATH); one without an artifact format cannot be served."""
    info = check_servable(settings)
    if info.loads_artifact:
        assert settings.model_path is not None  # check_servable
        forecaster = _load(info.name, settings.model_path, settings.device,
                           settings.lstm_backend)
        return forecaster, forecaster.model_version
    return make_forecaster(info.name), None


# What a GPU driver leaves on a host (NVIDIA's, AMD's for ROCm builds of torch): without any
# of them torch cannot see a CUDA device, so "auto" is the CPU without asking torch.
GPU_DRIVER_PATHS = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd")


def _serving_device(device: str, backend: str = "auto") -> str:
    """`device`, with "auto" settled as "cpu" on a host with no GPU driver when the numpy
    LSTM may serve: it then serves without importing torch (2-4 s of a worker's start here,
    most of its model load; benchmarks/README.md "Recovery time"). Where a driver is
    present, or torch serves anyway (backend "torch"), "auto" stays for torch to settle."""
    if device != "auto" or backend == "torch":
        return device
    if any(Path(p).exists() for p in GPU_DRIVER_PATHS):
        return device
    return "cpu"


def _load(name: str, path: Path, device: str = "auto", backend: str = "auto") -> Forecaster:
    try:  # on SHELFCAST_DEVICE (auto: CUDA when there is one); the LSTM in numpy on CPU
        forecaster = make_forecaster(name, shared={"device": _serving_device(device, backend),
                                                   "backend": backend}, path=str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the model in {path}: {exc}") from exc
    lstm_config = getattr(getattr(forecaster, "lstm", forecaster), "config", None)
    if getattr(lstm_config, "promo_inputs", False):
        # (a measured lever left off: the stream does not fold past days' flags into states)
        raise ConfigError(f"the model in {path} reads promotion inputs (LSTMConfig."
                          "promo_inputs), which the stream does not feed: serve a model "
                          "trained without them")
    # (a model that reads the data's own holidays gets them from the `shop.calendar` topic:
    # streams.calendar_feed; a location without any reads "no holiday")
    # Compile what compiles (lstm_lgbm's boosters), here: at start, before the worker joins
    # its group, and for a roll-in on a thread while the old model serves.
    forecaster.prepare_serving()
    return forecaster


def reads_holidays(forecaster: Forecaster) -> bool:
    """True when the model reads the data's own holidays (its LSTM state or head, or its
    LightGBM part's holiday features): the stream hands them from `shop.calendar`."""
    lightgbm = getattr(forecaster, "lightgbm", forecaster)
    return bool(getattr(forecaster, "reads_holidays", False)
                or getattr(lightgbm, "holidays_used", False))


def warn_without_holidays(forecaster: Forecaster, calendar_entries: int) -> None:
    """Log a warning when the model was trained on a holiday column and the calendar holds
    nothing: every day is then forecast as a working day (publish one: `shelfcast calendar
    publish FILE`)."""
    if calendar_entries == 0 and reads_holidays(forecaster):
        log.warning("model %s was trained on the data's own holidays, and shop.calendar holds "
                    "none: every day is forecast as a non-holiday (load the calendar with "
                    "`shelfcast calendar publish FILE`)", forecaster.model_version)


def provisional_version(settings: Settings) -> str:
    """The version a worker will serve, before its model has loaded (for reports until
    then): the artifact's recorded version, else the model's name."""
    if settings.model_path is not None and model_info(settings).loads_artifact:
        return _artifact_version(settings.model_path) or settings.model
    return settings.model


def _artifact_version(path: Path) -> str | None:
    """The version a model directory holds now (None while it cannot be read)."""
    from forecasting.lstm.artifact_files import read_metadata

    try:
        return str(read_metadata(path)["model_version"])
    except (OSError, ValueError, KeyError):
        return None


class DeferredPredict:
    """A PredictFn for an engine that runs before its serving path exists: Faust's worker
    (its event loop starts after the processor is built) and the batch worker (its engine
    joins and recovers while the model loads). Calls wait until `serve(predict)` gives the
    serving path, entered on the serving loop (`served_forecaster`), or `fail(error)` says
    none will come."""

    def __init__(self) -> None:
        self._predict: PredictFn | None = None
        self._error: BaseException | None = None
        self._ready: asyncio.Event | None = None  # serve or fail: wakes the waiting calls
        self._served: asyncio.Event | None = None

    def serve(self, predict: PredictFn) -> None:
        """Forecast through `predict` from now on (call it on the serving loop)."""
        self._predict = predict
        self.served.set()
        self._event().set()

    def fail(self, error: BaseException) -> None:
        """No serving path will come (the model did not load): every call, waiting or
        later, raises `error`, so no batch waits for ever."""
        self._error = error
        self._event().set()

    @property
    def served(self) -> asyncio.Event:
        """Set once `serve` gave the serving path (made on the serving loop)."""
        if self._served is None:
            self._served = asyncio.Event()
        return self._served

    def _event(self) -> asyncio.Event:
        if self._ready is None:  # made on the serving loop, not where the app was built
            self._ready = asyncio.Event()
        return self._ready

    async def __call__(self, windows: np.ndarray, horizon: int, *,
                       keys: Sequence[str] | None = None, end_days: np.ndarray | None = None,
                       states: Sequence[bytes | None] | None = None,
                       covariates: Covariates | None = None) -> ServedForecast:
        if self._predict is None:
            await self._event().wait()
        if self._error is not None:
            raise self._error
        assert self._predict is not None
        if covariates is None:
            return await self._predict(windows, horizon, keys=keys, end_days=end_days,
                                       states=states)
        return await self._predict(windows, horizon, keys=keys, end_days=end_days,
                                   states=states, covariates=covariates)


@contextlib.asynccontextmanager
async def served_forecaster(
    settings: Settings, on_new_version: Callable[[str], None] | None = None, *,
    source: tuple[Forecaster, str | None] | None = None, on_loop: bool = False,
) -> AsyncIterator[tuple[Forecaster, PredictFn]]:
    """(forecaster, predict): the one serving path of both engines. For a model loaded from
    an artifact (the LSTM), an Inferencer micro-batches every SKU's request into one forward
    pass and carries each SKU's recurrent state (when the model is incremental), resumed
    from and returned as the SKU's durable state; a task polls `model_path` and swaps a new
    version in, then tells `on_new_version` (for reports: each forecast carries the version
    that made it). `source`: what `model_source(settings)` gave, when already loaded.
    `on_loop`: forward passes run on the event loop, one per turn of it (`Inferencer`): for
    the batch engine, whose partitions are tasks of one loop; the Faust engine keeps the
    worker thread."""
    forecaster, loaded = source if source is not None else model_source(settings)
    if loaded is None:
        yield forecaster, local_predict(forecaster)
        return
    serving = loaded

    async with Inferencer(forecaster, max_batch=settings.max_batch,
                          max_wait_ms=settings.max_wait_ms, on_loop=on_loop) as inferencer:
        inferencer.warm_up()  # torch's first calls now, not in the stream's first batch

        async def predict(windows: np.ndarray, horizon: int, *,
                          keys: Sequence[str] | None = None,
                          end_days: np.ndarray | None = None,
                          states: Sequence[bytes | None] | None = None,
                          covariates: Covariates | None = None) -> ServedForecast:
            if keys is None:
                return await inferencer.serve(windows, horizon)
            return await inferencer.serve_keyed(keys, windows, horizon, end_days,
                                                states=states, covariates=covariates)

        async def watch() -> None:
            nonlocal serving
            path = settings.model_path
            assert path is not None
            while True:
                await asyncio.sleep(settings.model_poll_s)
                found = await asyncio.to_thread(_artifact_version, path)
                if found is None or found == serving:
                    continue
                try:
                    candidate = await asyncio.to_thread(_load, settings.model, path,
                                                        settings.device,
                                                        settings.lstm_backend)
                except ConfigError as exc:  # half-written directory: try again next time
                    log.warning("model not reloaded: %s", exc)
                    continue
                inferencer.swap(candidate)
                log.info("rolled in model %s (was %s)", candidate.model_version, serving)
                serving = candidate.model_version
                if on_new_version is not None:
                    on_new_version(serving)

        watcher = asyncio.create_task(watch())
        try:
            yield forecaster, predict
        finally:
            watcher.cancel()
