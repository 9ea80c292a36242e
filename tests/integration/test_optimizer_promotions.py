"""Planned promotions through the optimizer into PostgreSQL, on a real Kafka broker.

The optimizer records `shop.promotions` in `planned_promotions` by the stream's rules — the
highest version of a promotion wins whatever order its versions come in, a cancelled one is
withdrawn, a malformed record is skipped (the stream worker dead-letters it) — and
`read_promotion_covariates` turns the rows into the covariates retraining trains on.
"""

from datetime import date

import asyncpg
import numpy as np
import pytest

from optimizer.promotions import read_promotion_covariates
from optimizer.service import OptimizerService
from schemas import encode, sku_key
from schemas.events import PromotionEvent
from streams.topics import TopicSpec, create_topics
from tests.support.kafka import create_optimizer_topics, isolated_settings, produce

pytestmark = pytest.mark.asyncio(loop_scope="session")


def promotion(event_id: str, sku: str, start: int, end: int, **fields: object
              ) -> tuple[str, bytes]:
    event = PromotionEvent(event_id=event_id, sku=sku, location="wh1",
                           start_day=date(2024, 3, start), end_day=date(2024, 3, end),
                           **fields)  # type: ignore[arg-type]
    return sku_key(sku, "wh1"), encode(event)


async def test_promotions_are_recorded_by_version(kafka_bootstrap, pg_database):
    settings = isolated_settings(kafka_bootstrap)
    await create_optimizer_topics(settings)
    await create_topics(settings, [TopicSpec(settings.topics.promotions, 2)])
    records = [
        promotion("a", "MUG", 10, 12),
        promotion("a", "MUG", 11, 13, version=2),  # moved a day
        promotion("a", "MUG", 1, 5),  # version 1 again, redelivered late: stale
        promotion("b", "TEA", 4, 6, promo=False, price_ratio=0.8),
        promotion("b", "TEA", 4, 6, version=2, cancelled=True),  # withdrawn
        promotion("c", "JAM", 20, 21, price_ratio=0.5),
        promotion("d", "JAM", 21, 22, price_ratio=0.7),  # overlaps c on the 21st
        promotion("e\x00", "CUP", 25, 25),  # a valid id PostgreSQL text cannot hold
        (sku_key("MUG", "wh1"), b'{"event_id": "x", "sku": "MUG"}'),  # malformed
    ]
    await produce(settings, settings.topics.promotions, records)
    counters = await OptimizerService(settings, pg_database, max_records=3).run_until_idle(2.0)
    # the malformed one is skipped, not dead-lettered: the stream worker, which reads the
    # shop's topics too, dead-letters it (one dead letter per bad record, not two)
    assert counters.promotions_in == len(records) - 1 and counters.promotions_refused == 1
    assert counters.dlq == 0

    async def table() -> dict:
        conn = await asyncpg.connect(pg_database)
        try:
            return {(r["sku"], r["event_id"]): (r["version"], r["start_day"].day,
                                                r["end_day"].day, r["cancelled"])
                    for r in await conn.fetch("SELECT * FROM planned_promotions")}
        finally:
            await conn.close()

    first = await table()
    assert first == {("MUG", "a"): (2, 11, 13, False), ("TEA", "b"): (2, 4, 6, True),
                     ("JAM", "c"): (1, 20, 21, False), ("JAM", "d"): (1, 21, 22, False),
                     ("CUP", "e\ufffd"): (1, 25, 25, False)}

    conn = await asyncpg.connect(pg_database)
    try:
        keys = [sku_key(s, "wh1") for s in ("MUG", "TEA", "JAM", "CUP")]
        cov = await read_promotion_covariates(conn, keys, np.datetime64("2024-03-01"), 31)
        assert cov is not None
        promo = {day + 1 for day in np.flatnonzero(cov.promo[0])}
        assert promo == {11, 12, 13}
        assert not cov.promo[1].any() and (cov.price_ratio[1] == 1).all()  # withdrawn
        assert cov.price_ratio[2, 19:22].tolist() == [0.5, 0.5, 0.7]  # the lowest ratio
        assert cov.promo[2, 19:22].tolist() == [1.0, 1.0, 1.0]
        assert {day + 1 for day in np.flatnonzero(cov.promo[3])} == {25}
        # a window none of them covers reads as none: the panel keeps no covariates
        assert await read_promotion_covariates(conn, keys, np.datetime64("2024-05-01"),
                                               10) is None
    finally:
        await conn.close()

    # everything again (a producer retry) and a restart: nothing changes
    await produce(settings, settings.topics.promotions, records)
    again = await OptimizerService(settings, pg_database).run_until_idle(2.0)
    assert again.promotions_in == len(records) - 1
    assert await table() == first
