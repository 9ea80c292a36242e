"""Planned promotions in PostgreSQL (`planned_promotions`, migration 0008), for retraining.

The optimizer records what the shop has planned (`shop.promotions`) beside the demand it
records (`demand_history`), in the same batch transaction, so `shelfcast retrain` trains the
challenger on the covariates the stream serves it (streams/planned_promotions.py) — without
them a retrained model would learn promotion days as unexplained noise and serve the
promotions it is handed to a model that never saw one.

The rules are the stream's: per (sku, location, event_id) the highest version wins (an equal
or lower one changes nothing, whatever order redeliveries come in), a cancelled promotion
stays as a withdrawn row remembering its version, and the covariates of overlapping
promotions are `forecasting.covariates.from_spans`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import asyncpg
import numpy as np

from forecasting.covariates import Covariates, PlannedSpan, from_spans
from optimizer.pg_text import pg_text
from schemas.events import PromotionEvent
from schemas.keys import sku_key

__all__ = ["read_promotion_covariates", "write_promotions"]

_UPSERT = """
INSERT INTO planned_promotions (sku, location, event_id, version, start_day, end_day, promo,
                                price_ratio, cancelled)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::date[], $6::date[],
                     $7::bool[], $8::float8[], $9::bool[])
ORDER BY 1, 2, 3  -- one lock order for every writer
ON CONFLICT (sku, location, event_id) DO UPDATE
SET version = EXCLUDED.version, start_day = EXCLUDED.start_day, end_day = EXCLUDED.end_day,
    promo = EXCLUDED.promo, price_ratio = EXCLUDED.price_ratio, cancelled = EXCLUDED.cancelled,
    recorded_at = now()
WHERE planned_promotions.version < EXCLUDED.version
"""

_SELECT = """
SELECT sku, location, start_day, end_day, promo, price_ratio
FROM planned_promotions
WHERE NOT cancelled AND (promo OR price_ratio <> 1) AND end_day >= $1 AND start_day <= $2
"""

_EPOCH = date(1970, 1, 1)


async def write_promotions(conn: asyncpg.Connection, events: Sequence[PromotionEvent]) -> int:
    """Record `events` (inside the caller's transaction); returns how many rows changed. Of
    several versions of one promotion in the batch, the highest is written."""
    latest: dict[tuple[str, str, str], PromotionEvent] = {}
    for e in events:
        key = (e.sku, e.location, pg_text(e.event_id))
        held = latest.get(key)
        if held is None or e.version > held.version:
            latest[key] = e
    if not latest:
        return 0
    rows = list(latest.values())
    status = await conn.execute(
        _UPSERT, [e.sku for e in rows], [e.location for e in rows],
        [pg_text(e.event_id) for e in rows],
        [e.version for e in rows], [e.start_day for e in rows], [e.end_day for e in rows],
        [e.promo for e in rows], [e.price_ratio for e in rows], [e.cancelled for e in rows])
    return int(status.rsplit(" ", 1)[-1])


async def read_promotion_covariates(conn: asyncpg.Connection, keys: Sequence[str],
                                    start: np.datetime64, n_days: int) -> Covariates | None:
    """The covariates of the series `keys` (`sku@location`, rows in order) on the grid
    `start` .. `start + n_days - 1` from the recorded promotions; None when none of them has
    a promotion there (a shop that publishes none trains exactly as before). A table that
    does not exist yet (a database migrated before 0008) reads as none."""
    first = start.astype("datetime64[D]")
    last = first + np.timedelta64(n_days - 1, "D")
    try:
        rows = await conn.fetch(_SELECT, first.astype(date), last.astype(date))
    except asyncpg.UndefinedTableError:
        return None
    index = {key: i for i, key in enumerate(keys)}
    spans: list[PlannedSpan] = []
    for r in rows:
        row = index.get(sku_key(r["sku"], r["location"]))
        if row is not None:
            spans.append((row, (r["start_day"] - _EPOCH).days, (r["end_day"] - _EPOCH).days,
                          bool(r["promo"]), float(r["price_ratio"])))
    if not spans:
        return None
    return from_spans(len(keys), first, n_days, spans)
