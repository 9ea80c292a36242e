"""`shelfcast retrain` on a real PostgreSQL: champion/challenger from demand_history.

Twelve synthetic SKUs (Poisson demand on a weekly profile, made here with a fixed seed) are
recorded in demand_history as the optimizer would record closed buckets. With a regime shift
(level x2.5 and the weekly peak moved by three days at day 100), the champion trained before
the shift loses the backtest on the most recent weeks and the challenger is promoted. The
weekly profile moves too: the LSTM normalises its inputs by a running scale that follows a
level change, and the moved peak makes the champion lose by a wide margin by construction,
not by luck. Without a shift the test is robust by construction as well: the
champion was trained by the same command on the same data, so the challenger is the same
model and must not be promoted (no churn on unchanged demand).
"""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from optimizer.holidays import write_holidays
from optimizer.promotions import write_promotions
from optimizer.store import PlanStore
from runtime.settings import Settings
from schemas.events import HolidayEvent, PromotionEvent
from shelfcast.cli import main
from streams.web import WorkerWeb
from tests.support.demand import shifted_demand

N_SKUS, DAYS, SHIFT_DAY = 12, 260, 100
DAY0 = datetime(2024, 1, 1, tzinfo=UTC)
# A small, quick LSTM (about 10 s per training on one core); same seed, same weights.
TINY = ["--hidden", "16", "--max-epochs", "60", "--patience", "8", "--batch-series", "4",
        "--lr", "0.01", "--calendar", "none", "--val-days", "14", "--seed", "0",
        "--threads", "1", "--device", "cpu", "--no-progress", "--folds", "2"]


def model_files(model_dir: Path) -> dict[str, bytes]:
    """Every file of a model directory (the served lstm_lgbm keeps its parts in subdirectories)."""
    return {str(p.relative_to(model_dir)): p.read_bytes()
            for p in sorted(model_dir.rglob("*")) if p.is_file()}


def demand(shift: bool) -> np.ndarray:
    """(N_SKUS, DAYS) daily units; with `shift`, from SHIFT_DAY on x2.5 and peaking Thursday."""
    return shifted_demand(N_SKUS, DAYS, SHIFT_DAY, shift)


async def migrated(dsn: str) -> None:
    async with await PlanStore.connect(dsn) as store:
        await store.migrate()


async def record(dsn: str, values: np.ndarray, days: range) -> None:
    rows = [(f"SKU{i}", "wh1", DAY0 + timedelta(days=d), 86_400, float(values[i, d]),
             "moving_average-1") for i in range(values.shape[0]) for d in days]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "demand_history", records=rows,
            columns=["sku", "location", "bucket_start", "bucket_seconds", "quantity",
                     "model_version"])
    finally:
        await conn.close()


async def model_versions(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("SELECT * FROM model_versions ORDER BY id")
    finally:
        await conn.close()


async def retrain(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                  dsn: str, model_dir: Path, *extra: str) -> tuple[int, str, str]:
    monkeypatch.setenv("SHELFCAST_DATABASE_URL", dsn)
    monkeypatch.setenv("SHELFCAST_MODEL_PATH", str(model_dir))
    code = await asyncio.to_thread(main, ["retrain", *TINY, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def served_version(model_dir: Path) -> str:
    return str(json.loads((model_dir / "metadata.json").read_text())["model_version"])


@pytest.mark.timeout(600)
async def test_a_shift_gets_the_challenger_promoted(pg_database: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]):
    await migrated(pg_database)
    model_dir = tmp_path / "models" / "current"
    values = demand(shift=True)

    await record(pg_database, values, range(SHIFT_DAY))
    code, out, err = await retrain(monkeypatch, capsys, pg_database, model_dir)
    assert code == 0, err
    assert "no champion in" in err and "decision: promoted" in out, (out, err)
    first = served_version(model_dir)

    await record(pg_database, values, range(SHIFT_DAY, DAYS))  # the shift, as it was recorded
    code, out, err = await retrain(monkeypatch, capsys, pg_database, model_dir,
                                   "--json", str(tmp_path / "retrain.json"))
    assert code == 0, err
    print(err, out)  # the README shows this run's output
    assert "PROMOTED" in err and "challenger wins" in out, (out, err)
    second = served_version(model_dir)
    assert second != first
    assert served_version(model_dir.with_name("current.previous")) == first  # rollback copy
    assert not [p for p in model_dir.parent.iterdir() if "staging" in p.name]

    rows = await model_versions(pg_database)
    for r in rows:  # the README shows these rows
        print({k: r[k] for k in ("id", "version", "data_first_bucket", "data_last_bucket",
                                 "champion_version", "champion_scores", "challenger_scores",
                                 "promoted", "reason")})
    assert [(r["version"], r["champion_version"], r["promoted"]) for r in rows] == [
        (first, None, True), (second, first, True)]
    assert rows[0]["champion_scores"] is None and "no champion" in rows[0]["reason"]
    shifted = rows[1]
    champion, challenger = (json.loads(shifted["champion_scores"]),
                            json.loads(shifted["challenger_scores"]))
    assert challenger["pinball"] < champion["pinball"] * (1 - 0.005)
    assert shifted["data_first_bucket"] == DAY0
    assert shifted["data_last_bucket"] == DAY0 + timedelta(days=DAYS - 1)
    assert shifted["n_series"] == N_SKUS
    protocol = json.loads(shifted["protocol"])
    assert protocol["folds"] == 2 and protocol["horizon"] == 14
    assert protocol["origins"] == ["2024-08-20", "2024-09-03"]  # the last 28 of 260 days
    report = json.loads((tmp_path / "retrain.json").read_text())
    assert report["promoted"] and report["model_versions_id"] == shifted["id"]

    # the planner's view: the dashboard API lists both decisions, newest first, with markers
    web = WorkerWeb(Settings(database_url=pg_database), None)
    try:
        status, _, body = await web.aroute("/api/models/", {})
    finally:
        await web.stop()
    assert status == 200
    listed = json.loads(body)
    assert listed["database"] is True
    assert [(v["version"], v["promoted"], v["serving"]) for v in listed["versions"]] == [
        (second, True, True), (first, True, False)]
    assert listed["versions"][0]["champion_scores"] == champion
    assert listed["versions"][0]["data_last_bucket"] == (DAY0 + timedelta(days=DAYS - 1)
                                                         ).timestamp()


@pytest.mark.timeout(600)
async def test_unchanged_demand_promotes_nothing(pg_database: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]):
    await migrated(pg_database)
    model_dir = tmp_path / "model"
    await record(pg_database, demand(shift=False), range(DAYS))
    code, out, err = await retrain(monkeypatch, capsys, pg_database, model_dir)
    assert code == 0 and "decision: promoted" in out, err
    # no holiday recorded: no holiday column, the LSTM's date calendar as before
    assert "holidays:" not in err and "planned promotions:" not in err, err
    assert "data_holidays" not in json.loads(
        (model_dir / "lstm" / "metadata.json").read_text())["config"]
    champion = served_version(model_dir)
    weights = model_files(model_dir)

    code, out, err = await retrain(monkeypatch, capsys, pg_database, model_dir)
    assert code == 0, err
    assert "decision: not promoted" in out and "keeps serving" in err, (out, err)
    assert served_version(model_dir) == champion
    assert model_files(model_dir) == weights
    rows = await model_versions(pg_database)
    assert [(r["champion_version"], r["promoted"]) for r in rows] == [
        (None, True), (champion, False)]
    assert rows[1]["reason"].startswith("the challenger is the champion")
    assert json.loads(rows[1]["champion_scores"]) == json.loads(rows[1]["challenger_scores"])


@pytest.mark.timeout(120)
async def test_mistakes_are_one_line_errors(pg_database: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]):
    model_dir = tmp_path / "model"
    code, _, err = await retrain(monkeypatch, capsys, pg_database, model_dir)
    assert code == 1 and "run `shelfcast migrate` first" in err.splitlines()[-1]

    await migrated(pg_database)
    code, _, err = await retrain(monkeypatch, capsys, pg_database, model_dir)
    assert code == 1
    assert err.splitlines()[-1] == ("shelfcast: error: no demand recorded: demand_history "
                                    "is empty")

    await record(pg_database, demand(shift=False), range(40))
    code, _, err = await retrain(monkeypatch, capsys, pg_database, model_dir)
    assert code == 1
    last = err.splitlines()[-1]
    assert last.startswith("shelfcast: error: too little history: 40 days recorded"), err
    assert "needs 71" in last
    assert not model_dir.exists() and await model_versions(pg_database) == []


@pytest.mark.timeout(300)
async def test_on_drift_retrains_once_per_alert_episode(pg_database: str, kafka_bootstrap: str,
                                                        fresh_topic_prefix: str,
                                                        tmp_path: Path):
    """Two model_drift alerts of one episode (two SKUs, sent together) and an alert of another
    kind: one retraining; the run's consumer group then has nothing left to read."""
    from aiokafka import AIOKafkaProducer

    from forecasting.lstm import LSTMConfig
    from forecasting.retrain import BacktestProtocol
    from schemas import AlertEvent
    from schemas.codec import encode
    from shelfcast.retrain import RetrainOptions, retrain_on_drift
    from streams.topics import ensure_topics

    await migrated(pg_database)
    await record(pg_database, demand(shift=False), range(120))
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=fresh_topic_prefix,
                        app_id=f"{fresh_topic_prefix}app", database_url=pg_database)
    await ensure_topics(settings)
    now = datetime.now(UTC)
    alerts = [AlertEvent(alert_id=f"a{i}", sku=f"SKU{i}", location="wh1", kind=kind,
                         severity="warning", message="rolling pinball left its band",
                         raised_at=now) for i, kind in
              enumerate(["model_drift", "stockout_risk", "model_drift"])]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for alert in alerts:
            await producer.send_and_wait(settings.topics.alerts, encode(alert),
                                         key=f"{alert.sku}@wh1".encode())
    finally:
        await producer.stop()
    options = RetrainOptions(
        model_dir=tmp_path / "model", protocol=BacktestProtocol(horizon=14, folds=2,
                                                                val_days=14),
        config=LSTMConfig(hidden=8, head_hidden=8, max_epochs=5, calendar="none"),
        device="cpu")
    log = io.StringIO()
    outcomes = await retrain_on_drift(settings, pg_database, options, from_beginning=True,
                                      idle_exit_s=8, log=log)
    assert len(outcomes) == 1 and outcomes[0].decision.promote, log.getvalue()
    assert "2 model_drift alert(s) (SKU0@wh1, SKU2@wh1): retraining" in log.getvalue()
    assert [r["promoted"] for r in await model_versions(pg_database)] == [True]
    # committed: the same group starts where it stopped and finds no new episode
    again = await retrain_on_drift(settings, pg_database, options, idle_exit_s=4,
                                   log=io.StringIO())
    assert again == []


@pytest.mark.timeout(600)
async def test_recorded_promotions_reach_the_challenger(pg_database: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]):
    """Planned promotions the optimizer recorded (planned_promotions) are the retrained
    model's covariates, as the stream serves them: the served LightGBM part trains with them."""
    await migrated(pg_database)
    values = demand(shift=False)
    rng = np.random.default_rng(3)
    spans = []
    for i in range(N_SKUS):  # three 4-day promotions per SKU, demand x3 on their days
        for start in rng.choice(np.arange(10, DAYS - 10, 20), size=3, replace=False):
            values[i, start:start + 4] *= 3
            spans.append((i, int(start)))
    await record(pg_database, values, range(DAYS))
    events = [PromotionEvent(event_id=f"p{i}-{start}", sku=f"SKU{i}", location="wh1",
                             start_day=(DAY0 + timedelta(days=start)).date(),
                             end_day=(DAY0 + timedelta(days=start + 3)).date())
              for i, start in spans]
    conn = await asyncpg.connect(pg_database)
    try:
        async with conn.transaction():
            assert await write_promotions(conn, events) == len(events)
    finally:
        await conn.close()

    model_dir = tmp_path / "model"
    code, out, err = await retrain(monkeypatch, capsys, pg_database, model_dir)
    assert code == 0 and "decision: promoted" in out, err
    assert f"planned promotions: {N_SKUS} of {N_SKUS} series" in err, err
    part = json.loads((model_dir / "lightgbm" / "lightgbm.json").read_text())
    assert part["covariates"] is True


@pytest.mark.timeout(600)
async def test_recorded_holidays_reach_the_challenger(pg_database: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]):
    """The holiday calendar the optimizer recorded (holiday_calendar) is the retrained
    model's holiday column, as the stream serves it (no promotion recorded: neutral
    covariates that carry it): both parts of the served mix read the data's own holidays."""
    await migrated(pg_database)
    values = demand(shift=False)
    events = []
    for k, start in enumerate(range(12, DAYS - 5, 21)):  # 2-day closures, demand / 10
        values[:, start:start + 2] /= 10
        events.append(HolidayEvent(
            event_id=f"h{k}", location="wh1" if k % 2 else "*",  # the location's, everyone's
            start_day=(DAY0 + timedelta(days=start)).date(),
            end_day=(DAY0 + timedelta(days=start + 1)).date()))
    events += [  # neither is a holiday of wh1: another location's, and a withdrawn one
        HolidayEvent(event_id="elsewhere", location="wh9", start_day=DAY0.date() + timedelta(5),
                     end_day=DAY0.date() + timedelta(6)),
        HolidayEvent(event_id="withdrawn", location="wh1", version=2, cancelled=True,
                     start_day=DAY0.date() + timedelta(8), end_day=DAY0.date() + timedelta(8))]
    await record(pg_database, np.round(values), range(DAYS))
    conn = await asyncpg.connect(pg_database)
    try:
        async with conn.transaction():
            assert await write_holidays(conn, events) == len(events)
    finally:
        await conn.close()

    model_dir = tmp_path / "model"
    code, out, err = await retrain(monkeypatch, capsys, pg_database, model_dir)
    assert code == 0 and "decision: promoted" in out, err
    assert f"holidays: {N_SKUS} of {N_SKUS} series (holiday_calendar)" in err, err
    assert "planned promotions:" not in err, err
    lstm = json.loads((model_dir / "lstm" / "metadata.json").read_text())
    assert lstm["config"]["data_holidays"] is True  # kept on: the panel has the column
    part = json.loads((model_dir / "lightgbm" / "lightgbm.json").read_text())
    assert part.get("holidays") is True  # the boosters read the holiday features
