"""The shop's holiday calendar (shop.calendar) in the stream: kept whole (versioned, withdrawn,
per location or everywhere), validated where the group reads it (bad records dead-lettered),
handed to the forecaster as `Covariates.holiday` of the SKUs' locations; a model trained on
the data's own holidays serves in the stream what it forecasts offline, day after day."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forecasting import make_forecaster
from forecasting.covariates import Covariates
from forecasting.data import Panel
from forecasting.inferencer import Inferencer, ServedForecast
from runtime.settings import Settings
from schemas import HolidayEvent, InvalidEvent, decode
from streams.holiday_calendar import HolidayCalendar
from streams.planned_promotions import MEMORY_DAYS, covariates_of
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.state import SkuState

T0 = datetime(2011, 3, 7, 9, 0, tzinfo=UTC)
SETTINGS = Settings(kafka_bootstrap="unused:9092", default_lead_time_days=3)
TOPICS = SETTINGS.topics
EPOCH = date(1970, 1, 1)


def day(d: date) -> int:
    return (d - EPOCH).days


def holiday(event_id: str, location: str, start: date, end: date, **extra: Any) -> HolidayEvent:
    return HolidayEvent(event_id=event_id, location=location, start_day=start, end_day=end,
                        **extra)


def rec(topic: str, offset: int, value: dict[str, Any] | bytes, key: bytes = b"A@L"
        ) -> RawRecord:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return RawRecord(topic, 0, offset, key, raw)


def orders(days: int, sku: str = "A", location: str = "L", first: int = 0) -> list[RawRecord]:
    return [rec(TOPICS.orders, first + d, {
        "event_id": f"{sku}{location}{d}", "type": "placed", "sku": sku, "location": location,
        "quantity": 4, "occurred_at": (T0 + timedelta(days=d)).isoformat()},
        key=f"{sku}@{location}".encode()) for d in range(days)]


def test_the_calendar_keeps_versions_withdrawals_and_holidays_of_every_location() -> None:
    cal = HolidayCalendar()
    first = day(date(2011, 4, 20))
    assert cal.apply(holiday("easter", "L", date(2011, 4, 22), date(2011, 4, 25))) == "ok"
    assert cal.apply(holiday("easter", "L", date(2011, 4, 22), date(2011, 4, 25))) == "duplicate"
    assert cal.apply(holiday("may", "*", date(2011, 5, 2), date(2011, 5, 2))) == "ok"
    got = cal.flags(["L", "M", "L"], first, 14)
    expect_l = np.zeros(14)
    expect_l[2:6] = 1.0  # 22..25 April
    expect_l[12] = 1.0  # 2 May, everywhere
    np.testing.assert_array_equal(got[0], expect_l)
    np.testing.assert_array_equal(got[2], expect_l)
    np.testing.assert_array_equal(got[1], np.eye(14)[12])
    assert cal.knows(["M"]) and cal.knows(["L"])
    # a later version moves it; a stale redelivery of the first cannot bring it back
    assert cal.apply(holiday("easter", "L", date(2011, 4, 25), date(2011, 4, 25),
                             version=2)) == "ok"
    assert cal.apply(holiday("easter", "L", date(2011, 4, 22), date(2011, 4, 25))) == "duplicate"
    np.testing.assert_array_equal(cal.flags(["L"], first, 14)[0], np.eye(14)[5] + np.eye(14)[12])
    # withdrawn: no days, but its version remembered
    assert cal.apply(holiday("may", "*", date(2011, 5, 2), date(2011, 5, 2), version=3,
                             cancelled=True)) == "ok"
    assert cal.apply(holiday("may", "*", date(2011, 5, 2), date(2011, 5, 2),
                             version=2)) == "duplicate"
    assert not cal.knows(["M"]) and cal.knows(["L"])
    np.testing.assert_array_equal(cal.flags(["L", "M"], first, 14),
                                  [np.eye(14)[5], np.zeros(14)])
    # bounded: the entries that ended first go first
    small = HolidayCalendar(max_entries=2)
    for k in range(3):
        small.apply(holiday(f"h{k}", "L", date(2011, 1, 1 + k), date(2011, 1, 1 + k)))
    assert len(small) == 2
    np.testing.assert_array_equal(small.flags(["L"], day(date(2011, 1, 1)), 3)[0], [0, 1, 1])


def test_the_schema_refuses_what_the_calendar_cannot_keep() -> None:
    ok = {"event_id": "h", "location": "*", "start_day": "2011-04-22", "end_day": "2011-04-25"}
    assert decode(HolidayEvent, json.dumps(ok).encode()).location == "*"
    for bad in ({**ok, "end_day": "2011-04-21"}, {**ok, "start_day": "2011-02-30"},
                {**ok, "end_day": "2013-04-25"}, {**ok, "version": 0}, {**ok, "extra": 1},
                {k: v for k, v in ok.items() if k != "location"}):
        with pytest.raises(InvalidEvent):
            decode(HolidayEvent, json.dumps(bad).encode())


class Recording:
    """A PredictFn that forecasts with a model and records what each call was given."""

    def __init__(self) -> None:
        self.model = make_forecaster("moving_average")
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, windows: np.ndarray, horizon: int, *, keys: Any = None,
                       end_days: Any = None, states: Any = None, **extra: Any
                       ) -> ServedForecast:
        self.calls.append({"keys": keys, "end_days": end_days, "windows": windows, **extra})
        return ServedForecast(self.model.predict(windows, horizon, end_days=end_days),
                              self.model.model_version)


def processor(predict: Any, calendar: HolidayCalendar | None) -> BatchProcessor:
    fixed = datetime(2011, 4, 1, tzinfo=UTC)
    return BatchProcessor(ProcessorConfig.from_settings(SETTINGS), predict, "v",
                          now=lambda: fixed, calendar=calendar)


def test_holidays_reach_the_forecaster_for_their_locations_over_window_and_horizon() -> None:
    cal = HolidayCalendar()
    cal.apply(holiday("h1", "L", date(2011, 3, 8), date(2011, 3, 8)))  # in the window
    cal.apply(holiday("h2", "L", date(2011, 3, 16), date(2011, 3, 17)))  # ahead
    predict = Recording()
    records = sorted([*orders(8), *orders(8, location="M", first=100)],
                     key=lambda r: (r.offset % 100))
    asyncio.run(processor(predict, cal).process(records, {}))
    call = predict.calls[-1]
    cov = call["covariates"]
    assert isinstance(cov, Covariates) and cov.holiday is not None
    ends = np.asarray(call["end_days"], dtype="datetime64[D]")
    window = call["windows"].shape[1]
    assert cov.start <= ends.min() - (window - 1) and window > MEMORY_DAYS
    rows = {key.split("@")[1]: i for i, key in enumerate(call["keys"])}
    days = cov.start + np.arange(cov.holiday.shape[1])
    on = np.isin(days, np.array(["2011-03-08", "2011-03-16", "2011-03-17"],
                                dtype="datetime64[D]"))
    np.testing.assert_array_equal(cov.holiday[rows["L"]], on.astype(float))
    assert not cov.holiday[rows["M"]].any()
    np.testing.assert_array_equal(cov.promo, 0.0)  # no promotion planned


def test_without_holidays_of_their_locations_the_call_is_the_plain_one() -> None:
    cal = HolidayCalendar()
    cal.apply(holiday("h1", "M", date(2011, 3, 8), date(2011, 3, 8)))
    predict = Recording()
    asyncio.run(processor(predict, cal).process(orders(8), {}))
    assert predict.calls and all("covariates" not in c for c in predict.calls)
    states = [SkuState(sku="A", location="L")]
    assert covariates_of(states, [day(date(2011, 3, 10))], 14, cal, 56) is None


def test_calendar_records_are_checked_by_the_group_and_bad_ones_dead_lettered() -> None:
    good = {"event_id": "h", "location": "L", "start_day": "2011-04-22",
            "end_day": "2011-04-25", "name": "Easter"}
    records = [rec(TOPICS.calendar, 0, good, key=b"h"),
               rec(TOPICS.calendar, 1, {**good, "end_day": "2011-04-20"}, key=b"h2"),
               rec(TOPICS.calendar, 2, b'{"event_id": '),
               *orders(3, first=3)]
    table: dict[str, Any] = {}
    out = asyncio.run(processor(Recording(), HolidayCalendar()).process(records, table))
    dead = {d.offset: d for d in out.dead_letters}
    assert set(dead) == {1, 2}
    assert "end_day is before start_day" in dead[1].error
    assert dead[2].error_kind == "invalid_json"
    assert all(d.source_topic == TOPICS.calendar for d in dead.values())
    assert out.accepted == 4 and set(table) == {"A@L"}  # the calendar keeps no SKU state


def _holiday_panel(n: int = 6, days: int = 260) -> Panel:
    """Demand that drops to a fifth on its location's holidays (one day in eight)."""
    rng = np.random.default_rng(5)
    hol = np.repeat((rng.random((1, days + 30)) < 0.125).astype(float), n, axis=0)
    level = rng.gamma(4.0, 2.0, (n, 1))
    values = rng.poisson(level * (1.0 - 0.8 * hol[:, :days])).astype(float)
    promo = np.zeros_like(hol)
    return Panel(tuple(f"s{i}" for i in range(n)), np.datetime64("2011-01-03"), values,
                 Covariates(np.datetime64("2011-01-03"), promo, np.ones_like(promo), hol))


def test_the_stream_serves_what_the_model_forecasts_offline_with_the_holidays(
        tmp_path: Path) -> None:
    """Day after day through the inferencer's incremental path (one step a day, a key that
    skips days catching up, cold starts), with the holidays as the stream hands them: the
    forecasts equal the model's offline predict on the same windows and covariates; without
    the flags in the steps they would not."""
    pytest.importorskip("torch")
    from tests.support.lstm import train_small_lstm

    panel = _holiday_panel()
    cov = panel.covariates
    assert cov is not None and cov.holiday is not None
    model = train_small_lstm(panel.head(200), data_holidays=True)
    assert model.reads_holidays
    keys = [f"k{i}" for i in range(panel.n_series)]
    length = 40  # the stream's window: shorter than the model's cold-start warm-up

    async def serve(with_flags: bool) -> float:
        worst = 0.0
        async with Inferencer(model, on_loop=True) as inf:
            for t in range(200, 230):
                rows = [i for i in range(panel.n_series) if not (i == 2 and t % 3 == 1)]
                windows = panel.values[rows, t - length + 1: t + 1]
                end = panel.dates[t]
                known = cov.subset(rows) if with_flags else None
                got = await inf.serve_keyed([keys[i] for i in rows], windows, 14, end,
                                            states=[None] * len(rows), covariates=known)
                # offline: the whole history since the first request (what the state saw)
                offline = model.predict(panel.values[rows, 200 - length + 1: t + 1], 14,
                                        end_days=end, covariates=cov.subset(rows))
                worst = max(worst, float(np.abs(got.forecast.mean - offline.mean).max()))
            assert inf.stats.incremental > inf.stats.full > 0
        return worst

    assert asyncio.run(serve(True)) < 1e-3
    assert asyncio.run(serve(False)) > 1e-2


def test_a_worker_warns_when_its_model_reads_holidays_and_the_calendar_is_empty(
        caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from streams.forecaster_setup import reads_holidays, warn_without_holidays

    plain = make_forecaster("moving_average")
    mix = SimpleNamespace(model_version="m1", reads_holidays=False,
                          lightgbm=SimpleNamespace(holidays_used=True))
    assert not reads_holidays(plain) and reads_holidays(mix)  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="streams.forecaster_setup"):
        warn_without_holidays(plain, 0)
        warn_without_holidays(mix, 3)  # type: ignore[arg-type]
        assert not caplog.records
        warn_without_holidays(mix, 0)  # type: ignore[arg-type]
    assert len(caplog.records) == 1 and "shelfcast calendar publish" in caplog.text


def test_the_exported_schema_agrees_with_the_worker_on_holidays(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from schemas import export_json_schemas

    export_json_schemas(tmp_path)
    schema = json.loads((tmp_path / "HolidayEvent.v1.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert "x-kafka-key" not in schema  # not keyed by SKU: any key (event_id compacts it)
    check = jsonschema.Draft202012Validator(schema)
    base = {"event_id": "h", "location": "*", "start_day": "2024-02-29",
            "end_day": "2024-03-01", "name": "leap"}
    cases = [base, {**base, "start_day": "2023-02-29"}, {**base, "end_day": "2024-3-01"},
             {**base, "location": ""}, {**base, "version": 0}, {**base, "other": 1},
             {**base, "name": None}, {**base, "cancelled": "yes"}]
    for value in cases:
        try:
            decode(HolidayEvent, json.dumps(value).encode())
            worker = True
        except InvalidEvent:
            worker = False
        assert check.is_valid(value) == worker, value
    assert check.is_valid(base)
