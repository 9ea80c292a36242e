"""LightGBM boosters served as native code: lleaves compiles each booster's model text through
LLVM (llvmlite), once per model and host, cached on disk; LightGBM's own predict where that
cannot be had.

Why: the served default (`lstm_lgbm`) predicts 10 boosters x 28 feature rows per SKU
forecast. LightGBM's `Booster.predict` pays a fixed cost per call (and, uncapped, spins an
OpenMP team over every core); the compiled forest predicted the same boosters 5-7x faster
than LightGBM on one thread, equal to ~1e-13 (benchmarks/lightgbm_serving.py).

- `compile_boosters(texts)`: one `TreePredictor` per booster text, compiled by lleaves, or
  None (and one log line saying why) when lleaves/llvmlite is not installed, compiling fails,
  a probe disagrees with LightGBM, or `SHELFCAST_COMPILED_TREES=0` turns it off. The caller
  then keeps LightGBM's predict.
- Where objects are found: the model artifact's own `compiled-trees/` directory first
  (`ARTIFACT_TREES_DIR`, beside the booster files: written when the model is saved,
  `LightGBMForecaster.save`, i.e. at `shelfcast train`, a retrain, a quick model), then the
  host cache `<cache base>/lightgbm-trees/` (`runtime.cache`: the rule the Kafka jars' cache
  follows); only the host cache is written by a load. Why the artifact: a worker's cache
  directory is empty in every new container (k8s: an emptyDir; compose: the container's
  own layer), so a cache on the host alone made each new pod compile for 15-31 s before it
  served, while the model volume is what every pod already mounts (read-only).
- Objects are compiled for the architecture's generic CPU (`PORTABLE_CPU`, no host
  features), so one object serves every host of that architecture (a pod may land on any
  node): measured as fast as the host-tuned object here (benchmarks/README.md "Recovery
  time"). File name `<key>.<digest>.o`: `key` is the sha256 of the booster text, the lleaves
  and llvmlite versions, the compile options and the target (triple, machine); `digest` is
  the sha256 of the object's bytes, checked before lleaves loads it (lleaves itself loads
  whatever the file holds): a corrupt file is removed where it can be and compiled again,
  never handed to LLVM. Objects are written to a temporary name and renamed into place,
  under a per-key lock file, so worker processes that start together on one host compile a
  model once and never read half a file. An unwritable cache directory costs a compile per
  process start, nothing else.
- Compile time meets startup at load, in serving processes only, and only when neither the
  artifact nor the host cache has the object (an artifact saved before this layout, by
  other lleaves/llvmlite versions or for another architecture): a worker's model load
  (`streams.forecaster_setup`, `Forecaster.prepare_serving`) then compiles (~1-3 s per
  60-tree booster on this 2-core host, the demo's 10 boosters 15-31 s; found: a few ms).
  Not LightGBM serving while a thread compiles, then a swap: a model version's forecasts
  would then depend on how far the compile had got (compiled and LightGBM outputs differ
  by ~1e-13, which an integer quantile's rounding could in principle see), and a recovered
  worker's forecasts must equal an uninterrupted run's. A worker's roll-in of a retrained
  model already loads it off the event loop (streams.forecaster_setup), so the old model
  serves while the new one compiles; the artifact's objects make that compile rare too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from forecasting._numeric import FloatArray
from runtime.cache import cache_base

__all__ = ["ARTIFACT_TREES_DIR", "COMPILED_TREES_ENV", "TreePredictor", "compile_boosters",
           "trees_cache_dir"]

log = logging.getLogger(__name__)

COMPILED_TREES_ENV = "SHELFCAST_COMPILED_TREES"  # "0": serve with LightGBM's own predict
CACHE_FORMAT = 2  # bump when the key's recipe or the compile options change (2: portable)
ARTIFACT_TREES_DIR = "compiled-trees"  # beside a saved model's booster files
# LLVM's baseline CPU of the process's architecture, without the host's extra features: an
# object compiled so runs on any host of that architecture.
PORTABLE_CPU, PORTABLE_FEATURES = "generic", ""
PROBE_TOLERANCE = 1e-9  # compiled vs LightGBM on the probe rows, absolute
PARALLEL_ROWS = 4096  # uncapped: from this many rows on, predict on every core


def trees_cache_dir() -> Path:
    """Where compiled boosters are kept: `<cache base>/lightgbm-trees`."""
    return cache_base() / "lightgbm-trees"


@dataclass
class TreePredictor:
    """One booster compiled to native code (lleaves). `predict(x, threads)`: one value per row
    of `x` (n, features), as LightGBM's `Booster.predict` gives (objective applied)."""

    model: Any  # lleaves.Model, compiled
    cached: bool  # loaded from the artifact or the cache (not compiled by this call)
    source: str = "compiled"  # "artifact", "cache" or "compiled" (by this call)

    def predict(self, x: FloatArray, threads: int | None = None) -> FloatArray:
        # lleaves takes a pointer to the array it is given, after `astype(copy=False).ravel()`
        # in a helper: an input that is not C-contiguous float64 would be copied there and
        # freed before the call reads it. Hand it one that needs no copy.
        rows = np.ascontiguousarray(x, dtype=np.float64)
        if threads is None:
            threads = (os.cpu_count() or 1) if rows.shape[0] >= PARALLEL_ROWS else 1
        out: FloatArray = self.model.predict(rows, n_jobs=max(1, int(threads)))
        return out


def compile_boosters(texts: Sequence[str], *, check: Sequence[Any] | None = None,
                     cache_dir: Path | None = None,
                     artifact_dir: Path | None = None) -> list[TreePredictor] | None:
    """One compiled predictor per booster text (module docstring), or None after logging why
    LightGBM's predict serves instead. `check`: the LightGBM boosters the texts came from;
    each compiled one must agree with its booster on probe rows (NaN included) within
    PROBE_TOLERANCE. `cache_dir`: where objects are read and written (default
    `trees_cache_dir()`; a model's save passes its artifact's `ARTIFACT_TREES_DIR`).
    `artifact_dir`: read first, never written (the model's `ARTIFACT_TREES_DIR` when it was
    loaded from a directory)."""
    if os.environ.get(COMPILED_TREES_ENV, "").strip() == "0":
        log.info("LightGBM trees served by LightGBM's predict (%s=0)", COMPILED_TREES_ENV)
        return None
    try:
        import lleaves  # noqa: F401  (the import is what may fail)
        import llvmlite.binding  # noqa: F401
    except ImportError as exc:
        log.warning("LightGBM trees served by LightGBM's predict (slower): lleaves is not "
                    "usable here (%s); pip install 'lleaves' 'llvmlite<0.45'", exc)
        return None
    directory = trees_cache_dir() if cache_dir is None else Path(cache_dir)
    started = time.perf_counter()
    log.info("loading %d LightGBM boosters as native code (lleaves: from the model's "
             "artifact or this host's cache, else compiled now, ~1-3 s per booster of 60 "
             "trees)", len(texts))
    try:
        target = _target()
        predictors = [_load_or_compile(text, directory, target, artifact_dir)
                      for text in texts]
        if check is not None:
            _probe(predictors, check)
    except Exception as exc:  # any failure of the optional fast path: LightGBM serves
        log.warning("LightGBM trees served by LightGBM's predict (slower): compiling them "
                    "failed: %s: %s", type(exc).__name__, exc)
        return None
    log.info("LightGBM boosters served compiled: %d of %d compiled now, %d from the model "
             "artifact, %d from the cache, in %.2f s (%s)",
             sum(p.source == "compiled" for p in predictors), len(predictors),
             sum(p.source == "artifact" for p in predictors),
             sum(p.source == "cache" for p in predictors), time.perf_counter() - started,
             directory)
    return predictors


# --- the cache -----------------------------------------------------------------------------
def _target() -> str:
    """What an object is compiled for: this process's triple and machine at the portable
    CPU (never the host's own CPU or features: the object may travel with the artifact),
    and the versions of the compilers."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    return "|".join([f"format={CACHE_FORMAT}", llvm.get_process_triple(),
                     f"cpu={PORTABLE_CPU}", f"features={PORTABLE_FEATURES}",
                     platform.machine(), f"lleaves={metadata.version('lleaves')}",
                     f"llvmlite={metadata.version('llvmlite')}"])


_PORTABLE = {"target_cpu": PORTABLE_CPU, "target_cpu_features": PORTABLE_FEATURES}


def _key(text: str, target: str) -> str:
    digest = hashlib.sha256(text.encode())
    digest.update(b"\0" + target.encode())
    return digest.hexdigest()


def _verified(directory: Path, key: str) -> Path | None:
    """A cached object for `key` whose bytes match the digest in its name; a file that does
    not match is removed (it is rebuilt)."""
    for path in sorted(directory.glob(f"{key}.*.o")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest()[:32] == path.name[len(key) + 1:-2]:
            return path
        log.warning("compiled-trees file %s is corrupt: not used (removed where it can be)", path)
        with contextlib.suppress(OSError):
            path.unlink()
    return None


@contextlib.contextmanager
def _key_lock(directory: Path, key: str) -> Iterator[None]:
    """Hold `<key>.lock` (flock): one process per host compiles a given booster."""
    with open(directory / f"{key}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_or_compile(text: str, directory: Path, target: str,
                     artifact: Path | None = None) -> TreePredictor:
    import lleaves

    key = _key(text, target)
    with tempfile.TemporaryDirectory(prefix="shelfcast-trees-") as tmp:
        model_file = Path(tmp) / "booster.txt"  # lleaves reads the model from a file
        model_file.write_text(text)
        model = lleaves.Model(model_file=str(model_file))
        shipped = _verified(artifact, key) if artifact is not None else None
        if shipped is not None:
            model.compile(cache=str(shipped), **_PORTABLE)
            return TreePredictor(model, cached=True, source="artifact")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            found = _verified(directory, key)
            if found is None:
                with _key_lock(directory, key):
                    found = _verified(directory, key)  # another process may have made it
                    if found is None:
                        _compile_into(model, directory, key)
                        return TreePredictor(model, cached=False)
        except OSError as exc:  # no writable cache: compile in memory, every start
            log.warning("compiled-trees cache %s not usable (%s): compiling without it",
                        directory, exc)
            model.compile(**_PORTABLE)
            return TreePredictor(model, cached=False)
        model.compile(cache=str(found), **_PORTABLE)
        return TreePredictor(model, cached=True, source="cache")


def _compile_into(model: Any, directory: Path, key: str) -> None:
    """Compile `model`, its object written to a temporary name and renamed into place."""
    partial = directory / f".{key}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
    try:
        model.compile(cache=str(partial), **_PORTABLE)  # lleaves writes it there once compiled
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()[:32]
        os.replace(partial, directory / f"{key}.{digest}.o")
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


def _probe(predictors: Sequence[TreePredictor], boosters: Sequence[Any]) -> None:
    """Raise when a compiled booster disagrees with LightGBM's on a few made-up rows."""
    for k, (predictor, booster) in enumerate(zip(predictors, boosters, strict=True)):
        n_features = int(booster.num_feature())
        rng = np.random.default_rng(k)
        rows = rng.normal(0.0, 3.0, (16, n_features))
        rows[rng.random(rows.shape) < 0.2] = np.nan
        rows[0] = 0.0
        want = np.asarray(booster.predict(rows, num_threads=1), dtype=np.float64)
        got = predictor.predict(rows, threads=1)
        err = float(np.max(np.abs(want - got)))
        if not err <= PROBE_TOLERANCE:
            raise RuntimeError(f"booster {k}: compiled and LightGBM predictions differ by "
                               f"{err:.3g} on probe rows")
