"""Training the global LSTM's network on a Panel: dense multi-origin quantile loss, early
stopping. What it returns is a network and its input scaling; `forecaster.train_lstm` wraps
them in an LSTMForecaster and calibrates its intervals (so this module needs neither)."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from forecasting._numeric import FloatArray
from forecasting.data import Panel
from forecasting.lstm.config import config_input_dim
from forecasting.lstm.device import auto_device
from forecasting.lstm.features import (
    INPUT_DIM,
    RING_DAYS,
    YEAR,
    calendar_features,
    check_gaps,
    head_inputs,
    input_features,
    running_scales,
    year_ago_span,
)
from forecasting.lstm.model import LSTMConfig, LSTMNet

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["EpochCallback", "TrainedNet", "train_net"]

EpochCallback = Callable[[int, float, float], None]


@dataclass
class TrainedNet:
    """The trained network (on the CPU, its config as trained), the input scaling it was
    trained with, and how training went."""

    net: LSTMNet
    log_scale_mean: float
    log_scale_std: float
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class _Tensors:
    x: torch.Tensor  # (n, L, F) left-aligned inputs
    holidays: torch.Tensor  # (n, L, Fh) features.head_inputs of each origin
    daily: torch.Tensor  # (n, L, H) targets in units of the origin's scale, NaN = none
    cumulative: torch.Tensor  # (n, L, H)
    train_mask: torch.Tensor  # (n, L) origins whose loss trains the model
    val_mask: torch.Tensor  # (n, L) origins held out for early stopping
    weight: torch.Tensor | None = None  # (n, L) per-origin loss weight (config.scale_weight)
    # (n, L, H) censored targets (config.censored_loss), None: none
    daily_cens: torch.Tensor | None = None
    cum_cens: torch.Tensor | None = None


def _prepare(panel: Panel, config: LSTMConfig, device: torch.device) -> tuple[_Tensors, float,
                                                                              float]:
    y = panel.values
    n, length = y.shape
    big_h, mix_days = config.horizon, config.mix_days
    val_days = config.val_days + mix_days  # held out of training: early stopping, then the mix
    if length < val_days + 2 * big_h + 1:
        raise ValueError(f"need at least {val_days + 2 * big_h + 1} days to train, got {length}")
    scales, _ = running_scales(y, config.scale_memory)
    observed = np.isfinite(y)
    train_part = observed.copy()
    train_part[:, length - val_days :] = False
    log_s = np.log1p(scales[train_part])
    log_mean, log_std = float(log_s.mean()), float(max(log_s.std(), 1e-3))

    days = panel.dates
    cal = calendar_features(days, config.calendar, config.month_inputs)  # (T, C)
    steps = np.arange(1, big_h + 1)
    flags = ahead = None
    if config.promo_inputs:  # each day's flag, and at each origin the H days after it
        flags = _promo_grid(panel, big_h)  # (n, T + H)
        ahead = flags[:, np.arange(length)[:, None] + steps[None, :]]  # (n, T, H)
        flags = flags[:, :length]
    feats = input_features(y, scales, np.broadcast_to(cal, (n, *cal.shape)), log_mean, log_std,
                           flags)
    hol = _head_inputs(y, scales, days, config, ahead)  # (n, T, Fh)
    own = _holiday_grid(panel, big_h) if config.data_holidays else None
    if own is not None:  # the data's own holidays replace the date calendar's flags
        feats[..., INPUT_DIM - 1] = own[:, :length]
        hol = hol.copy()
        hol[..., :big_h] = own[:, np.arange(length)[:, None] + steps[None, :]]
    y_pad = np.concatenate([y, np.full((n, big_h), np.nan)], axis=1)
    future = y_pad[:, np.arange(length)[:, None] + steps[None, :]]  # (n, T, H)
    daily = future / scales[:, :, None]
    cumulative = np.cumsum(daily, axis=2)  # NaN propagates past a missing bucket

    origin = np.arange(length)
    train_origin = origin <= length - 1 - val_days - big_h
    # early stopping: origins whose horizon ends before the mix's days
    val_origin = (origin >= length - 1 - val_days) & (origin <= length - 1 - mix_days - big_h)
    first = np.where(observed.any(axis=1), observed.argmax(axis=1), length)
    started = origin[None, :] >= first[:, None]
    # Left-align: row i starts at its first observation, padding (masked) after its end.
    cols = np.minimum(first[:, None] + origin[None, :], length - 1)
    in_row = (first[:, None] + origin[None, :]) < length

    def align(a: FloatArray) -> torch.Tensor:
        idx = cols.reshape(n, length, *([1] * (a.ndim - 2)))
        out = np.take_along_axis(a, np.broadcast_to(idx, (n, length, *a.shape[2:])), axis=1)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(device)

    def align_mask(m: np.ndarray) -> torch.Tensor:
        out = np.take_along_axis(np.broadcast_to(m, (n, length)) & started, cols, axis=1)
        return torch.from_numpy(out & in_row).to(device)

    daily_cens = cum_cens = None
    if config.censored_loss != "none" and panel.censored is not None:
        c_pad = np.concatenate([panel.censored, np.zeros((n, big_h), dtype=bool)], axis=1)
        fut_c = c_pad[:, np.arange(length)[:, None] + steps[None, :]]  # (n, T, H)
        # a cumulative target is censored from its first censored day on
        cum_c = np.logical_or.accumulate(fut_c, axis=2)
        daily_cens = align(fut_c.astype(np.float32)) > 0.5
        cum_cens = align(cum_c.astype(np.float32)) > 0.5
    weight = None
    if config.scale_weight:
        raw = scales ** config.scale_weight
        weight = align(raw / float(raw[train_part].mean()))
    tensors = _Tensors(
        x=align(feats),
        holidays=align(hol),
        daily=align(daily),
        cumulative=align(cumulative),
        train_mask=align_mask(train_origin[None, :]),
        val_mask=align_mask(val_origin[None, :]),
        weight=weight,
        daily_cens=daily_cens,
        cum_cens=cum_cens,
    )
    return tensors, log_mean, log_std


def _promo_grid(panel: Panel, horizon: int) -> FloatArray:
    """(n, T + horizon) the panel's promotion flags from its first day to `horizon` days
    after its last (no covariates, or days past their grid: 0)."""
    if panel.covariates is None:
        return np.zeros((panel.n_series, panel.n_days + horizon))
    promo, _ = panel.covariates.span(panel.start, panel.n_days + horizon)
    return promo


def _holiday_grid(panel: Panel, horizon: int) -> FloatArray | None:
    """(n, T + horizon) the data's own holiday flags from the panel's first day to `horizon`
    days after its last (days past their grid: 0); None when the panel has none."""
    cov = panel.covariates
    if cov is None:
        return None
    return cov.holiday_rows(np.asarray(panel.start), panel.n_days + horizon)


def _head_inputs(y: FloatArray, scales: FloatArray, days: np.ndarray,
                 config: LSTMConfig, promo: FloatArray | None = None) -> FloatArray:
    """(n, T, Fh) the head's inputs at every origin, as the forecaster computes them from
    its carried state (the year-ago span is the window the day ring would hold); `promo`
    (n, T, H): the promotion flags of the H days after each origin (promo_inputs)."""
    n, length = y.shape

    def inputs(scale: FloatArray, span: FloatArray | None,
               flags: FloatArray | None) -> FloatArray:
        return head_inputs(days, scale, span, horizon=config.horizon, calendar=config.calendar,
                           head_calendar=config.head_calendar, annual=config.head_annual,
                           mask_calendar=config.year_ago_masks_calendar,
                           weeks=config.year_ago_weeks, month=config.head_month,
                           pairs=config.head_month_pairs, months=config.month_inputs,
                           promo=flags, gaps=config.year_ago_gaps)

    if not config.year_ago:
        fut = inputs(scales, None, promo)
        return np.broadcast_to(fut, (n, length, fut.shape[-1]))
    width = year_ago_span(config.horizon, config.year_ago_weeks)
    padded = np.concatenate([np.full((n, RING_DAYS - 1), np.nan), y], axis=1)
    spans = np.lib.stride_tricks.sliding_window_view(padded, width, axis=1)[:, :length]
    parts = [inputs(scales[i : i + 64], spans[i : i + 64],
                    None if promo is None else promo[i : i + 64])
             for i in range(0, n, 64)]  # chunks: the (64, T, H, 3) year-ago windows
    out: FloatArray = np.concatenate(parts, axis=0)
    return out


def _loss(net: LSTMNet, top: torch.Tensor, holidays: torch.Tensor, daily_y: torch.Tensor,
          cum_y: torch.Tensor, mask: torch.Tensor, tau: torch.Tensor,
          config: LSTMConfig, weight: torch.Tensor | None = None,
          censored: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Mean loss over masked origins (b, L) of the head's outputs against scaled targets
    (each origin's terms times `weight` (b, L) when given). `censored`: (daily, cumulative)
    (b, L, H) targets that are lower bounds (`config.censored_loss`: dropped, or only
    forecasts below them penalised)."""
    raw = net.head_raw(top[mask], holidays[mask])  # (m, H, per_step)
    yd, yc = daily_y[mask], cum_y[mask]
    cens = None if censored is None else (censored[0][mask], censored[1][mask])
    one_sided = cens is not None and config.censored_loss == "pinball"
    w = None if weight is None else weight[mask][:, None]  # (m, 1): one weight per origin
    # Cumulative targets grow with h; divide by h so every step weighs like one day.
    per_step = torch.arange(1, config.horizon + 1, device=yd.device, dtype=yd.dtype)
    daily_q, cum_q, mean = net.quantiles(raw)
    terms = []
    for j, (pred, target) in enumerate(((daily_q, yd), (cum_q, yc))):
        ok = torch.isfinite(target)
        if cens is not None and not (one_sided and config.loss == "pinball"):
            ok = ok & ~cens[j]  # "drop" (and the likelihood loss): censored targets leave
        t = torch.where(ok, target, 0.0)
        if config.loss == "pinball":
            diff = t[..., None] - pred
            elem = torch.maximum(tau * diff, (tau - 1.0) * diff)
            if one_sided:
                assert cens is not None  # below a lower bound costs; above it, nothing
                elem = torch.where(cens[j][..., None], tau * diff.clamp(min=0.0), elem)
            loss = elem.mean(dim=-1)
        else:  # Gaussian negative log-likelihood (the ablation of the quantile head)
            mu = raw[..., 2 * j]
            sigma = torch.nn.functional.softplus(raw[..., 2 * j + 1]) + 1e-3
            loss = torch.log(sigma) + 0.5 * ((t - mu) / sigma) ** 2
        if j == 1:
            loss = loss / per_step
        if w is not None:
            loss = loss * w
        terms.append(torch.where(ok, loss, 0.0).sum() / ok.sum().clamp(min=1))
    ok = torch.isfinite(yd)
    if cens is not None and not one_sided:
        ok = ok & ~cens[0]
    t = torch.where(ok, yd, 0.0)
    mu = mean.clamp(min=1e-4)
    # The mean head's loss is a deviance (a Bregman score, so minimised by the mean); unlike
    # squared error one lumpy order of 20x the scale does not dominate a batch. Tweedie with
    # power p in (1, 2) weighs large values less than Poisson (p = 1) does.
    p = config.tweedie_power if config.mean_loss == "tweedie" else 1.0
    if p == 1.0:
        deviance = torch.xlogy(t, t) - t * torch.log(mu) - t + mu
    else:
        deviance = (t.pow(2.0 - p) / ((1.0 - p) * (2.0 - p))
                    - t * mu.pow(1.0 - p) / (1.0 - p) + mu.pow(2.0 - p) / (2.0 - p))
    if one_sided:
        assert cens is not None  # a mean above a censored value costs nothing
        deviance = torch.where(cens[0] & (mu >= t), 0.0, deviance)
    if w is not None:
        deviance = deviance * w
    poisson = torch.where(ok, deviance, 0.0).sum() / ok.sum().clamp(min=1)
    return terms[0] + terms[1] + config.mean_weight * poisson


MONTH_MIN_DAYS = 2 * YEAR  # history below which `head_month` is switched off (train_net)


def train_net(
    panel: Panel,
    config: LSTMConfig | None = None,
    *,
    device: str = "auto",
    progress: bool = False,
    on_epoch: EpochCallback | None = None,
    max_seconds: float | None = None,
    init: LSTMNet | None = None,
) -> TrainedNet:
    """Fit the global LSTM on every series of `panel` (all days are history).

    The last `config.val_days` days (before the last `config.mix_days`, left to lstm_lgbm's
    mix) are held out: origins whose targets fall there give the
    validation loss that early stopping watches (patience `config.patience`), and the best
    epoch's weights are kept. With `config.ema_decay` > 0 those are the weights' exponential
    moving average (updated after every optimiser step), which is also what is validated.
    Every other origin of every series is a training example (a direct H-step target from
    that bucket), so one pass over the panel sees n x T examples.
    Seeds are fixed (`config.seed`); on CPU the result is bit-for-bit repeatable.
    `init`: start from these weights (a warm start) when its architecture matches.
    """
    config = config or LSTMConfig()
    finite = panel.values[np.isfinite(panel.values)]
    if not config.integer_demand and finite.size and np.all(finite == np.round(finite)):
        config = dataclasses.replace(config, integer_demand=True)
    if config.head_month != "none" and panel.values.shape[1] < MONTH_MIN_DAYS:
        # Global month factors need each calendar month seen in two years; with less (UCI's
        # 374 days) the per-step month one-hot memorises one year (UCI 150 series, 2 seeds:
        # MASE 0.905 -> 0.924, pinball 4.53 -> 4.62), so the head goes without it.
        config = dataclasses.replace(config, head_month="none")
    if panel.values.shape[1] < config.months_min_days and config.month_inputs:
        config = dataclasses.replace(config, month_inputs=False)
    if config.promo_inputs and not _has_promotions(panel):
        # nothing to read: the net without the inputs (so a panel without covariates trains
        # the very net it trained before promo_inputs, bit for bit)
        config = dataclasses.replace(config, promo_inputs=False)
    if config.data_holidays and (panel.covariates is None
                                 or panel.covariates.holiday is None):
        # no holiday column: the date calendar, and the very net (and config) of before
        config = dataclasses.replace(config, data_holidays=False)
    check_gaps(config.year_ago_gaps)
    if config.censored_loss not in ("none", "drop", "pinball"):
        raise ValueError(f"censored_loss must be none, drop or pinball, got "
                         f"{config.censored_loss!r}")
    if config.censored_loss != "none" and (panel.censored is None
                                           or not bool(panel.censored.any())):
        # no censored day: the loss of before (a panel without stock-out information trains
        # the very net it trained before censored_loss, bit for bit)
        config = dataclasses.replace(config, censored_loss="none")
    if config.val_share_divisor > 0:
        # the whole held-out window (early stopping, then the mix's days) shrinks, its two
        # parts in proportion
        short = max(config.horizon, panel.values.shape[1] // config.val_share_divisor)
        held = config.val_days + config.mix_days
        if short < held:
            mix = short * config.mix_days // held
            config = dataclasses.replace(config, val_days=short - mix, mix_days=mix)
    if config.mix_days > 0:
        room = panel.values.shape[1] - config.val_days - 2 * config.horizon - 1
        if min(config.mix_days, config.val_days, room) < config.horizon:
            # no whole horizon on one side: one window for both, as without a mix window
            config = dataclasses.replace(config, val_days=config.val_days + config.mix_days,
                                         mix_days=0)
    dev = auto_device(device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    reset_rng = np.random.default_rng([config.seed, 1])  # its own stream: p = 0 is unchanged
    started = time.perf_counter()
    data, log_mean, log_std = _prepare(panel, config, dev)
    net = LSTMNet(config_input_dim(config), config).to(dev)
    if init is not None:
        warm = {k: v.to(dev) for k, v in init.state_dict().items()}
        if all(warm[k].shape == v.shape for k, v in net.state_dict().items() if k in warm):
            net.load_state_dict(warm)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = _schedule(opt, config)
    # What is validated and kept: the raw weights or their moving average.
    average = get_ema_multi_avg_fn(config.ema_decay)  # type: ignore[no-untyped-call]
    ema = (AveragedModel(net, multi_avg_fn=average, use_buffers=True)
           if config.ema_decay > 0 else None)
    kept: LSTMNet = ema.module if ema is not None else net  # type: ignore[assignment]
    tau = torch.tensor(config.levels, dtype=torch.float32, device=dev)
    n, length = data.train_mask.shape
    burn_in = 0
    if config.max_train_days is not None:
        burn_in = max(0, length - config.max_train_days - config.val_days - config.mix_days
                      - config.horizon)
    best_val, best_state, best_epoch, bad = math.inf, copy.deepcopy(kept.state_dict()), 0, 0
    history: list[dict[str, float]] = []
    bar = _progress(progress, config.max_epochs)
    try:
        for epoch in range(1, config.max_epochs + 1):
            net.train()
            order = rng.permutation(n)
            total, batches = 0.0, 0
            for start in range(0, n, config.batch_series):
                rows = torch.as_tensor(order[start : start + config.batch_series], device=dev)
                state = None
                if burn_in:
                    with torch.no_grad():
                        _, state = net.encode(data.x[rows, :burn_in])
                # Truncated BPTT: the state is carried through the whole history (as at
                # inference) but gradients flow back `tbptt_days` buckets and the optimiser
                # steps after each chunk, so a pass over long series makes many updates.
                chunk = config.tbptt_days or length
                for c0 in range(burn_in, length, chunk):
                    cols = slice(c0, min(c0 + chunk, length))
                    if state is not None and config.state_reset_prob > 0:
                        state = _reset_some(state, reset_rng, config.state_reset_prob)
                    top, state = net.encode(data.x[rows, cols], state)
                    state = (state[0].detach(), state[1].detach())
                    mask = data.train_mask[rows, cols]
                    if not bool(mask.any()):
                        continue
                    loss = _loss(net, top, data.holidays[rows, cols], data.daily[rows, cols],
                                 data.cumulative[rows, cols], mask, tau, config,
                                 None if data.weight is None else data.weight[rows, cols],
                                 _cens(data, rows, cols))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()  # type: ignore[no-untyped-call]
                    torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                    opt.step()
                    if ema is not None:
                        ema.update_parameters(net)
                    total += float(loss.detach())
                    batches += 1
            if schedule is not None:
                schedule.step()
            kept.eval()
            with torch.no_grad():
                val = 0.0
                val_rows = 0
                for start in range(0, n, 256):
                    sl = slice(start, start + 256)
                    top, _ = kept.encode(data.x[sl])
                    mask = data.val_mask[sl]
                    if bool(mask.any()):
                        k = int(mask.sum())
                        val += k * float(_loss(kept, top, data.holidays[sl], data.daily[sl],
                                               data.cumulative[sl], mask, tau, config,
                                               None if data.weight is None
                                               else data.weight[sl], _cens(data, sl)))
                        val_rows += k
                val /= max(val_rows, 1)
            train_loss = total / max(batches, 1)
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val,
                            "seconds": time.perf_counter() - started})
            if on_epoch is not None:
                on_epoch(epoch, train_loss, val)
            if bar is not None:
                bar[0].update(bar[1], advance=1,
                              description=f"epoch {epoch} train {train_loss:.4f} val {val:.4f}")
            if val < best_val - 1e-4:
                best_val, best_epoch, bad = val, epoch, 0
                best_state = copy.deepcopy(kept.state_dict())
            else:
                bad += 1
                if bad >= config.patience:
                    break
                if config.lr_decay < 1.0:  # plateau: go back to the best weights, smaller steps
                    net.load_state_dict(best_state)
                    for group in opt.param_groups:
                        group["lr"] *= config.lr_decay
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                break
    finally:
        if bar is not None:
            bar[0].stop()
    net.load_state_dict(best_state)  # the average's weights have the same keys
    metrics = {"best_val_loss": best_val, "best_epoch": float(best_epoch),
               "epochs": float(len(history))}
    return TrainedNet(net.cpu(), log_mean, log_std, history, metrics)


def _cens(data: _Tensors, rows: torch.Tensor | slice,
          cols: slice | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (daily, cumulative) censored-target masks of these rows and columns, or None."""
    if data.daily_cens is None or data.cum_cens is None:
        return None
    if cols is None:
        return data.daily_cens[rows], data.cum_cens[rows]
    return data.daily_cens[rows, cols], data.cum_cens[rows, cols]


def _has_promotions(panel: Panel) -> bool:
    """Whether any series of `panel` has a planned promotion on one of its days."""
    if panel.covariates is None:
        return False
    promo, _ = panel.covariates.span(panel.start, panel.n_days)
    return bool(np.any(promo > 0))


def _schedule(opt: torch.optim.Optimizer,
              config: LSTMConfig) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch learning-rate schedule of `config.lr_schedule` (None: constant)."""
    if config.lr_schedule == "constant":
        return None
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.max_epochs)
    raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}")


def _reset_some(state: tuple[torch.Tensor, torch.Tensor], rng: np.random.Generator,
                prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, c) with each series' (batch column's) state zeroed with probability `prob`."""
    h, c = state
    keep = torch.from_numpy(rng.random(h.shape[1]) >= prob).to(h.device)[None, :, None]
    return h * keep, c * keep


def _progress(enabled: bool, total: int) -> tuple[Progress, TaskID] | None:
    if not enabled:
        return None
    # rich only when a bar is shown: the forecaster (and so a stream worker) imports this module
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    task = bar.add_task("training", total=total)
    bar.start()
    return bar, task
