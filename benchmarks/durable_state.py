"""Durable LSTM state: bytes per SKU in the changelog (JSON of before vs msgpack, with and
without the model's state, with and without its day ring), codec CPU per SKU, and how long a
recovering worker takes to decode N changelog records and import their LSTM states.

    python benchmarks/durable_state.py --skus 50000 --out benchmarks/results/durable_state.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch
from bench_report import emit

from forecasting.lstm import LSTMConfig, LSTMForecaster, LSTMNet
from forecasting.lstm.features import INPUT_DIM
from streams.changelog import decode_sku_state, encode_state
from streams.state import SkuState
from streams.worker import tune_gc

DAY0 = 15_000  # a bucket index (days since 1970)


def sku_state(i: int, rng: np.random.Generator, model_state: bytes | None, *,
              day0: int = DAY0, sku: str | None = None, location: str = "wh-01") -> SkuState:
    """A steady SKU as the stream keeps it: 56 closed buckets of demand (the window), ids of
    the open buckets, fingerprints of the remembered ones, stock, a catalog policy. `day0`:
    its open bucket (watermark); `sku`: default `SKU<i>`."""
    state = SkuState(sku or f"SKU{i:06d}", location, first_bucket=day0 - 300, watermark=day0)
    for b in range(day0 - 57, day0 + 1):
        state.demand[b] = float(rng.poisson(3))
    state.seen_ids = {b: [f"o-{i}-{b}-{k}" for k in range(3)] for b in (day0 - 1, day0)}
    for b in range(day0 - 56, day0 - 1):  # what _evict leaves: 3 fingerprints a bucket
        state.old_ids[b] = bytes(12)
    state.on_hand, state.stock_known, state.stock_as_of = 40, True, 1.3e9
    state.policy = {"sku": state.sku, "location": location, "lead_time_days": 3,
                    "review_days": 1, "service_level": 0.95, "case_pack": 6, "moq": 12,
                    "supplier": "acme", "unit_cost": 2.5}
    state.next_bucket_high = 7.0
    state.model_state = model_state
    return state


def blobs(n: int, ring: bool) -> tuple[LSTMForecaster, list[bytes]]:
    """n durable states of the default-size LSTM (hidden 64, one layer)."""
    torch.manual_seed(0)
    model = LSTMForecaster(LSTMNet(INPUT_DIM, LSTMConfig(year_ago=ring, year_ago_prior=ring)),
                           device="cpu")
    store = model.keyed_states(n)
    keys = [f"k{i}" for i in range(n)]
    slots, _ = store.slots(keys)
    rng = np.random.default_rng(1)
    windows = rng.poisson(3.0, (n, 56)).astype(float)
    store.scatter(slots, model.encode(windows, np.datetime64("2011-05-01")))
    return model, store.export(slots)


def per_call_us(fn: Any, items: list[Any]) -> float:
    t0 = time.perf_counter()
    for x in items:
        fn(x)
    return (time.perf_counter() - t0) / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=50_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tune_gc()  # as the worker runs: the cyclic GC would rescan 50k fresh states otherwise
    rng = np.random.default_rng(0)
    json_encode = msgspec.json.Encoder().encode
    msgpack_encode = msgspec.msgpack.Encoder().encode
    report: dict[str, Any] = {"skus": args.skus, "sizes_bytes": {}, "codec_us_per_sku": {}}
    sample = 2_000
    for ring in (True, False):
        _, made = blobs(sample, ring)
        label = "lstm_with_ring" if ring else "lstm_without_ring"
        report["sizes_bytes"][f"{label}_state_only"] = len(made[0])
        states = [sku_state(i, rng, made[i]) for i in range(sample)]
        # the JSON codec of before (an object by field name, bytes as base64)
        as_json = [json_encode(s.to_json()) for s in states]
        as_msgpack = [encode_state(s) for s in states]  # the changelog's (FORMAT_ARRAY)
        as_map = [msgpack_encode(msgspec.structs.asdict(s)) for s in states]  # FORMAT_MSGPACK
        report["sizes_bytes"][f"{label}_sku_json"] = float(np.mean([len(r) for r in as_json]))
        report["sizes_bytes"][f"{label}_sku_msgpack"] = float(
            np.mean([len(r) for r in as_msgpack if r is not None]))
        report["sizes_bytes"][f"{label}_sku_msgpack_map"] = 1 + float(
            np.mean([len(r) for r in as_map]))
        report["codec_us_per_sku"][f"{label}_encode_json"] = per_call_us(
            lambda s: json_encode(s.to_json()), states)
        report["codec_us_per_sku"][f"{label}_encode_msgpack"] = per_call_us(encode_state, states)
        report["codec_us_per_sku"][f"{label}_decode_json"] = per_call_us(decode_sku_state,
                                                                         as_json)
        report["codec_us_per_sku"][f"{label}_decode_msgpack"] = per_call_us(decode_sku_state,
                                                                            as_msgpack)
    plain = [sku_state(i, rng, None) for i in range(sample)]
    report["sizes_bytes"]["no_model_state_sku_json"] = float(
        np.mean([len(json_encode(s.to_json())) for s in plain]))
    report["sizes_bytes"]["no_model_state_sku_msgpack"] = float(
        np.mean([len(encode_state(s) or b"") for s in plain]))

    # recovery: decode N records, then import the LSTM states of all of them (the first
    # forecast after recovery restores each key's slot: StateSlots.restore, one batch)
    model, made = blobs(args.skus, True)
    records = [encode_state(sku_state(i, rng, made[i])) for i in range(args.skus)]
    t0 = time.perf_counter()
    decoded = [decode_sku_state(r) for r in records]
    t_decode = time.perf_counter() - t0
    store = model.keyed_states(args.skus)
    keys = [f"{s.sku}@{s.location}" for s in decoded if s is not None]
    t1 = time.perf_counter()
    slots, _ = store.slots(keys)
    taken = store.restore(slots, [s.model_state for s in decoded if s is not None])
    t_import = time.perf_counter() - t1
    assert taken.all()
    report["recovery"] = {
        "skus": args.skus, "changelog_mb": sum(len(r or b"") for r in records) / 1e6,
        "decode_s": round(t_decode, 3), "import_lstm_states_s": round(t_import, 3),
        "total_s": round(t_decode + t_import, 3)}
    emit(report, args.out)


if __name__ == "__main__":
    main()
