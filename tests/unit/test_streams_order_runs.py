"""A key's run of orders in one call (`SkuState.orders`) against the lines one at a time.

Two properties. On one state: whatever it held before (orders and stock events drawn at
random, hot buckets of more than 16 ids included), a run of order lines (repeated ids,
lines late or beyond the clock, returns, lines at or before the last stock snapshot) gives
the verdicts and the state that `SkuState.order` line by line gives, up to and including the
line that leaves a forecast due, where both stop; and the two states then go on alike. In the
processor: streams of a few hot keys (many orders of one key per batch, so runs of orders
are applied per key) cut into random batches give the states, outputs, dead letters and
counters of the records one at a time.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting import make_forecaster
from runtime.settings import Settings
from schemas import sku_key
from streams.processor import BatchOutputs, BatchProcessor, ProcessorConfig, RawRecord
from streams.state import SkuState
from streams.store import StateStore
from streams.worker import local_predict
from tests.support.batches import run_in_batches

DAY = 86_400
BASE = 15_000 * DAY  # an instant at the start of a bucket
WINDOW, LATENESS, MEMORY = 7, 1, 8

# --- one state ------------------------------------------------------------------------------
line = st.tuples(st.integers(0, 39),  # event id out of a small pool: repeats
                 st.floats(-2.5, 2.5, allow_nan=False),  # days from BASE: late .. next bucket
                 st.integers(-5, 9))  # signed units (returns and cancellations negative)
stock_step = st.tuples(st.sampled_from(["snapshot", "adjustment", "receipt"]),
                       st.floats(-2.5, 2.5, allow_nan=False), st.integers(-20, 40))
before = st.lists(st.one_of(line.map(lambda x: ("order", *x)), stock_step.map(
    lambda x: ("stock", *x))), max_size=60)


def apply_step(state: SkuState, step: tuple[Any, ...], n: int) -> None:
    """One event line by line (the reference path); a forecast due is cleared as the
    processor's forecast would."""
    if step[0] == "order":
        _, i, days, q = step
        state.order(f"e{i}", BASE + days * DAY, q, DAY, WINDOW, LATENESS, MEMORY)
    else:
        _, kind, days, units = step
        state.apply_stock(f"s{n}", BASE + days * DAY, kind,
                          on_hand=abs(units) if kind == "snapshot" else None,
                          delta=None if kind == "snapshot" else units, restock_id=None,
                          bucket_seconds=DAY, lateness=LATENESS)
    state.forecast_pending = False


def built(steps: list[tuple[Any, ...]], due: bool) -> SkuState:
    state = SkuState(sku="S", location="wh")
    for n, step in enumerate(steps):
        apply_step(state, step, n)
    state.forecast_pending = due
    return state


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=before, run=st.lists(line, min_size=1, max_size=40),
       after=st.lists(line, max_size=20), due=st.booleans())
def test_a_run_gives_what_its_lines_one_at_a_time_give(history, run, after, due) -> None:
    batch, one = built(history, due), built(history, due)
    ids = [f"e{i}" for i, _, _ in run]
    times = [BASE + days * DAY for _, days, _ in run]
    units = [q for _, _, q in run]
    got = batch.orders(ids, times, units, DAY, WINDOW, LATENESS, MEMORY)
    expected = []
    for event_id, t, q in zip(ids, times, units, strict=True):
        expected.append(one.order(event_id, t, q, DAY, WINDOW, LATENESS, MEMORY))
        if one.forecast_pending:
            break
    assert got == expected
    assert batch.to_json() == one.to_json()
    # the dedupe's sets kept beside the ids (hot buckets) agree too: the states go on alike
    for n, (i, days, q) in enumerate(after):
        for state in (batch, one):
            apply_step(state, ("order", i, days + 1, q), n)
    assert batch.to_json() == one.to_json()


def test_a_run_in_the_open_bucket_is_applied_at_once(monkeypatch) -> None:
    """The run's own path is taken (not `order` per line), and stops at a bucket close."""
    calls: list[int] = []
    monkeypatch.setattr(SkuState, "_stretch", lambda self, *a, _f=SkuState._stretch:
                        calls.append(len(a[0])) or _f(self, *a))
    state = built([("order", 0, 0.1, 3), ("stock", "snapshot", 0.05, 4)], due=False)
    ids = ["a", "b", "c", "d", "e"]
    times = [BASE + h * 3600 for h in (3, 4, 5, 30, 31)]  # the fourth closes the bucket
    got = state.orders(ids, times, [2, 1, 2, 1, 1], DAY, WINDOW, LATENESS, MEMORY)
    assert got == ["ok"] * 4 and state.forecast_pending
    assert calls == [3]
    assert state.demand == {BASE // DAY: 8.0, BASE // DAY + 1: 1.0}
    assert (state.on_hand, state.backorders) == (0, 2)  # 4 at the snapshot, 6 ordered since


# --- the processor --------------------------------------------------------------------------
T0 = datetime(2011, 3, 7, tzinfo=UTC)
SETTINGS = Settings(kafka_bootstrap="unused:9092", default_lead_time_days=2,
                    allowed_lateness_buckets=LATENESS, window_buckets=WINDOW,
                    dedupe_buckets=MEMORY)
FIXED_NOW = datetime(2011, 6, 1, tzinfo=UTC)
TOPICS = SETTINGS.topics
HOT = ("H0", "H1")


def processor() -> BatchProcessor:
    model = make_forecaster("moving_average")
    return BatchProcessor(ProcessorConfig.from_settings(SETTINGS), local_predict(model),
                          model.model_version, now=lambda: FIXED_NOW)


hot_order = st.fixed_dictionaries({
    "kind": st.just("order"), "sku": st.integers(0, 1), "id": st.integers(0, 300),
    "hours": st.floats(-40, 6, allow_nan=False),  # mostly open buckets, some late
    "type": st.sampled_from(["placed", "placed", "placed", "cancelled", "returned"]),
    "quantity": st.integers(1, 9)})
hot_stock = st.fixed_dictionaries({
    "kind": st.just("stock"), "sku": st.integers(0, 1),
    "hours": st.floats(-30, 30, allow_nan=False),  # snapshots after orders, too
    "type": st.sampled_from(["snapshot", "adjustment", "receipt"]),
    "units": st.integers(1, 60)})
hot_steps = st.lists(st.one_of(*[hot_order] * 12, hot_stock), min_size=1, max_size=150)


def hot_records(drawn: list[dict[str, Any]], days: float) -> list[RawRecord]:
    """Orders of two hot keys whose clock moves `days` over the list: many orders per key
    per bucket, with repeated ids (redeliveries), late lines and stock events between."""
    out: list[RawRecord] = []
    for i, s in enumerate(drawn):
        hours = 24 * days * i / len(drawn) + s["hours"]
        sku = HOT[s["sku"]]
        at = (T0 + timedelta(hours=hours)).isoformat()
        if s["kind"] == "order":
            value: dict[str, Any] = {"event_id": f"o{s['id']}", "type": s["type"], "sku": sku,
                                     "location": "wh", "quantity": s["quantity"],
                                     "occurred_at": at}
            topic = TOPICS.orders
        else:
            value = {"event_id": f"st{i}", "type": s["type"], "sku": sku, "location": "wh",
                     "occurred_at": at}
            if s["type"] == "snapshot":
                value["on_hand"] = s["units"]
            else:
                value["delta"] = s["units"] if s["type"] == "receipt" else s["units"] - 30
            topic = TOPICS.stock
        out.append(RawRecord(topic, 0, len(out), sku_key(sku, "wh").encode(),
                             json.dumps(value).encode()))
    return out


def run(records: list[RawRecord], cuts: list[int], table: Any) -> BatchOutputs:
    return run_in_batches(processor(), records, cuts, table)


def outputs(out: BatchOutputs) -> dict[str, Any]:
    """Outputs per SKU in emission order (Kafka orders per key), dead letters per source key
    in emission order too (offset, kind, reason, payload)."""
    grouped: dict[tuple[str, str | None], list[Any]] = {}
    for name in ("forecasts", "restocks", "alerts", "demand"):
        for event in getattr(out, name):
            grouped.setdefault((name, event.sku), []).append(event.model_dump(mode="json"))
    for d in out.dead_letters:
        grouped.setdefault(("dead", d.key), []).append(
            (d.offset, d.error_kind, d.error, d.raw_payload_b64))
    return {"events": grouped, "dead": sorted((d.offset, d.error_kind, d.error)
                                              for d in out.dead_letters),
            "accepted": out.accepted, "duplicates": out.duplicates}


def plain(table: Any) -> dict[str, Any]:
    return {k: (v.to_json() if isinstance(v, SkuState) else v) for k, v in table.items()}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(drawn=hot_steps, days=st.floats(0.2, 6),
       cuts=st.lists(st.integers(0, 150), max_size=4), live_store=st.booleans())
def test_hot_keys_in_batches_give_what_one_at_a_time_gives(drawn, days, cuts,
                                                           live_store) -> None:
    records = hot_records(drawn, days)
    one_table: dict[str, Any] = {}
    expected = outputs(run(records, list(range(len(records))), one_table))
    table: Any = StateStore(1).partition(0) if live_store else {}
    assert outputs(run(records, cuts, table)) == expected
    assert plain(table) == plain(one_table)


@pytest.mark.parametrize("size", [len, 40])
def test_the_hot_stream_takes_the_run_path(monkeypatch, size) -> None:
    """A fixed hot stream in batches: `SkuState.orders` applies runs, stretches of lines go
    at once, and the result still equals one at a time (so the property compares them)."""
    runs: list[int] = []
    real = SkuState.orders
    monkeypatch.setattr(SkuState, "orders", lambda self, ids, *a:
                        runs.append(len(ids)) or real(self, ids, *a))
    stretches: list[int] = []
    real_stretch = SkuState._stretch
    monkeypatch.setattr(SkuState, "_stretch", lambda self, ids, *a:
                        stretches.append(len(ids)) or real_stretch(self, ids, *a))
    drawn = [{"kind": "order", "sku": i % 2, "id": i if i % 11 else i - 4, "hours": 0.0,
              "type": "returned" if i % 13 == 0 else "placed", "quantity": 1 + i % 4}
             for i in range(300)]
    drawn[50] = {"kind": "stock", "sku": 0, "hours": 2.0, "type": "snapshot", "units": 20}
    drawn[120] = {**drawn[120], "hours": -60.0}  # late
    records = hot_records(drawn, 4)
    n = len(records) if size is len else size
    table: dict[str, Any] = {}
    got = outputs(run(records, list(range(0, len(records), n)), table))
    assert max(runs) >= 10 and max(stretches) >= 10
    monkeypatch.setattr(SkuState, "orders", real)
    monkeypatch.setattr(SkuState, "_stretch", real_stretch)
    one_table: dict[str, Any] = {}
    expected = outputs(run(records, list(range(len(records))), one_table))
    assert got == expected and plain(table) == plain(one_table)
    assert expected["duplicates"] > 0 and any(k == "late" for _, k, _ in expected["dead"])
