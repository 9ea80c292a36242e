"""The loop closes itself, on a real Kafka broker and a real PostgreSQL: a replay of demand
with a level shift raises a `model_drift` alert, `retrain --on-drift` promotes a challenger,
the worker rolls it in and the rolling accuracy recovers; the same replay without the shift
raises no alert and promotes nothing.

Every component is the real one: the stream worker is its own process (`shelfcast worker`,
the batch engine serving the LSTM from SHELFCAST_MODEL_PATH, polled every 0.5 s), the
optimizer service scores the actuals and publishes the alert, `retrain_on_drift` (what
`shelfcast retrain --on-drift` runs) follows the alerts topic, and the first champion comes
from `retrain_once` on the history recorded before the replay.

The demand is synthetic, made here with a fixed seed: 8 SKUs, Poisson around a Monday-heavy
week (1 + Poisson, so that every SKU orders every day and closes every bucket). The test
needs a shift it controls (where, and how large) and a replay that no other file feeds;
the shared real data stays out of the fixtures. The shift, at day 70, is the one
tests/integration/test_retrain.py uses: level x2.5 and the weekly peak moved by three days.
A level change alone would not do: the LSTM scales its inputs by a running level, so it
follows a level shift by itself within weeks and no retraining is needed to recover; the
moved peak is what a model trained before the shift keeps getting wrong.

Robust by construction:
- the models are tiny (16 hidden units, 8 series, about 10 s of training each) and seeded,
  on one thread, and the data is seeded: the same weights every run;
- the replay waits for the pipeline, not for the wall clock: days before the shift go in
  one burst; from the shift on, one day at a time, each produced once the day before is in
  demand_history (its forecast scored, the drift monitor advanced in the same transaction);
- the drift monitors read a bucket only once every partition of shelfcast.demand has carried
  a later one (forecasting/accuracy.py, Completeness), so the burst reads the same complete
  buckets as a slow replay: before that rule, a burst that drained one partition ahead of
  the other raised false model_drift alerts on half-scored buckets (the no-shift test checks
  that every bucket its monitors read holds every SKU);
- the retrainer waits (`settle_buckets`) until 49 buckets after the bucket the episode
  opened at are recorded: a challenger can only learn the new demand from what was recorded
  after the change, and its training ends 14 days (the backtest's two folds) before the
  newest bucket. The replay stops right there, so the panel the challenger is trained and
  judged on is the same in every run; it resumes once the worker has logged the roll-in, so
  every bucket after it is forecast by the new version;
- the margins are wide: the challenger's backtest pinball is about a third of the
  champion's; after the roll-in, the relative pinball is about half the champion's after
  the shift.
The no-shift replay promotes nothing because nothing triggers a retraining: no drift alert
(the retrainer reads the alerts topic from its beginning once the replay is absorbed).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from optimizer.service import OptimizerService
from optimizer.store import PlanStore
from runtime.settings import Settings
from schemas import AlertEvent, sku_key
from shelfcast.worker_process import WorkerProcess
from streams.topics import ensure_topics
from tests.support import browser
from tests.support.browser import chromium, free_port, get
from tests.support.demand import shifted_demand
from tests.support.kafka import produce, read_all

torch = pytest.importorskip("torch")

N_SKUS, SHIFT_DAY, HISTORY_DAYS = 16, 70, 56
DETECT_BUCKETS = 5  # the alert's bucket is at most this many buckets after the shift
SETTLE_BUCKETS = 56  # recorded after the episode opened, before the retraining starts
AFTER_DAYS = 21  # at least this many buckets forecast by the new version
DAYS = SHIFT_DAY + DETECT_BUCKETS + SETTLE_BUCKETS + 3 + AFTER_DAYS
DAY0 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday


def demand(shift: bool) -> np.ndarray:
    """(N_SKUS, DAYS) daily units, at least 1; with `shift`, from SHIFT_DAY on x2.5 and peaking
    Thursday."""
    return 1.0 + shifted_demand(N_SKUS, DAYS, SHIFT_DAY, shift)


def options(model_dir: Path) -> Any:
    """A tiny, seeded LSTM judged on 2 folds of 7 days; no calendar-month inputs to the head
    (two months of history teach it nothing about months but noise)."""
    from forecasting.lstm import LSTMConfig
    from forecasting.retrain import BacktestProtocol
    from shelfcast.retrain import RetrainOptions

    config = LSTMConfig(horizon=7, hidden=16, head_hidden=16, max_epochs=400, patience=20,
                        batch_series=4, lr=0.02, calendar="none", val_days=7, seed=0,
                        head_calendar=False, year_ago=False)
    return RetrainOptions(model_dir=model_dir, config=config, device="cpu",
                          history_days=SETTLE_BUCKETS,
                          protocol=BacktestProtocol(horizon=7, folds=2, val_days=7))


def day(d: int) -> datetime:
    return DAY0 + timedelta(days=d)


def orders(values: np.ndarray, days: range) -> list[tuple[str, bytes]]:
    """One order per SKU and day, at 10:00, for that day's units."""
    return [(sku_key(f"SKU{i}", "wh1"), json.dumps({
        "event_id": f"o{i}-{d}", "type": "placed", "sku": f"SKU{i}", "location": "wh1",
        "quantity": int(values[i, d]), "occurred_at": (day(d) + timedelta(hours=10)).isoformat(),
    }).encode()) for d in days for i in range(N_SKUS)]


async def record_history(dsn: str, values: np.ndarray, days: range) -> None:
    """What the system recorded before the replay: the first champion is trained on it."""
    rows = [(f"SKU{i}", "wh1", day(d), 86_400, float(values[i, d]), None)
            for i in range(N_SKUS) for d in days]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "demand_history", records=rows, columns=["sku", "location", "bucket_start",
                                                     "bucket_seconds", "quantity",
                                                     "model_version"])
    finally:
        await conn.close()


async def wait_recorded(dsn: str, d: int, timeout_s: float = 60.0) -> None:
    """Until every SKU's bucket `d` is in demand_history with its forecast scored."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            n = await conn.fetchval("SELECT count(*) FROM forecast_scores WHERE bucket_start = $1",
                                    day(d))
            if n == N_SKUS:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"day {d} not scored after {timeout_s} s ({n} SKUs)")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def opened_episode(dsn: str) -> datetime | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT min(opened_bucket) FROM drift_episodes")
    finally:
        await conn.close()


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def wait_log(worker: WorkerProcess, text: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in worker.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the worker log:\n{worker.log_tail()}")
        await asyncio.sleep(0.1)


def accuracy(rows: list[asyncpg.Record]) -> tuple[float, float]:
    """(relative pinball, 80% coverage) of scored SKU-buckets: sum pinball / sum actual, as
    the drift monitor pools a segment."""
    pinball = sum(r["pinball"] for r in rows)
    actual = sum(r["actual"] for r in rows)
    return pinball / actual, sum(r["covered"] for r in rows) / len(rows)


class Loop:
    """The running system of one test: topics, the first champion, a worker process and
    the optimizer service."""

    def __init__(self, kafka_bootstrap: str, dsn: str, prefix: str, tmp_path: Path,
                 values: np.ndarray) -> None:
        self.dsn, self.values = dsn, values
        self.model_dir = tmp_path / "models" / "current"
        self.settings = Settings(
            kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix,
            shop_topic_prefix=f"{prefix}shop.", app_id=f"{prefix}app", topic_partitions=2,
            database_url=dsn, engine="batch", model="lstm", model_path=self.model_dir,
            model_poll_s=0.5, horizon_buckets=7, window_buckets=56, device="cpu",
            max_wait_ms=1, web_port=free_port())
        self.worker = WorkerProcess(self.settings, tmp_path / "worker.log",
                                    env={"OMP_NUM_THREADS": "1"})
        self.stop = asyncio.Event()
        self.optimizer: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> Loop:
        from shelfcast.retrain import retrain_once

        async with await PlanStore.connect(self.dsn) as store:
            await store.migrate()
        await ensure_topics(self.settings)
        await record_history(self.dsn, self.values, range(HISTORY_DAYS))
        first = await retrain_once(self.settings, self.dsn, options(self.model_dir),
                                   log=io.StringIO())
        assert first.decision.promote
        self.champion = first.challenger_version
        self.worker.start()
        await asyncio.to_thread(self.worker.wait_ready, 120)
        self.optimizer = asyncio.create_task(
            OptimizerService(self.settings, self.dsn).run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        if self.optimizer is not None:
            await self.optimizer
        self.worker.stop()

    async def replay(self, days: range) -> None:
        await produce(self.settings, self.settings.topics.orders, orders(self.values, days))

    async def drift_alerts(self) -> list[AlertEvent]:
        return [a for r in await read_all(self.settings, self.settings.topics.alerts)
                if (a := AlertEvent.model_validate_json(r.value)).kind == "model_drift"]

    async def scores(self) -> list[asyncpg.Record]:
        return await fetch(self.dsn, "SELECT bucket_start, model_version, pinball, actual,"
                                     " covered FROM forecast_scores ORDER BY bucket_start")


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """Training in this process on one thread: the same weights every run, and the worker
    keeps the other core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.timeout(300)
async def test_a_shift_is_detected_retrained_rolled_in_and_accuracy_recovers(
    kafka_bootstrap: str, pg_database: str, fresh_topic_prefix: str, tmp_path: Path
):
    from shelfcast.retrain import retrain_on_drift

    loop = Loop(kafka_bootstrap, pg_database, fresh_topic_prefix, tmp_path, demand(shift=True))
    async with loop:
        log = io.StringIO()
        retrainer = asyncio.create_task(retrain_on_drift(
            loop.settings, pg_database, options(loop.model_dir), from_beginning=True,
            max_runs=1, settle_buckets=SETTLE_BUCKETS, settle_poll_s=0.2, log=log))
        started = time.monotonic()
        await loop.replay(range(SHIFT_DAY + 1))  # the days before the shift, in one burst
        await wait_recorded(pg_database, SHIFT_DAY - 1, timeout_s=120)
        opened: datetime | None = None
        d = SHIFT_DAY + 1
        while opened is None or d <= (opened - DAY0).days + SETTLE_BUCKETS + 1:
            assert d < SHIFT_DAY + DETECT_BUCKETS + 2 or opened is not None, \
                f"no drift episode {DETECT_BUCKETS} buckets after the shift"
            await loop.replay(range(d, d + 1))
            await wait_recorded(pg_database, d - 1)
            opened = opened or await opened_episode(pg_database)
            d += 1
        replayed_s = time.monotonic() - started
        [outcome] = await asyncio.wait_for(retrainer, 180)
        challenger = outcome.challenger_version
        await wait_log(loop.worker, f"rolled in model {challenger}")
        resume = d
        await loop.replay(range(resume, DAYS))
        await wait_recorded(pg_database, DAYS - 2, timeout_s=120)
        alerts = await loop.drift_alerts()
        scores = await loop.scores()
        versions = await fetch(pg_database, "SELECT * FROM model_versions ORDER BY id")
        port = loop.settings.web_port
        assert port is not None
        fleet = await asyncio.to_thread(get, port, "/api/accuracy/")
        one = await asyncio.to_thread(get, port, "/api/accuracy/?sku=SKU0%40wh1")
        await screenshot(port, tmp_path)
    print(log.getvalue())
    for v in versions:  # the README quotes these rows
        print("model_versions:", v["id"], v["version"], v["data_first_bucket"].date(),
              v["data_last_bucket"].date(), v["champion_version"], v["champion_scores"],
              v["challenger_scores"], v["promoted"], v["reason"])
    for w in range(0, DAYS, 7):
        week = [s for s in scores if w <= (s["bucket_start"] - DAY0).days < w + 7]
        if week:
            print(w, {s["model_version"] for s in week}, "{:.3f} {:.2f}".format(*accuracy(week)))

    # detected: one episode per segment (the location and the fleet), about the champion
    assert opened is not None
    detected_after = (opened - day(SHIFT_DAY)).days
    assert 0 <= detected_after <= DETECT_BUCKETS
    assert {(a.location, a.details["model_version"], a.bucket) for a in alerts} == {
        ("wh1", loop.champion, opened), ("*", loop.champion, opened)}
    settled = day((opened - DAY0).days + SETTLE_BUCKETS)
    assert f"waiting until demand_history holds {settled:%Y-%m-%d}" in log.getvalue()

    # retrained and promoted: both decisions recorded, the challenger wins the backtest
    assert outcome.decision.promote, outcome.decision.reason
    assert outcome.champion_version == loop.champion
    assert outcome.challenger_scores.pinball < 0.7 * outcome.champion_scores.pinball
    assert [(v["version"], v["champion_version"], v["promoted"]) for v in versions] == [
        (loop.champion, None, True), (challenger, loop.champion, True)]
    assert versions[1]["data_last_bucket"] == day(resume - 2)  # what was recorded, no more

    # served: every bucket after the roll-in forecast by the new version, none before
    first_new = day(resume)  # forecast when day resume - 1 closed, after the roll-in
    assert {s["model_version"] for s in scores if s["bucket_start"] >= first_new} == {challenger}
    assert {s["model_version"] for s in scores if s["bucket_start"] < first_new} == {
        loop.champion}
    served = [s for s in scores if s["bucket_start"] >= first_new]
    assert len(served) >= AFTER_DAYS * N_SKUS

    # recovered: after the roll-in, about half the champion's loss after the shift
    before = accuracy([s for s in scores if s["bucket_start"] < day(SHIFT_DAY)])
    shifted = accuracy([s for s in scores if day(SHIFT_DAY) <= s["bucket_start"] < first_new])
    after = accuracy(served)
    print(f"replay to the retraining: {replayed_s:.0f} s; drift seen {detected_after} "
          f"bucket(s) after the shift; relative pinball / 80% coverage: before the shift "
          f"{before[0]:.3f} / {before[1]:.2f}, champion after it {shifted[0]:.3f} / "
          f"{shifted[1]:.2f}, {challenger} after the roll-in {after[0]:.3f} / {after[1]:.2f}")
    assert after[0] < 0.5 * shifted[0]
    assert after[1] > shifted[1] + 0.15 and after[1] >= 0.55

    # the planner's view: both versions on the accuracy charts, the promotion marked where
    # the challenger took over (the first promotion: where the champion started serving)
    for acc in (fleet, one):
        assert [v["version"] for v in acc["versions"]] == [loop.champion, challenger]
        assert [(m["version"], m["t"]) for m in acc["promotions"]] == [
            (loop.champion, (day(1)).timestamp()), (challenger, first_new.timestamp())]
        assert acc["points"][-1]["version"] == challenger
    assert fleet["points"][-1]["scored"] == 7 * N_SKUS and one["points"][-1]["scored"] == 7


async def screenshot(port: int, tmp_path: Path) -> None:
    """The dashboard with this run's accuracy charts: artifacts/dashboard-accuracy.png (the
    README's docs/dashboard-accuracy.png is a copy); nothing without Chromium."""
    binary = chromium()
    if binary is None:
        return
    url = f"http://127.0.0.1:{port}/dashboard/?sku=SKU0%40wh1"
    await asyncio.to_thread(browser.screenshot, binary, tmp_path / "chromium",
                            "dashboard-accuracy.png", url, 1280, 1100)


@pytest.mark.timeout(300)
async def test_the_same_replay_without_a_shift_promotes_nothing(
    kafka_bootstrap: str, pg_database: str, fresh_topic_prefix: str, tmp_path: Path
):
    from shelfcast.retrain import retrain_on_drift

    loop = Loop(kafka_bootstrap, pg_database, fresh_topic_prefix, tmp_path,
                demand(shift=False))
    async with loop:
        await loop.replay(range(DAYS))
        await wait_recorded(pg_database, DAYS - 2, timeout_s=180)
        # every alert the replay raised, from the topic's beginning: none is model_drift
        outcomes = await retrain_on_drift(
            loop.settings, pg_database, options(loop.model_dir), from_beginning=True,
            settle_buckets=SETTLE_BUCKETS, idle_exit_s=4, log=io.StringIO())
        alerts = await loop.drift_alerts()
        scores = await loop.scores()
        episodes = await fetch(pg_database, "SELECT * FROM drift_episodes")
        versions = await fetch(pg_database, "SELECT * FROM model_versions")
        monitors = await fetch(pg_database, "SELECT segment, evaluated_through, state"
                                            " FROM drift_monitors ORDER BY segment")
    assert alerts == [] and episodes == [] and outcomes == []
    # the whole replay came in one burst, yet the monitors read each bucket once complete:
    # through the newest but one closed bucket (day DAYS - 1 is open), every SKU in each
    assert [(m["segment"], m["evaluated_through"]) for m in monitors] == [
        ("*", day(DAYS - 3)), ("wh1", day(DAYS - 3))]
    for m in monitors:
        history = json.loads(m["state"])["history"]
        assert len(history) == 28 and {t["scored"] for _, t in history} == {N_SKUS}
    assert [(v["version"], v["promoted"]) for v in versions] == [(loop.champion, True)]
    assert {s["model_version"] for s in scores} == {loop.champion}
    assert len({s["bucket_start"] for s in scores}) == DAYS - 2  # day 0 has no forecast
    print("relative pinball / 80% coverage without a shift: {:.3f} / {:.2f}".format(
        *accuracy(scores)))
