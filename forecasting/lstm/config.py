"""LSTMConfig: the LSTM's architecture, features and training knobs (saved in the artifact).

Free of torch, like everything the numpy serving path (numpy_net.py) imports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from forecasting.base import QUANTILE_LEVELS
from forecasting.lstm.features import future_dim, input_dim, year_ago_dim

__all__ = ["LSTMConfig", "config_input_dim", "config_overrides", "head_future_dim"]


@dataclass(frozen=True)
class LSTMConfig:
    """Architecture, features and training knobs; all of it is saved in the artifact."""

    horizon: int = 14
    levels: tuple[float, ...] = QUANTILE_LEVELS
    hidden: int = 64
    layers: int = 1
    head_hidden: int = 64
    scale_memory: int = 56
    calendar: str = "uk"
    loss: str = "pinball"  # "pinball" (quantile head) or "normal" (Gaussian likelihood)
    mean_weight: float = 0.5
    mean_loss: str = "poisson"  # deviance of the mean head: "poisson" or "tweedie"
    tweedie_power: float = 1.8
    lr: float = 3e-3
    batch_series: int = 16  # series per gradient step (64 left store-item undertrained)
    max_epochs: int = 40
    patience: int = 4
    lr_decay: float = 1.0  # < 1: after an epoch without validation gain, best weights, lr x this
    # "cosine": the lr falls from `lr` to 0 over `max_epochs` epochs (early stopping still
    # watches); "constant": no schedule (artifacts from before the field).
    lr_schedule: str = "constant"
    # > 0: validate, early-stop on and keep an exponential moving average of the weights,
    # updated after every optimiser step with this decay (0: the raw weights, as before).
    ema_decay: float = 0.99
    # > 0: at each truncated-BPTT chunk boundary each series' recurrent state is zeroed with
    # this probability, so the net also learns to forecast from a short warm-up next to a
    # mature running scale (what `encode(..., warmup_days=W)` hands it); 0: never.
    state_reset_prob: float = 0.0
    val_days: int = 28
    # > 0: short histories validate on fewer days: val_days becomes
    # min(val_days, max(horizon, days // this)) (train_net), so a 62-day history
    # (FreshRetailNet's first origin) keeps more than 26 training origins. 0: always val_days.
    # With months_min_days, over the three real sets (tuning folds): pinball -5.0%,
    # median-MASE -7.6% (benchmarks/README.md, "Generalisation").
    val_share_divisor: int = 4
    # > 0 (lstm_lgbm): this many more days at the end are held out of training AND of early
    # stopping, for the mix's weights and calibration (forecasting/combination.py): the LSTM
    # trains on the days before the last val_days + mix_days, early-stops (and calibrates)
    # on the val_days after them, and the mix learns on the last mix_days, days the LSTM
    # neither trained nor stopped on. On a short history (val_share_divisor) train_net
    # shrinks val_days + mix_days, both in proportion; when either part, or the history
    # before them, would hold less than one horizon, the mix window joins the early-stopping
    # one (mix_days 0).
    # 0: no mix window (the mix learns on the LSTM's early-stopping days).
    mix_days: int = 0
    # True: the LSTM reads planned promotions (forecasting.covariates' `promo`): one more
    # input per day, that day's flag (features.input_features), and the head sees the H
    # flags of the forecast days (features.head_inputs). Training on a panel without
    # covariates turns it off (the net is then the one without it, bit for bit); a model
    # with it forecasts "no promotion" for days it is given no flags for. False: the inputs
    # of before it (artifacts without the field: their input width, features.INPUT_DIM).
    # Off: over the three real sets (tuning origins) the LSTM alone gains (pinball -1.2%,
    # median-MASE -2.7%; Rossmann -3.3%) but the served lstm_lgbm loses (pinball +0.3%,
    # Rossmann +0.9%); benchmarks/README.md, "Lever 2: the LSTM reading promotions".
    promo_inputs: bool = False
    # The holiday input (the calendar's last column, and the head's flags of the forecast
    # days) from the data's own per-series holiday column (`Covariates.holiday`: Rossmann's
    # state_holiday, FreshRetailNet's holiday_flag) where the panel and the forecast's
    # covariates have one; without it, `calendar`'s dates as before (UCI: bit for bit: training
    # turns the flag off). On: the served mix's pinball -4.1% on the three real sets' average
    # (Rossmann -11.9%, holdout -10.4%; benchmarks/README.md, "Data holidays"); the stream
    # serves the flags from the `shop.calendar` topic (streams/holiday_calendar.py).
    data_holidays: bool = True
    # How training treats target days whose sales are censored (a stock-out: the panel's
    # `censored` mask, FreshRetailNet's stockout_hours > 0; the observed value understates
    # demand). "none": as observed (the loss of before). "drop": those targets leave the
    # loss (a cumulative target from its first censored day on). "pinball": censored
    # pinball: a censored target only penalises forecasts below it (quantiles and mean).
    # Training only; scoring and calibration read the observed values. A panel without
    # censored days trains the net of "none", bit for bit. Off: on FreshRetailNet (tuning
    # origins) the served mix's pinball +0.1% with "drop", +0.4% with "pinball" (the LSTM
    # alone +13.6%: scores are on the censored sales); benchmarks/README.md, "Lever 3".
    censored_loss: str = "none"
    # Each training origin's loss is weighted by (series scale at the origin)^this, normalised
    # to mean 1 over the panel: 0 every series counts alike (scaled losses, what MASE
    # rewards); 1 losses in demand units (what pooled pinball and WAPE reward).
    scale_weight: float = 0.0
    grad_clip: float = 1.0
    dropout: float = 0.2  # on the LSTM output fed to the head, training only
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    head_calendar: bool = True  # the head also sees the months of the forecast days
    head_annual: bool = False  # ... and an annual Fourier pair of the origin's date
    year_ago: bool = True  # ... and the same weeks a year earlier (features.year_ago_features)
    year_ago_masks_calendar: bool = True  # see features.head_inputs' mask_calendar
    # The head also sees the calendar month of every forecast day, never masked
    # (features.target_month_features): "none", "onehot" or "fourier" (`head_month_pairs`
    # annual Fourier pairs of each day's day of the year).
    head_month: str = "onehot"
    head_month_pairs: int = 2
    # False: the month one-hots (the inputs' and the head calendar's last-step month) stay
    # zero. Training sets it when the history is shorter than `months_min_days` (0: never):
    # a month seen in no or one year is an untrained or memorised weight.
    month_inputs: bool = True
    months_min_days: int = 728
    # > 0: fitting a forecaster that is already trained (a simulation's periodic retrain)
    # starts from its weights and trains at most this many epochs (early stopping as
    # usual); 0: every fit trains a fresh network (`shelfcast train`'s path).
    warm_start_epochs: int = 0
    # Daily quantiles and mean are multiplied by the year-ago seasonal shape to a power in
    # [0, 1] that the head picks per series and step (0: ignore it, as for lumpy series).
    year_ago_prior: bool = True
    # A step's year-ago value averages its same weekday -7 x this ... +7 x this days around
    # day - 364 (within the step's month): more weeks, less noise in the prior's shape.
    year_ago_weeks: int = 2
    # What a forecast step whose year-ago days are all missing (a gap in the history a
    # year earlier, while the year-ago level exists) says (features.year_ago_features):
    # "zero": the mean over no day is 0, read as "sold nothing that day a year ago", so
    # the year-ago prior cuts that day's forecast to a fifth (Rossmann's 17 stores without
    # rows for 2014-07 .. 2014-12, forecast for July 2015); "unknown": that origin has no
    # year-ago information (as in a series' first year); "weekday": such a step reads its
    # weekday's mean over the year-ago level's 28 days. The same inputs in every mode for a
    # history without such a gap (UCI, FreshRetailNet: bit for bit). "weekday" by default:
    # Rossmann's served mix, tuning origins, pinball -0.5% (the LSTM alone -5.6%), holdout
    # -14.6% (-30.8%); the average over the three real sets -0.16% tune
    # (benchmarks/README.md, "Year-ago gaps"). Artifacts without the field read "zero" (as
    # trained), and "zero" keeps the config JSON and durable-state fingerprint of before.
    year_ago_gaps: str = "weekday"
    tbptt_days: int | None = 91  # truncated BPTT chunk (None: whole sequences per step)
    seed: int = 0
    max_train_days: int | None = 730  # only the last N days feed gradients (CPU time)
    # Counts have integer quantiles: with 44% zero days, q0.1 = 0.03 instead of 0 leaves
    # every zero outside the 80% interval. Training sets this when all demand is integer.
    integer_demand: bool = False
    # After training, recalibrate the quantiles on the validation origins so closed central
    # intervals cover their nominal share (lstm/calibration.py): the daily tails, and all
    # cumulative levels (lead-time pinball -3% UCI, -8% store-item in the backtest).
    calibrate: bool = True
    calibrate_cumulative: bool = True
    extra: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict."""
        out = asdict(self)
        out["levels"] = list(self.levels)
        for off in ("mix_days", "promo_inputs", "data_holidays"):
            if not out[off]:  # off (the default): the JSON, and so model ids, of before it
                del out[off]
        if out["censored_loss"] == "none":  # likewise
            del out["censored_loss"]
        if out["year_ago_gaps"] == "zero":  # likewise
            del out["year_ago_gaps"]
        return out

    @classmethod
    def from_json(cls, data: dict[str, object]) -> LSTMConfig:
        """Inverse of to_json; unknown keys are ignored (older/newer artifacts)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for flag in ("head_calendar", "head_annual", "year_ago", "year_ago_prior",
                     "year_ago_masks_calendar"):
            known.setdefault(flag, False)  # artifacts from before the field
        known.setdefault("year_ago_weeks", 1)  # artifacts from before the field
        known.setdefault("head_month", "none")
        known.setdefault("lr_schedule", "constant")
        known.setdefault("ema_decay", 0.0)
        known.setdefault("val_share_divisor", 0)  # artifacts from before the fields
        known.setdefault("months_min_days", 0)
        known.setdefault("year_ago_gaps", "zero")  # artifacts from before (or without) it
        known.setdefault("data_holidays", False)  # to_json leaves it out when off
        if "levels" in known:
            known["levels"] = tuple(float(x) for x in known["levels"])  # type: ignore[attr-defined]
        return cls(**known)  # type: ignore[arg-type]


def head_future_dim(config: LSTMConfig) -> int:
    """Width of what the head sees of the forecast days besides the LSTM state."""
    return (future_dim(config.horizon, config.head_calendar, config.head_annual,
                       config.head_month, config.head_month_pairs)
            + (config.horizon if config.promo_inputs else 0)
            + (year_ago_dim(config.horizon) if config.year_ago else 0))


def config_input_dim(config: LSTMConfig) -> int:
    """Width of the LSTM's per-day inputs under `config` (features.input_dim)."""
    return input_dim(config.promo_inputs)


def config_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`KEY=JSON` settings (a benchmark's repeated `--set`) as LSTMConfig field overrides;
    ValueError with a one-line reason for an unknown field or a value that is not JSON."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in LSTMConfig.__dataclass_fields__:
            raise ValueError(f"--set wants KEY=JSON with an LSTMConfig field, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"--set {key}: {value!r} is not JSON (strings need quotes)") from None
    return overrides
