"""The stream's order-up-to level under the rule `cover_mean` (the default): each SKU orders up
to the mean of the raw levels of its reviews within its protection interval (its last
cover-steps buckets), remembered in its state with their buckets, changelogged with it, and
the same after a recovery."""

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest

from forecasting import QuantileForecast
from forecasting.inferencer import ServedForecast
from runtime.settings import Settings
from schemas import RestockEvent, sku_key
from streams.changelog import decode_sku_state, encode_state
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.state import SkuState
from streams.store import StateStore

T0 = datetime(2011, 3, 7, 10, tzinfo=UTC)
DAY0 = int(T0.timestamp() // 86_400)
SETTINGS = Settings(kafka_bootstrap="unused:9092", default_lead_time_days=7,
                    default_review_days=1)  # cover 8 buckets: k = 8
LEVELS = (0.05, 0.5, 0.95)
Rate = Callable[[int], float]


def scripted(rate: Rate, version: Callable[[int], str] = lambda day: "scripted-1"):
    """A forecaster that knows the demand: `rate(day)` units a bucket for certain after the
    window ending on `day` (days since T0): every quantile of h buckets is h x rate, so a
    review's raw level is exactly cover_steps x rate."""

    async def predict(windows, horizon, *, keys=None, end_days=None, states=None,
                      covariates=None) -> ServedForecast:
        days = end_days.astype(np.int64) - DAY0
        per = np.array([rate(int(d)) for d in days])
        steps = np.arange(1, horizon + 1)
        daily = np.broadcast_to(per[:, None, None], (len(per), horizon, 3)).copy()
        cumulative = per[:, None, None] * steps[None, :, None] * np.ones((1, 1, 3))
        forecast = QuantileForecast(np.asarray(LEVELS), daily, cumulative,
                                    np.broadcast_to(per[:, None], (len(per), horizon)))
        return ServedForecast(forecast, version(int(days.max())))

    return predict


def processor(rate: Rate, settings: Settings = SETTINGS, **kw) -> BatchProcessor:
    return BatchProcessor(ProcessorConfig.from_settings(settings), scripted(rate, **kw),
                          "scripted-1", now=lambda: datetime(2011, 6, 1, tzinfo=UTC))


def record(topic: str, offset: int, value: dict, sku: str = "A") -> RawRecord:
    return RawRecord(topic, 0, offset, sku_key(sku, "L").encode(), json.dumps(value).encode())


def snapshot(sku: str = "A") -> RawRecord:
    return record(SETTINGS.topics.stock, 0, {
        "event_id": f"s-{sku}", "type": "snapshot", "sku": sku, "location": "L", "on_hand": 0,
        "occurred_at": (T0 - timedelta(hours=1)).isoformat()}, sku)


def day_orders(day: int, sku: str = "A") -> list[RawRecord]:
    """One big order a day (it closes the day before, whose review then orders: the
    back-orders keep every position below the level)."""
    return [record(SETTINGS.topics.orders, 1 + day, {
        "event_id": f"o{day}-{sku}", "type": "placed", "sku": sku, "location": "L",
        "quantity": 1000, "occurred_at": (T0 + timedelta(days=day)).isoformat()}, sku)]


def catalog(lead_time_days: int, sku: str = "A") -> RawRecord:
    return record(SETTINGS.topics.catalog, 0, {
        "sku": sku, "location": "L", "lead_time_days": lead_time_days, "review_days": 1,
        "service_level": 0.95}, sku)


def run_days(p: BatchProcessor, table, days: range, first: list[RawRecord] | None = None
             ) -> dict[int, RestockEvent]:
    """Restocks by the day (since T0) of the bucket they review."""
    out: dict[int, RestockEvent] = {}
    for day in days:
        records = [*(first or [] if day == days[0] else []), *day_orders(day)]
        batch = asyncio.run(p.process(records, table))
        for r in batch.restocks:
            out[int(r.bucket.timestamp() // 86_400) - DAY0] = r
    return out


def state_of(table, key: str = "A@L") -> SkuState:
    value = table[key]
    return value if isinstance(value, SkuState) else SkuState.from_json(value)


def varying(day: int) -> float:
    return 5.0 + (day * 7) % 11  # moves every day, repeats after 11


def test_the_level_is_the_mean_of_the_raw_levels_of_its_protection_interval():
    table: dict = {}
    restocks = run_days(processor(varying), table, range(20), [snapshot()])
    assert sorted(restocks) == list(range(19))  # every review ordered
    for day, r in restocks.items():
        raw = [8 * varying(d) for d in range(max(0, day - 7), day + 1)]
        assert r.order_up_to == pytest.approx(np.mean(raw), abs=1e-4)
        assert r.reorder_point == r.order_up_to
        if len(raw) > 1:
            assert f"(mean of the last {len(raw)} reviews' levels; need " in r.reason
        else:
            assert "mean" not in r.reason
    # the state remembers the raw levels of the last 8 buckets, this review's included
    assert state_of(table).order_up_to_levels == [8 * varying(d) for d in range(11, 19)]
    assert state_of(table).order_up_to_buckets == [DAY0 + d for d in range(11, 19)]


def test_a_sparse_skus_levels_from_before_its_protection_interval_are_not_averaged():
    table: dict = {}
    p = processor(varying)
    run_days(p, table, range(4), [snapshot()])  # reviews of days 0..2
    # no order for ten days: the next order closes days 3..13, one review, of day 13
    restocks = run_days(p, table, range(14, 15))
    assert restocks[13].order_up_to == 8 * varying(13)  # days 0..2 are > 8 buckets back
    assert "mean" not in restocks[13].reason
    restocks = run_days(p, table, range(16, 17))  # day 15's review: day 13's level counts
    assert restocks[15].order_up_to == pytest.approx((8 * varying(13) + 8 * varying(15)) / 2)


def test_a_steady_forecast_orders_what_it_ordered_without_the_rule():
    none = SETTINGS.model_copy(update={"restock_level_rule": "none"})
    smooth = run_days(processor(lambda d: 10.0), {}, range(15), [snapshot()])
    plain = run_days(processor(lambda d: 10.0, none), {}, range(15), [snapshot()])
    assert smooth and smooth.keys() == plain.keys()
    for day in smooth:
        a, b = smooth[day], plain[day]
        assert (a.quantity, a.order_up_to, a.reorder_point) == (b.quantity, b.order_up_to,
                                                                 b.reorder_point)


def test_a_spike_lifts_the_level_by_an_eighth_of_itself():
    def spike(day: int) -> float:
        return 30.0 if day == 10 else 10.0

    none = SETTINGS.model_copy(update={"restock_level_rule": "none"})
    smooth = run_days(processor(spike), {}, range(14), [snapshot()])
    plain = run_days(processor(spike, none), {}, range(14), [snapshot()])
    assert plain[9].order_up_to == smooth[9].order_up_to == 80.0
    assert plain[10].order_up_to == 240.0
    assert smooth[10].order_up_to == 80.0 + (240.0 - 80.0) / 8  # 100
    assert smooth[11].order_up_to == 100.0  # in the mean for 8 buckets, then gone
    assert plain[11].order_up_to == 80.0
    # the stock the spike leaves: one peak's units, or an eighth of them
    assert smooth[10].quantity < plain[10].quantity


def test_the_interval_follows_the_skus_policy_and_a_shorter_one_keeps_the_newest_levels():
    table: dict = {}
    p = processor(varying)
    run_days(p, table, range(10), [snapshot(), catalog(3)])  # cover 4 buckets
    assert state_of(table).order_up_to_levels == [4 * varying(d) for d in (5, 6, 7, 8)]
    restocks = run_days(p, table, range(10, 12), [catalog(1)])  # cover 2 buckets
    assert restocks[9].order_up_to == pytest.approx((4 * varying(8) + 2 * varying(9)) / 2)
    assert "mean of the last 2 reviews' levels" in restocks[9].reason
    assert state_of(table).order_up_to_levels == [2 * varying(9), 2 * varying(10)]


def test_a_new_model_version_keeps_the_remembered_levels():
    table: dict = {}
    p = processor(varying, version=lambda day: "v1" if day < 9 else "v2")
    restocks = run_days(p, table, range(12), [snapshot()])
    assert restocks[8].model_version == "v1" and restocks[9].model_version == "v2"
    raw = [8 * varying(d) for d in range(2, 10)]
    assert restocks[9].order_up_to == pytest.approx(np.mean(raw), abs=1e-4)


def test_rule_none_orders_up_to_each_reviews_own_level_and_forgets_the_levels():
    table: dict = {}
    run_days(processor(varying), table, range(6), [snapshot()])
    assert len(state_of(table).order_up_to_levels) == 5
    none = SETTINGS.model_copy(update={"restock_level_rule": "none"})
    restocks = run_days(processor(varying, none), table, range(6, 9))
    for day, r in restocks.items():
        assert r.order_up_to == 8 * varying(day) and "mean" not in r.reason
    assert state_of(table).order_up_to_levels == state_of(table).order_up_to_buckets == []


def test_the_rule_is_a_setting_read_from_the_environment(monkeypatch):
    assert Settings(kafka_bootstrap="x:1").restock_level_rule == "cover_mean"
    monkeypatch.setenv("SHELFCAST_RESTOCK_LEVEL_RULE", "none")
    settings = Settings(kafka_bootstrap="x:1")
    assert ProcessorConfig.from_settings(settings).level_rule == "none"
    monkeypatch.setenv("SHELFCAST_RESTOCK_LEVEL_RULE", "median")
    with pytest.raises(ValueError, match="restock_level_rule"):
        Settings(kafka_bootstrap="x:1")


def test_the_settings_rules_are_the_level_rules():
    from typing import get_args

    from optimizer.level_rule import DEFAULT_LEVEL_RULE, LEVEL_RULES

    field = Settings.model_fields["restock_level_rule"]
    assert set(get_args(field.annotation)) == set(LEVEL_RULES)
    assert field.default == DEFAULT_LEVEL_RULE


# --- durability ------------------------------------------------------------------------------
def round_trip(store: StateStore, *, forget_levels: bool = False) -> StateStore:
    """What a recovering worker holds: every key through the changelog's record codec."""
    recovered = StateStore(store.partitions)
    for key, value in store.partition(0).items():
        state = decode_sku_state(encode_state(value))
        assert isinstance(state, SkuState)
        if forget_levels:
            state.order_up_to_levels, state.order_up_to_buckets = [], []
        recovered.load(0, key, state)
    return recovered


def test_a_recovered_worker_orders_up_to_what_an_uninterrupted_one_does():
    expected = run_days(processor(varying), StateStore(4).partition(0), range(20),
                        [snapshot()])
    store = StateStore(4)
    run_days(processor(varying), store.partition(0), range(9), [snapshot()])
    after = run_days(processor(varying), round_trip(store).partition(0), range(9, 20))
    assert after and all(day >= 8 for day in after)
    for day, r in after.items():
        e = expected[day]
        assert (r.order_up_to, r.quantity, r.reason) == (e.order_up_to, e.quantity, e.reason)
    # the control: without the remembered levels the next level is another one
    forgot = run_days(processor(varying), round_trip(store, forget_levels=True).partition(0),
                      range(9, 10))
    assert forgot[8].order_up_to != expected[8].order_up_to


def test_changelog_records_written_before_the_fields_decode_without_levels():
    state = SkuState("A", "L", order_up_to_levels=[80.0, 96.5, 1 / 3],
                     order_up_to_buckets=[15001, 15002, 15003])
    state.apply_order("e1", 1e9, 3, bucket_seconds=86_400, window=56, lateness=1)
    raw = encode_state(state)
    assert raw is not None and decode_sku_state(raw) == state  # exact floats
    fields = msgspec.msgpack.decode(raw[1:])
    assert fields[-2:] == [[80.0, 96.5, 1 / 3], [15001, 15002, 15003]]  # the last fields
    old = decode_sku_state(raw[:1] + msgspec.msgpack.encode(fields[:-2]))
    assert old == msgspec.structs.replace(state, order_up_to_levels=[], order_up_to_buckets=[])
    named = {k: v for k, v in state.to_json().items()
             if k not in ("order_up_to_levels", "order_up_to_buckets")}
    assert SkuState.from_json(named).order_up_to_levels == []
    assert SkuState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_levels_without_their_buckets_are_not_averaged():
    # a state written while the levels were counted in reviews (levels, no buckets)
    table: dict = {}
    p = processor(varying)
    run_days(p, table, range(5), [snapshot()])
    state = state_of(table)
    state.order_up_to_buckets = []
    table["A@L"] = state
    restocks = run_days(p, table, range(5, 6))
    assert restocks[4].order_up_to == 8 * varying(4) and "mean" not in restocks[4].reason
    assert state_of(table).order_up_to_buckets == [DAY0 + 4]
