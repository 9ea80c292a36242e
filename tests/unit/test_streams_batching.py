"""Batching does not change results: batches of any size give the state and outputs of
processing the same events one at a time (outputs compared per SKU, in order). And the
stream's restock events carry what the optimizer needs to cut them."""

import json
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from forecasting import make_forecaster
from optimizer.service_level import DemandDistribution
from runtime.settings import Settings
from schemas import RestockEvent, decode, encode, sku_key
from streams.processor import BatchOutputs, BatchProcessor, ProcessorConfig, RawRecord
from streams.state import SkuState
from streams.store import StateStore
from streams.worker import local_predict
from tests.support.batches import run_in_batches as in_batches

T0 = datetime(2011, 3, 7, tzinfo=UTC)
SETTINGS = Settings(kafka_bootstrap="unused:9092", default_lead_time_days=2)
FIXED_NOW = datetime(2011, 6, 1, tzinfo=UTC)


def processor(settings: Settings = SETTINGS) -> BatchProcessor:
    model = make_forecaster("moving_average")
    return BatchProcessor(ProcessorConfig.from_settings(settings), local_predict(model),
                          model.model_version, now=lambda: FIXED_NOW)


def stream(n: int = 1500, skus: int = 12, seed: int = 3) -> list[RawRecord]:
    """Orders in rough time order over ~20 days, with stock snapshots, receipts, a catalog
    policy, redeliveries, late orders and malformed records mixed in."""
    rng = random.Random(seed)
    t = SETTINGS.topics
    out: list[RawRecord] = []

    def add(topic: str, value: dict | bytes, sku: str) -> None:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        out.append(RawRecord(topic, 0, len(out), sku_key(sku, "wh").encode(), raw))

    for s in range(skus):
        add(t.stock, {"event_id": f"snap-{s}", "type": "snapshot", "sku": f"S{s}",
                      "location": "wh", "on_hand": rng.randint(0, 40),
                      "occurred_at": (T0 - timedelta(hours=1)).isoformat()}, f"S{s}")
    add(t.catalog, {"sku": "S1", "location": "wh", "lead_time_days": 1, "review_days": 1,
                    "service_level": 0.9, "case_pack": 6, "moq": 12, "unit_cost": 2.0,
                    "supplier": "acme"}, "S1")
    for i in range(n):
        s = rng.randrange(skus)
        when = T0 + timedelta(days=20 * i / n + rng.uniform(-0.3, 0.3))
        order = {"event_id": f"o{i}", "type": rng.choice(["placed"] * 8 + ["returned"]),
                 "sku": f"S{s}", "location": "wh", "quantity": rng.randint(1, 5),
                 "occurred_at": when.isoformat()}
        add(t.orders, order, f"S{s}")
        r = rng.random()
        if r < 0.03:
            add(t.orders, order, f"S{s}")  # a redelivery
        elif r < 0.05:
            add(t.orders, {**order, "event_id": f"late{i}",
                           "occurred_at": (when - timedelta(days=4)).isoformat()}, f"S{s}")
        elif r < 0.06:
            add(t.orders, b'{"event_id": "broken", "quantity": ', f"S{s}")
        elif r < 0.08:
            add(t.stock, {"event_id": f"rcpt{i}", "type": "receipt", "sku": f"S{s}",
                          "location": "wh", "delta": rng.randint(5, 30),
                          "occurred_at": when.isoformat()}, f"S{s}")
    return out


def run_in_batches(records: list[RawRecord], size: int, table,
                   settings: Settings = SETTINGS) -> BatchOutputs:
    return in_batches(processor(settings), records, list(range(size, len(records), size)),
                      table)


def per_sku(out: BatchOutputs) -> dict:
    """Outputs grouped by SKU in emission order (Kafka orders per key, not across keys)."""
    grouped: dict = {}
    for name in ("forecasts", "restocks", "alerts"):
        for event in getattr(out, name):
            grouped.setdefault((name, event.sku), []).append(event.model_dump(mode="json"))
    dead = sorted((d.offset, d.error_kind, d.error) for d in out.dead_letters)
    return {"events": grouped, "dead": dead, "accepted": out.accepted,
            "duplicates": out.duplicates}


def plain(table) -> dict:
    return {k: (v.to_json() if isinstance(v, SkuState) else v) for k, v in table.items()}


@pytest.fixture(scope="module")
def one_by_one() -> tuple[dict, dict]:
    table: dict = {}
    out = run_in_batches(stream(), 1, table)
    return per_sku(out), plain(table)


@pytest.mark.parametrize("size", [7, 100, 10_000])
def test_batches_match_one_at_a_time(size: int, one_by_one):
    expected_out, expected_table = one_by_one
    table: dict = {}
    out = run_in_batches(stream(), size, table)
    assert per_sku(out) == expected_out
    assert plain(table) == expected_table


def test_live_state_store_matches_a_dict_table(one_by_one):
    expected_out, expected_table = one_by_one
    store = StateStore(4)
    out = run_in_batches(stream(), 250, store.partition(2))
    assert per_sku(out) == expected_out
    assert plain(store) == plain(store.partition(2)) == expected_table


def test_the_stream_exercises_every_path(one_by_one):
    out, table = one_by_one
    kinds = {name for name, _ in out["events"]}
    assert kinds == {"forecasts", "restocks", "alerts"}
    assert {kind for _, kind, _ in out["dead"]} >= {"late", "invalid_json"}
    assert out["duplicates"] > 0 and len(table) == 12


# The restocks carry case pack, MOQ and the demand distribution over lead time + review the
# quantity came from: what the optimizer needs to cut them.
@pytest.mark.parametrize("rule", ["none", "cover_mean"])
def test_restocks_carry_a_valid_demand_distribution_consistent_with_their_levels(rule):
    settings = SETTINGS.model_copy(update={"restock_level_rule": rule})
    restocks = run_in_batches(stream(), 500, {}, settings).restocks
    assert restocks
    averaged = 0
    for r in restocks:
        again = decode(RestockEvent, encode(r))  # what the optimizer sees: fully validated
        assert again == r
        assert r.demand_levels is not None and r.demand_quantiles is not None
        assert r.quantity % r.case_pack == 0 and r.quantity >= r.moq
        DemandDistribution.from_quantiles(r.demand_levels, [r.demand_quantiles])
        # The order-up-to level is the distribution's quantile at the SKU's service level,
        # unless the rule averaged it with the SKU's earlier levels, as its reason says.
        if "reviews' levels" in r.reason:
            assert rule == "cover_mean" and "(mean of the last " in r.reason
            averaged += 1
            continue
        at_level = np.interp(r.service_level, r.demand_levels, r.demand_quantiles)
        assert abs(at_level - r.order_up_to) <= 1e-3 * max(1.0, r.order_up_to)
    assert (averaged > 0) == (rule == "cover_mean")
    catalogued = [r for r in restocks if r.sku == "S1"]
    assert catalogued and all((r.case_pack, r.moq) == (6, 12) for r in catalogued)
