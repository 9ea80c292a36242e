"""The demo's model: its training panel (the order lines before the replayed days) and the
score of the served forecasts against what the replay then sold, beside the baseline's.

The baseline is scored on the same windows: the events the demo published, in the order it
published them, go through a fresh `BatchProcessor` offline with the moving average in the
LSTM's place, so every (SKU, bucket) the stream forecast gets the baseline's forecast from
the very window the stream held. What the replay sold is that processor's own demand per SKU
and day (orders net of cancellations, redeliveries counted once, as the stream counts them).
"""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.data import Panel
from forecasting.metrics import coverage, pinball
from runtime.settings import Settings
from schemas import sku_key
from shelfcast.demo.replay import LOCATION

__all__ = ["HistorySplit", "ModelScore", "offline_baseline", "score_forecasts",
           "split_history"]

DAY_S = 86_400
# (sku@location, last closed bucket) -> (levels, daily quantiles horizon x levels)
Forecasts = dict[tuple[str, int], tuple[tuple[float, ...], np.ndarray]]


@dataclass(frozen=True)
class HistorySplit:
    """Where the replay starts in the file, and the daily demand before it (training)."""

    replay_from_line: int  # 0-based data row index of the first replayed order line
    replay_first_day: str
    panel: Panel  # net daily demand per SKU before replay_first_day (top SKUs by volume)


def split_history(path: Path, replay_lines: int, *, max_series: int = 400) -> HistorySplit:
    """The replay takes (about) the last `replay_lines` order lines of the file, from the start
    of the day the first of them falls on; the days before are the training history: each
    SKU's net daily quantity (cancellations subtracted, days clipped at 0; NaN before its
    first sale), for the `max_series` SKUs that sold most (a global model learns the shape
    of demand, not the SKUs' names)."""
    opener = gzip.open if path.suffix == ".gz" else open
    days: list[str] = []
    rows: list[tuple[str, str, int]] = []  # (sku, day, signed quantity)
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
        for row in csv.DictReader(fh):
            day = row.get("InvoiceDate", "")[:10]
            days.append(day)
            try:
                qty = int(row.get("Quantity", ""))
            except ValueError:
                qty = 0
            invoice = row.get("InvoiceNo", "")
            signed = -abs(qty) if invoice.startswith("C") else qty
            rows.append((row.get("StockCode", "").strip(), day, signed))
    if not days:
        raise ValueError(f"{path}: no order lines")
    first_replayed = days[max(0, len(days) - replay_lines)]
    start = days.index(first_replayed)  # the whole day is replayed
    history = [(s, d, q) for s, d, q in rows[:start] if s and d]
    if not history:
        raise ValueError(f"{path}: no order lines before {first_replayed} to train on "
                         "(pass fewer --events)")
    volume: dict[str, float] = defaultdict(float)
    for s, _, q in history:
        volume[s] += max(q, 0)
    top = sorted(volume, key=lambda s: (-volume[s], s))[:max_series]
    index = {s: i for i, s in enumerate(top)}
    first = np.datetime64(min(d for _, d, _ in history), "D")
    last = np.datetime64(first_replayed, "D") - np.timedelta64(1, "D")
    n_days = int((last - first).astype(int)) + 1
    values = np.zeros((len(top), n_days))
    first_sale = np.full(len(top), n_days)
    for s, d, q in history:
        i = index.get(s)
        if i is None:
            continue
        col = int((np.datetime64(d, "D") - first).astype(int))
        values[i, col] += q
        if q > 0:
            first_sale[i] = min(first_sale[i], col)
    values = np.maximum(values, 0.0)
    values[np.arange(n_days)[None, :] < first_sale[:, None]] = np.nan
    panel = Panel(tuple(sku_key(s, LOCATION) for s in top), first, values)
    return HistorySplit(start, first_replayed, panel)


async def offline_baseline(settings: Settings, published: Iterable[tuple[str, bytes, bytes]]
                           ) -> tuple[Forecasts, dict[str, dict[int, float]]]:
    """(the moving average's forecasts for every SKU and bucket the stream closed, each SKU's
    demand per bucket): `published` (topic, key, value), in publish order, through a fresh
    BatchProcessor with the moving average."""
    from forecasting import make_forecaster
    from streams.forecaster_setup import local_predict
    from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
    from streams.state import SkuState

    model = make_forecaster("moving_average")
    processor = BatchProcessor(ProcessorConfig.from_settings(settings), local_predict(model),
                               model.model_version)
    table: dict[str, Any] = {}
    forecasts: Forecasts = {}
    batch: list[RawRecord] = []

    async def run(records: list[RawRecord]) -> None:
        out = await processor.process(records, table)
        for rows in out.forecast_rows:
            levels = tuple(rows.levels)
            for j in range(len(rows)):
                key = sku_key(rows.skus[j], rows.locations[j])
                forecasts[(key, rows.last_closed[j])] = (levels, rows.daily[j])

    for offset, (topic, key, value) in enumerate(published):
        batch.append(RawRecord(topic, 0, offset, key, value))
        if len(batch) == 1000:
            await run(batch)
            batch = []
    if batch:
        await run(batch)
    demand = {key: dict(SkuState.from_json(state).demand) for key, state in table.items()
              if state is not None}
    return forecasts, demand


@dataclass(frozen=True)
class ModelScore:
    """Pinball loss (mean over levels and SKU-days) and the share of days inside the 80%
    interval (q0.1..q0.9, ends included as in the backtest; `coverage_80_ties_half` counts an
    actual on an end half, the discrete correction for counts), over `points` SKU-days."""

    pinball: float
    coverage_80: float
    coverage_80_ties_half: float
    points: int
    forecasts: int

    def as_dict(self) -> dict[str, float | int]:
        return {"pinball": round(self.pinball, 4), "coverage_80": round(self.coverage_80, 4),
                "coverage_80_ties_half": round(self.coverage_80_ties_half, 4),
                "points": self.points, "forecasts": self.forecasts}


def score_forecasts(forecasts: Mapping[tuple[str, int], tuple[tuple[float, ...], np.ndarray]],
                    demand: Mapping[str, Mapping[int, float]], last_bucket: int) -> ModelScore:
    """Each forecast's days (the buckets after its last closed one) that fall on or before
    `last_bucket` (the last complete replayed day), against the demand sold on them (0 on a
    day without orders)."""
    ys: list[float] = []
    qs: list[np.ndarray] = []
    levels: tuple[float, ...] | None = None
    for (key, closed), (lv, daily) in forecasts.items():
        levels = lv
        sold = demand.get(key, {})
        for h in range(daily.shape[0]):
            day = closed + 1 + h
            if day > last_bucket:
                break
            ys.append(max(float(sold.get(day, 0.0)), 0.0))
            qs.append(daily[h])
    if not ys or levels is None:
        nan = float("nan")
        return ModelScore(nan, nan, nan, 0, len(forecasts))
    y, q = np.asarray(ys), np.vstack(qs)
    lo, hi = levels.index(0.1), levels.index(0.9)
    return ModelScore(float(pinball(y, q, np.asarray(levels))),
                      float(coverage(y, q[:, lo], q[:, hi])),
                      float(coverage(y, q[:, lo], q[:, hi], ties=0.5)), len(ys), len(forecasts))
