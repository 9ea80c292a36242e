"""`shelfcast retrain`: champion/challenger retraining from `demand_history`, once or on every
`model_drift` alert episode.

One run: read the recorded demand (optimizer.model_versions) into a panel, with the planned
promotions and holidays the optimizer recorded as its covariates, load the champion
from the model directory, train a challenger LSTM on the days before the backtest's first
origin, score both on the same rolling-origin folds (forecasting.retrain), decide
(forecasting.promotion), and in one database transaction record the decision in
`model_versions` and, when promoted, swap the challenger into the model directory, where the
workers' poll rolls it in (streams.forecaster_setup). Progress goes to stderr.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import asyncpg
import numpy as np

from forecasting.covariates import Covariates
from forecasting.promotion import (
    COVERAGE_MARGIN,
    PINBALL_MARGIN,
    ModelScores,
    PromotionDecision,
    decide_promotion,
)
from forecasting.retrain import (
    DAILY_BUCKET_SECONDS,
    BacktestProtocol,
    RetrainError,
    backtest_pair,
    load_champion,
    panel_from_rows,
    replace_directory,
    staging_directory,
    train_challenger,
)
from optimizer.holidays import read_holiday_flags
from optimizer.model_versions import (
    ModelVersionRecord,
    read_demand_history,
    record_model_version,
)
from optimizer.promotions import read_promotion_covariates
from runtime.settings import Settings

__all__ = ["RetrainOptions", "RetrainOutcome", "retrain_on_drift", "retrain_once"]


@dataclass
class RetrainOptions:
    """What one retraining reads, trains and compares (see `shelfcast retrain --help`)."""

    model_dir: Path
    protocol: BacktestProtocol = field(default_factory=BacktestProtocol)
    config: Any = None  # forecasting.lstm.LSTMConfig; None: LSTMConfig()
    # What the challenger is ("lstm" or "lstm_lgbm"); None: the champion's kind, or the
    # served model (Settings.model) when there is no champion.
    model: str | None = None
    history_days: int | None = 730
    max_seconds: float | None = None
    margin: float = PINBALL_MARGIN
    coverage_margin: float = COVERAGE_MARGIN
    device: str = "auto"
    progress_bar: bool = False


@dataclass
class RetrainOutcome:
    """What a run decided, with everything the README and the JSON report show."""

    decision: PromotionDecision
    challenger_version: str
    champion_version: str | None
    challenger_scores: ModelScores
    champion_scores: ModelScores | None
    n_series: int
    first_day: str
    last_day: str
    record_id: int
    model_dir: Path
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"promoted": self.decision.promote, "reason": self.decision.reason,
                "challenger_version": self.challenger_version,
                "champion_version": self.champion_version,
                "challenger_scores": self.challenger_scores.to_json(),
                "champion_scores": (None if self.champion_scores is None
                                    else self.champion_scores.to_json()),
                "n_series": self.n_series, "first_day": self.first_day,
                "last_day": self.last_day, "model_versions_id": self.record_id,
                "model_dir": str(self.model_dir), "seconds": round(self.seconds, 1)}


def _day_start(day: np.datetime64) -> datetime:
    return datetime.fromisoformat(str(day.astype("datetime64[D]"))).replace(tzinfo=UTC)


async def retrain_once(settings: Settings, database_url: str, options: RetrainOptions, *,
                       log: TextIO | None = None) -> RetrainOutcome:
    """One champion/challenger round (this module's docstring)."""
    from forecasting.lstm import LSTMConfig
    from forecasting.model_dir import SAVABLE, save_model_dir

    out = log or sys.stderr
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"retrain: {text}", file=out, flush=True)

    bucket_seconds = settings.bucket_seconds()
    if bucket_seconds != DAILY_BUCKET_SECONDS:
        raise RetrainError(f"retraining reads daily buckets (the LSTM's calendar is daily); "
                           f"SHELFCAST_BUCKET={settings.bucket} records {bucket_seconds} s buckets")
    protocol = options.protocol
    say(f"reading demand_history ({settings.bucket} buckets"
        + (f", last {options.history_days} days)" if options.history_days else ")"))
    conn = await asyncpg.connect(database_url)
    try:
        rows = await read_demand_history(
            conn, bucket_seconds=bucket_seconds, max_buckets=options.history_days,
            on_rows=lambda n: print(f"  {n} rows", file=out, flush=True) if n >= 500_000
            else None)
        panel = panel_from_rows(rows.keys, rows.series, rows.buckets, rows.quantities)
        # the planned promotions and holidays the optimizer recorded: the covariates the
        # stream serves
        grid_days = panel.n_days + protocol.horizon
        covariates = await read_promotion_covariates(conn, panel.ids, panel.start, grid_days)
        holidays = await read_holiday_flags(conn, panel.ids, panel.start, grid_days)
    finally:
        await conn.close()
    if covariates is not None:
        promoted = int((covariates.promo.any(axis=1) | (covariates.price_ratio != 1).any(axis=1))
                       .sum())
        say(f"planned promotions: {promoted} of {panel.n_series} series (planned_promotions)")
    if holidays is not None:
        # as the stream hands them: with no promotion planned, "no promotion, full price"
        base = covariates or Covariates.neutral(panel.n_series, panel.start, grid_days)
        covariates = dataclasses.replace(base, holiday=holidays)
        say(f"holidays: {int(holidays.any(axis=1).sum())} of {panel.n_series} series "
            "(holiday_calendar)")
    if covariates is not None:
        panel = dataclasses.replace(panel, covariates=covariates)
    first_day, last_day = str(panel.dates[0]), str(panel.dates[-1])
    say(f"{panel.n_series} series x {panel.n_days} days ({first_day} .. {last_day}), "
        f"{len(rows)} recorded buckets")
    protocol.check(panel)

    champion = await asyncio.to_thread(load_champion, options.model_dir)
    champion_version = None if champion is None else champion.model_version
    say(f"champion {champion_version} from {options.model_dir}" if champion is not None
        else f"no champion in {options.model_dir}: the challenger will be the first model")

    kind = options.model or (champion.name if champion is not None else settings.model)
    if kind not in SAVABLE:  # a baseline is configured: retrain the LSTM
        kind = "lstm"
    config = options.config if options.config is not None else LSTMConfig()
    champion_horizon = getattr(getattr(champion, "config", None), "horizon", None)
    if champion_horizon is not None:  # the challenger forecasts as far as the champion does
        if champion_horizon < protocol.horizon:
            raise RetrainError(f"the champion forecasts {champion_horizon} days, the backtest "
                               f"asks {protocol.horizon}: pass --horizon {champion_horizon}")
        config = dataclasses.replace(config, horizon=max(config.horizon, champion_horizon))
    first = protocol.first_origin(panel.n_days)
    say(f"training the challenger ({kind}) on {first} days "
        f"({first_day} .. {panel.dates[first - 1]}, the last {protocol.val_days} for validation)"
        + (f", at most {options.max_seconds:.0f} s" if options.max_seconds else ""))

    def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
        print(f"  epoch {epoch}: train loss {train_loss:.4f}, validation loss {val_loss:.4f}",
              file=out, flush=True)

    trained = await asyncio.to_thread(
        train_challenger, panel, protocol, config, device=options.device,
        max_seconds=options.max_seconds, progress=options.progress_bar,
        on_epoch=None if options.progress_bar else on_epoch, model=kind)
    challenger = trained.forecaster
    trained_at = datetime.now(UTC)
    staged = staging_directory(options.model_dir)
    try:
        history = panel.head(first)
        await asyncio.to_thread(
            save_model_dir, challenger, staged, data_fingerprint=history.fingerprint(),
            data={"source": "demand_history", "bucket_seconds": bucket_seconds,
                  "n_series": history.n_series, "n_days": history.n_days,
                  "first_day": first_day, "last_day": str(history.dates[-1])},
            metrics=trained.metrics, history=trained.history)
        challenger_version = challenger.model_version
        say(f"challenger {challenger_version} trained in "
            f"{trained.metrics.get('train_seconds', 0.0):.1f} s")

        origins = protocol.to_json(panel)["origins"]
        say(f"backtest: {protocol.folds} fold(s) of {protocol.horizon} days, origins "
            f"{', '.join(origins)}")

        def on_fold(role: str, fold: int, s: dict[str, float]) -> None:
            print(f"  {role:>10} fold {fold}: pinball {s['pinball']:.4f} "
                  f"coverage_80 {s['coverage_80']:.3f} mase {s['mase']:.3f}", file=out,
                  flush=True)

        models: dict[str, Any] = {"challenger": challenger}
        if champion is not None:
            models = {"champion": champion, **models}
        scores = await asyncio.to_thread(backtest_pair, panel, protocol, models, on_fold)
        decision = decide_promotion(
            scores["challenger"], scores.get("champion"), challenger_version=challenger_version,
            champion_version=champion_version, margin=options.margin,
            coverage_margin=options.coverage_margin)
        record = ModelVersionRecord(
            version=challenger_version,
            trained_at=trained_at, bucket_seconds=bucket_seconds,
            data_first_bucket=_day_start(panel.dates[0]),
            data_last_bucket=_day_start(panel.dates[-1]), n_series=panel.n_series,
            champion_version=champion_version,
            champion_scores=None if "champion" not in scores else scores["champion"].to_json(),
            challenger_scores=scores["challenger"].to_json(),
            protocol={**protocol.to_json(panel), "margin": options.margin,
                      "coverage_margin": options.coverage_margin},
            promoted=decision.promote, reason=decision.reason)
        # The row is committed only after the swap succeeded: a failed swap records nothing.
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                record_id = await record_model_version(conn, record)
                if decision.promote:
                    await asyncio.to_thread(replace_directory, staged, options.model_dir)
        finally:
            await conn.close()
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    verdict = (f"PROMOTED {challenger_version} into {options.model_dir}" if decision.promote
               else f"not promoted: {champion_version} keeps serving")
    say(f"{verdict}: {decision.reason} (model_versions id {record_id})")
    return RetrainOutcome(decision, challenger_version, champion_version, scores["challenger"],
                          scores.get("champion"), panel.n_series, first_day, last_day,
                          record_id, options.model_dir, time.perf_counter() - started)


def summary_table(outcome: RetrainOutcome) -> str:
    """The two models' scores and the decision, as the command prints them on stdout."""
    lines = [f"{'model':<11} {'version':<20} {'pinball':>9} {'coverage_80':>12} {'mase':>7}"]
    rows = [("champion", outcome.champion_version, outcome.champion_scores),
            ("challenger", outcome.challenger_version, outcome.challenger_scores)]
    for role, version, s in rows:
        if s is None:
            lines.append(f"{role:<11} {'(none)':<20} {'-':>9} {'-':>12} {'-':>7}")
        else:
            lines.append(f"{role:<11} {version or '-':<20} {s.pinball:>9.4f} "
                         f"{s.coverage_80:>12.3f} {s.mase:>7.3f}")
    lines.append(f"decision: {'promoted' if outcome.decision.promote else 'not promoted'} "
                 f"(model_versions id {outcome.record_id}): {outcome.decision.reason}")
    return "\n".join(lines)


async def retrain_on_drift(settings: Settings, database_url: str, options: RetrainOptions, *,
                           group_id: str | None = None, from_beginning: bool = False,
                           max_runs: int | None = None, idle_exit_s: float | None = None,
                           settle_buckets: int = 0, settle_poll_s: float = 1.0,
                           log: TextIO | None = None) -> list[RetrainOutcome]:
    """Follow the alerts topic and retrain once per `model_drift` alert episode.

    The accuracy monitor raises one alert per episode (hysteresis) and per segment, so the
    alerts that arrive together, or while a retraining runs, are one episode: a batch with
    any `model_drift` alert triggers one run, and alerts raised before the last run finished
    (about the model that was then serving) are skipped. Offsets are committed after the run
    (a crash mid-run retrains again). Stops after `max_runs` runs, or once idle (no alert)
    for `idle_exit_s` seconds.

    `settle_buckets`: the monitor sees a change within a few buckets, when demand_history
    holds almost nothing of the new demand, and a challenger learns only from what was
    recorded (its training ends `protocol.eval_days` before the newest bucket). So a run
    first waits until demand_history holds the bucket `settle_buckets` after the one the
    episode opened at (checked every `settle_poll_s` seconds; the consumer stays in its group
    meanwhile, its partitions paused). 0: at once.
    """
    from streams.alert_feed import alerts_consumer, decode_alert, start_consumer

    out = log or sys.stderr
    consumer = alerts_consumer(settings, group_id=group_id or f"{settings.app_id}-retrain",
                               from_beginning=from_beginning)
    await start_consumer(consumer, settings)
    outcomes: list[RetrainOutcome] = []
    last_run_end: datetime | None = None
    idle_since = time.monotonic()
    print("retrain: waiting for model_drift alerts on "
          f"{settings.topics.alerts}", file=out, flush=True)
    try:
        while max_runs is None or len(outcomes) < max_runs:
            batch = await consumer.getmany(timeout_ms=1000)
            drifts = [alert for records in batch.values() for record in records
                      if (alert := decode_alert(record, settings)) is not None
                      and alert.kind == "model_drift"
                      and (last_run_end is None or alert.raised_at > last_run_end)]
            if not drifts:
                if batch:
                    await consumer.commit()
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    break
                continue
            opened = [a.bucket for a in drifts if a.bucket is not None]
            if settle_buckets > 0 and opened:
                await _settle(consumer, database_url, max(opened), settle_buckets,
                              settings.bucket_seconds(), settle_poll_s, out)
            where = sorted({f"{a.sku}@{a.location}" for a in drifts})
            print(f"retrain: {len(drifts)} model_drift alert(s) ({', '.join(where[:5])}"
                  f"{' ...' if len(where) > 5 else ''}): retraining", file=out, flush=True)
            outcomes.append(await retrain_once(settings, database_url, options, log=out))
            last_run_end = datetime.now(UTC)
            await consumer.commit()
            idle_since = time.monotonic()
    finally:
        await consumer.stop()
    return outcomes


async def _settle(consumer: Any, database_url: str, opened: datetime, buckets: int,
                  bucket_seconds: int, poll_s: float, out: TextIO) -> None:
    """Wait until demand_history holds the bucket `buckets` after `opened` (see
    retrain_on_drift); alerts arriving meanwhile belong to the run that follows."""
    target = opened + timedelta(seconds=buckets * bucket_seconds)
    print(f"retrain: the episode opened at {opened:%Y-%m-%d %H:%M}; waiting until "
          f"demand_history holds {target:%Y-%m-%d %H:%M} ({buckets} buckets later)",
          file=out, flush=True)
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            through = await conn.fetchval(
                "SELECT max(bucket_start) FROM demand_history WHERE bucket_seconds = $1",
                bucket_seconds)
            if through is not None and through >= target:
                print(f"retrain: demand recorded through {through:%Y-%m-%d %H:%M}", file=out,
                      flush=True)
                return
            consumer.pause(*consumer.assignment())  # polled to stay in the group, not read
            await consumer.getmany(timeout_ms=int(poll_s * 1000))
    finally:
        consumer.resume(*consumer.paused())
        await conn.close()


def write_json(path: Path, outcomes: list[RetrainOutcome]) -> None:
    """The outcome(s) as JSON (one object for one run, a list for several)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc: Any = (outcomes[0].to_json() if len(outcomes) == 1
                else [o.to_json() for o in outcomes])
    path.write_text(json.dumps(doc, indent=2) + "\n")
