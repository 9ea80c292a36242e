"""Training-loop options of the LSTM: learning-rate schedule and the kept weight average."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from forecasting.data import Panel  # noqa: E402
from forecasting.lstm import LSTMConfig, train_lstm  # noqa: E402
from forecasting.lstm.features import INPUT_DIM, future_dim  # noqa: E402
from forecasting.lstm.model import LSTMNet  # noqa: E402
from forecasting.lstm.training import _loss, _prepare, _reset_some, _schedule  # noqa: E402

torch.set_num_threads(1)

TINY = LSTMConfig(horizon=7, hidden=8, head_hidden=8, max_epochs=3, val_days=14,
                  batch_series=8, max_train_days=None, year_ago=False)


def _panel(n: int = 16, days: int = 140) -> Panel:
    rng = np.random.default_rng(0)
    weekly = np.array([1.0, 1.2, 1.1, 1.0, 1.6, 0.3, 0.5])
    rate = rng.gamma(2.0, 3.0, (n, 1)) * np.tile(weekly, days // 7 + 1)[None, :days]
    return Panel(tuple(f"s{i}" for i in range(n)), np.datetime64("2011-01-03"),
                 rng.poisson(rate).astype(float))


def test_artifacts_from_before_the_fields_train_as_before() -> None:
    cfg = LSTMConfig(horizon=7, lr_schedule="cosine", ema_decay=0.99).to_json()
    del cfg["lr_schedule"], cfg["ema_decay"]
    old = LSTMConfig.from_json(cfg)
    assert (old.lr_schedule, old.ema_decay) == ("constant", 0.0)


def test_the_cosine_schedule_falls_to_zero_over_max_epochs() -> None:
    cfg = LSTMConfig(lr=0.01, max_epochs=4, lr_schedule="cosine")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    schedule = _schedule(opt, cfg)
    assert schedule is not None
    rates = []
    for _ in range(cfg.max_epochs):
        opt.step()
        schedule.step()
        rates.append(opt.param_groups[0]["lr"])
    assert rates == sorted(rates, reverse=True)
    assert rates[1] == pytest.approx(0.005) and rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert _schedule(opt, LSTMConfig()) is None
    with pytest.raises(ValueError, match="lr_schedule"):
        _schedule(opt, LSTMConfig(lr_schedule="step"))


def _val_loss(net: LSTMNet, panel: Panel, config: LSTMConfig) -> float:
    data, _, _ = _prepare(panel, config, torch.device("cpu"))
    tau = torch.tensor(config.levels, dtype=torch.float32)
    net.eval()
    with torch.no_grad():
        top, _ = net.encode(data.x)
        return float(_loss(net, top, data.holidays, data.daily, data.cumulative,
                           data.val_mask, tau, config))


def test_training_keeps_the_weight_average_it_validated() -> None:
    panel = _panel()
    avg = LSTMConfig(**{**TINY.__dict__, "ema_decay": 0.9})
    raw = train_lstm(panel, TINY, device="cpu")
    averaged = train_lstm(panel, avg, device="cpu")
    again = train_lstm(panel, avg, device="cpu")
    nets = [r.forecaster.net for r in (raw, averaged, again)]
    for pa, pb in zip(nets[1].parameters(), nets[2].parameters(), strict=True):
        torch.testing.assert_close(pa, pb)  # repeatable
    assert any(not torch.equal(pa, pb) for pa, pb in
               zip(nets[0].parameters(), nets[1].parameters(), strict=True))
    # The returned weights are the ones whose validation loss early stopping recorded.
    for result in (raw, averaged):
        config = result.forecaster.config
        assert _val_loss(result.forecaster.net, panel, config) == pytest.approx(
            result.metrics["best_val_loss"], rel=1e-5)
    assert isinstance(nets[1], LSTMNet) and nets[1].lstm.input_size == INPUT_DIM


@pytest.mark.parametrize("days", [140, 735])
def test_the_target_month_needs_two_years_of_history(days: int) -> None:
    cfg = LSTMConfig(horizon=7, hidden=8, head_hidden=8, max_epochs=1, val_days=14,
                     batch_series=8, max_train_days=60, year_ago=False, head_month="onehot")
    fitted = train_lstm(_panel(n=4, days=days), cfg, device="cpu").forecaster
    assert fitted.config.head_month == ("onehot" if days >= 2 * 364 else "none")
    assert fitted.net.head[0].in_features == 8 + future_dim(7, True, month=fitted.config.head_month)


def test_state_resets_zero_whole_series_and_only_when_asked() -> None:
    h, c = torch.ones(1, 400, 3), torch.full((1, 400, 3), 2.0)
    rng = np.random.default_rng(0)
    assert all(bool(t.eq(0).all()) for t in _reset_some((h, c), rng, 1.0))
    kept = _reset_some((h, c), rng, 0.0)
    assert torch.equal(kept[0], h) and torch.equal(kept[1], c)
    half_h, half_c = _reset_some((h, c), rng, 0.5)
    zeroed = half_h[0].eq(0).all(dim=1)
    assert torch.equal(zeroed, half_c[0].eq(0).all(dim=1))  # h and c of a series together
    assert bool(half_h[0][~zeroed].eq(1).all())  # the others untouched
    assert 120 < int(zeroed.sum()) < 280


def test_state_resets_change_training_and_stay_seeded() -> None:
    # TBPTT chunks of 28 days: boundaries where a reset can happen
    base = LSTMConfig(**{**TINY.__dict__, "tbptt_days": 28, "ema_decay": 0.0})
    reset = LSTMConfig(**{**base.__dict__, "state_reset_prob": 0.5})
    panel = _panel()
    plain = train_lstm(panel, base, device="cpu").forecaster.net.state_dict()
    first = train_lstm(panel, reset, device="cpu").forecaster.net.state_dict()
    second = train_lstm(panel, reset, device="cpu").forecaster.net.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(plain[k], first[k]) for k in plain)


def test_short_histories_validate_on_a_share_of_their_days() -> None:
    short = _panel(days=62)
    cfg = LSTMConfig(**{**TINY.to_json(), "levels": TINY.levels, "val_days": 28,
                        "max_epochs": 1, "val_share_divisor": 0})
    assert train_lstm(short, cfg).forecaster.config.val_days == 28  # 0: switched off
    shared = LSTMConfig(**{**cfg.to_json(), "levels": cfg.levels, "val_share_divisor": 4})
    assert LSTMConfig().val_share_divisor == 4  # the default
    assert train_lstm(short, shared).forecaster.config.val_days == 15  # 62 // 4
    assert train_lstm(_panel(days=44), shared).forecaster.config.val_days == 11  # 44 // 4
    tiny = train_lstm(_panel(days=24), shared).forecaster.config
    assert tiny.val_days == 7  # never below one horizon
    long = train_lstm(_panel(days=140), shared).forecaster.config
    assert long.val_days == 28  # enough history: the configured validation span


def test_scale_weights_weigh_origins_by_series_volume() -> None:
    panel = _panel()
    panel.values[0] *= 50.0  # one busy series
    cfg = LSTMConfig(**{**TINY.to_json(), "levels": TINY.levels, "scale_weight": 1.0})
    data, _, _ = _prepare(panel, cfg, torch.device("cpu"))
    assert data.weight is not None
    assert float(data.weight[0, 30:].mean()) > 10 * float(data.weight[1:, 30:].mean())
    plain, _, _ = _prepare(panel, TINY, torch.device("cpu"))
    assert plain.weight is None
    net = LSTMNet(INPUT_DIM, cfg).eval()
    tau = torch.tensor(cfg.levels, dtype=torch.float32)
    with torch.no_grad():
        top, _ = net.encode(data.x)
        args = (net, top, data.holidays, data.daily, data.cumulative, data.train_mask, tau, cfg)
        ones = torch.ones_like(data.weight)
        assert float(_loss(*args, ones)) == pytest.approx(float(_loss(*args)), rel=1e-5)
        assert float(_loss(*args, data.weight)) != pytest.approx(float(_loss(*args)), rel=1e-3)


def test_short_histories_train_without_month_inputs_when_asked() -> None:
    cfg = LSTMConfig(**{**TINY.to_json(), "levels": TINY.levels, "max_epochs": 1,
                        "months_min_days": 0})
    assert train_lstm(_panel(days=62), cfg).forecaster.config.month_inputs  # 0: switched off
    assert LSTMConfig().months_min_days == 728  # the default: two years
    short = LSTMConfig(**{**cfg.to_json(), "levels": cfg.levels, "months_min_days": 100})
    assert not train_lstm(_panel(days=62), short).forecaster.config.month_inputs
    assert train_lstm(_panel(days=140), short).forecaster.config.month_inputs


def test_a_warm_start_refit_fine_tunes_the_trained_weights() -> None:
    from forecasting.lstm import make_lstm

    panel = _panel()
    cfg = {**TINY.to_json(), "levels": TINY.levels, "max_epochs": 3, "patience": 5}
    warm = make_lstm(device="cpu", **{**cfg, "warm_start_epochs": 1})
    warm.fit(panel.head(120))
    first = {k: v.clone() for k, v in warm.net.state_dict().items()}
    assert warm.train_result is not None and len(warm.train_result.history) == 3
    warm.fit(panel)  # the retrain: one epoch from the trained weights
    assert warm.train_result is not None and len(warm.train_result.history) == 1
    moved = max(float((warm.net.state_dict()[k] - v).abs().max()) for k, v in first.items())
    assert 0.0 < moved < 0.5  # fine-tuned, not re-initialised
    fresh = make_lstm(device="cpu", **cfg)
    fresh.fit(panel.head(120))
    fresh.fit(panel)  # without warm_start_epochs every fit trains afresh
    assert fresh.train_result is not None and len(fresh.train_result.history) == 3


def test_the_mix_window_is_neither_trained_nor_early_stopped_on() -> None:
    panel, big_h = _panel(days=140), TINY.horizon
    mixed = LSTMConfig(**{**TINY.to_json(), "levels": TINY.levels, "max_epochs": 1,
                          "mix_days": 14})
    data, _, _ = _prepare(panel, mixed, torch.device("cpu"))
    length = panel.n_days
    # the mask columns are origins (series left-aligned; these all start on day 0)
    trained = np.flatnonzero(data.train_mask[0].numpy())
    stopped = np.flatnonzero(data.val_mask[0].numpy())
    assert trained.max() + big_h < length - 14 - 14  # targets before both windows
    assert stopped.min() + 1 == length - 14 - 14  # early stopping: the first 14 days ...
    assert stopped.max() + big_h == length - 14 - 1  # ... and never the mix's last 14
    plain, _, _ = _prepare(panel, TINY, torch.device("cpu"))
    assert np.flatnonzero(plain.val_mask[0].numpy()).max() + big_h == length - 1
    fitted = train_lstm(panel, mixed)
    assert fitted.forecaster.config.mix_days == 14
    # the LSTM's own calibration learns on its early-stopping origins, not the mix's days
    assert fitted.metrics["val_origins"] == 14 - big_h + 1


def test_a_short_history_shrinks_the_mix_window_with_the_validation_window() -> None:
    cfg = LSTMConfig(**{**TINY.to_json(), "levels": TINY.levels, "val_days": 28,
                        "max_epochs": 1, "mix_days": 28})
    short = train_lstm(_panel(days=62), cfg).forecaster.config
    assert (short.val_days, short.mix_days) == (8, 7)  # 62 // 4 = 15 days, in proportion
    # 44 days: 11 held out, 5 of them the mix's (< one horizon): one window, as without
    tiny = train_lstm(_panel(days=44), cfg).forecaster.config
    assert (tiny.val_days, tiny.mix_days) == (11, 0)
    assert train_lstm(_panel(days=140), cfg).forecaster.config.mix_days == 17  # 35 * 28 // 56
    long = train_lstm(_panel(days=240), cfg).forecaster.config
    assert (long.val_days, long.mix_days) == (28, 28)  # 240 // 4 = 60 >= 56: as configured
    assert LSTMConfig.from_json({"horizon": 7}).mix_days == 0  # artifacts before the field
