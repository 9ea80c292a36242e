"""The LSTM reading planned promotions (`LSTMConfig.promo_inputs`): each day's flag is one
more input, the forecast days' flags reach the head; both backends and the incremental path
agree, a panel without covariates trains the net of before, old artifacts serve unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from forecasting.covariates import Covariates
from forecasting.data import Panel
from forecasting.lstm.config import LSTMConfig, config_input_dim
from forecasting.lstm.features import INPUT_DIM
from tests.support.lstm import fit_small_mix, train_small_lstm

torch = pytest.importorskip("torch")

START = np.datetime64("2011-01-03")
END = np.datetime64("2012-03-01")


def _promo_panel(n: int = 16, days: int = 240, seed: int = 0,
                 covariates: bool = True) -> Panel:
    """Demand that triples on promotion days (about one day in five, per series)."""
    rng = np.random.default_rng(seed)
    promo = (rng.random((n, days + 14)) < 0.2).astype(np.float64)
    level = rng.gamma(4.0, 2.0, (n, 1))
    values = rng.poisson(level * (1.0 + 2.0 * promo[:, :days])).astype(np.float64)
    values[0, :30] = np.nan  # a late starter
    cov = Covariates(START, promo, np.ones_like(promo)) if covariates else None
    return Panel(tuple(f"s{i}" for i in range(n)), START, values, cov)


def _pair(year_ago: bool):  # type: ignore[no-untyped-def]
    """A random promo-reading net served by both backends."""
    from forecasting.lstm.forecaster import LSTMForecaster
    from forecasting.lstm.model import LSTMNet
    from forecasting.lstm.numpy_forecaster import NumpyLSTMForecaster

    torch.manual_seed(1)
    cfg = LSTMConfig(horizon=7, hidden=16, head_hidden=16, year_ago=year_ago,
                     year_ago_prior=year_ago, head_month="none", promo_inputs=True)
    net = LSTMNet(config_input_dim(cfg), cfg).eval()
    with torch.no_grad():  # flags that move the numbers visibly
        net.lstm.weight_ih_l0[:, -1].mul_(8.0)
        net.head[0].weight.mul_(3.0)
    weights = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    return (LSTMForecaster(net, device="cpu", end_day=lambda: END),
            NumpyLSTMForecaster(cfg, weights, end_day=lambda: END))


def test_the_input_width_follows_the_config() -> None:
    from forecasting.lstm.model import LSTMNet

    assert config_input_dim(LSTMConfig()) == INPUT_DIM
    assert config_input_dim(LSTMConfig(promo_inputs=True)) == INPUT_DIM + 1
    with pytest.raises(ValueError, match="input_dim"):
        LSTMNet(INPUT_DIM, LSTMConfig(promo_inputs=True))
    # off: the config's JSON (artifact ids, state fingerprints) of before the field
    assert "promo_inputs" not in LSTMConfig().to_json()
    assert LSTMConfig.from_json(LSTMConfig().to_json()).promo_inputs is False
    on = LSTMConfig(promo_inputs=True)
    assert LSTMConfig.from_json(on.to_json()) == on


def test_off_keeps_the_durable_state_fingerprint_of_before() -> None:
    """Workers upgraded to this code resume the durable states their predecessors wrote:
    the fingerprint of a config without promotion inputs is the one main computed before
    the field existed (pinned at baac257); with them it differs (another net)."""
    from forecasting.lstm.durable import weights_fingerprint

    weights = {"w": np.arange(6, dtype=np.float32)}
    # (year_ago_gaps="zero", data_holidays=False: the inputs of before those fields, now not
    # the defaults)
    before = {"year_ago_gaps": "zero", "data_holidays": False}
    old = LSTMConfig(**before)  # type: ignore[arg-type]
    assert weights_fingerprint(old, weights, 0.25, 1.5) == 11083735363336708754
    assert weights_fingerprint(LSTMConfig(horizon=7, hidden=8, **before),  # type: ignore[arg-type]
                               weights, 0.25, 1.5) == 10578368112715080804
    assert (weights_fingerprint(LSTMConfig(promo_inputs=True, **before),  # type: ignore[arg-type]
                                weights, 0.25, 1.5) != 11083735363336708754)


@pytest.mark.parametrize("year_ago", [False, True])
def test_both_backends_and_the_incremental_path_read_the_flags_alike(year_ago: bool) -> None:
    torch.set_num_threads(1)
    tfc, nfc = _pair(year_ago)
    panel = _promo_panel(n=10, days=420)
    w = panel.values
    cov = panel.covariates
    assert cov is not None
    end = panel.dates[-1]
    ends = np.full(w.shape[0], end)
    ends[::2] -= 1  # rows that end a day apart: per-row flags
    w = w.copy()
    w[::2, 1:] = w[::2, :-1]

    # encode over the whole window = encode 3 days short, then 3 updates with their flags
    def row_flags(lo: int, hi: int) -> np.ndarray:
        return cov.promo_rows(ends - (w.shape[1] - 1 - lo), hi - lo)

    full_t = tfc.encode(w, ends, promo=row_flags(0, w.shape[1]))
    full_n = nfc.encode(w, ends, promo=row_flags(0, w.shape[1]))
    np.testing.assert_allclose(full_n.h, full_t.h.numpy(), atol=1e-4)
    st = tfc.encode(w[:, :-3], ends - 3, promo=row_flags(0, w.shape[1] - 3))
    sn = nfc.encode(w[:, :-3], ends - 3, promo=row_flags(0, w.shape[1] - 3))
    for k in range(3, 0, -1):
        day_flags = row_flags(w.shape[1] - k, w.shape[1] - k + 1)[:, 0]
        st = tfc.update(st, w[:, -k], consume=True, promo=day_flags)
        sn = nfc.update(sn, w[:, -k], consume=True, promo=day_flags)
    np.testing.assert_allclose(st.h.numpy(), full_t.h.numpy(), atol=1e-5)
    np.testing.assert_allclose(sn.h, full_t.h.numpy(), atol=1e-4)

    # the head reads the forecast days' flags; predict(covariates) is encode + forecast_known
    a, b = tfc.forecast_known(st, 7, cov), nfc.forecast_known(sn, 7, cov)
    np.testing.assert_allclose(b.mean, a.mean, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(b.cumulative, a.cumulative, rtol=1e-3, atol=1e-3)
    batch = tfc.predict(w, 7, end_days=ends, covariates=cov)
    np.testing.assert_allclose(batch.mean, a.mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(nfc.predict(w, 7, end_days=ends, covariates=cov).mean,
                               batch.mean, rtol=1e-3, atol=1e-3)
    # flags matter: past days' (the state) and the forecast days' (the head)
    assert np.abs(tfc.forecast(st, 7).mean - a.mean).max() > 1e-2
    no_past = tfc.encode(w, ends)
    assert np.abs(no_past.h.numpy() - full_t.h.numpy()).max() > 1e-3
    # no covariates = zero flags everywhere, on both backends
    zeros = Covariates.neutral(w.shape[0], START, w.shape[1] + 7)
    np.testing.assert_array_equal(tfc.predict(w, 7, end_days=ends).mean,
                                  tfc.predict(w, 7, end_days=ends, covariates=zeros).mean)
    np.testing.assert_array_equal(nfc.predict(w, 7, end_days=ends).mean,
                                  nfc.predict(w, 7, end_days=ends, covariates=zeros).mean)


def test_the_unpacked_head_reads_the_flags_as_the_packed_one() -> None:
    torch.set_num_threads(1)
    tfc, _ = _pair(True)
    panel = _promo_panel(n=6, days=420)
    assert panel.covariates is not None
    state = tfc.encode(panel.values, panel.dates[-1])
    from forecasting.lstm.serving import head_promo, head_scale

    flags = head_promo(tfc.config, state, panel.covariates)
    assert flags is not None and flags.any()
    packed = tfc.head_output(state, integer=False, promo=flags)
    unpacked = tfc._forecast_unpacked(state, tfc._tensor(head_scale(state)), False, flags)
    np.testing.assert_allclose(unpacked, packed, rtol=1e-4, atol=1e-3)


def _train(panel: Panel, **over: object):  # type: ignore[no-untyped-def]
    return train_small_lstm(panel, **over)


def test_a_panel_without_covariates_trains_the_net_of_before_bit_for_bit() -> None:
    bare = _promo_panel(covariates=False)
    on, off = _train(bare, promo_inputs=True), _train(bare)
    assert on.config.promo_inputs is False and on.net.lstm.input_size == INPUT_DIM
    for (name, a), (_, b) in zip(on.net.state_dict().items(), off.net.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert on.calibration == off.calibration


def test_trained_with_covariates_it_reads_them_and_its_artifact_serves_them(
        tmp_path: Path) -> None:
    from forecasting.lstm import load_artifact, save_artifact
    from forecasting.lstm.artifact_files import load_numpy

    panel = _promo_panel()
    model = _train(panel, promo_inputs=True, max_epochs=30, patience=30, lr=1e-2, hidden=16,
                   head_hidden=16)
    assert model.config.promo_inputs and model.net.lstm.input_size == INPUT_DIM + 1
    hist = panel.head(panel.n_days - 14)
    fc = model.predict(hist.values, 7, end_days=hist.dates[-1], covariates=panel.covariates)
    plain = model.predict(hist.values, 7, end_days=hist.dates[-1])
    assert panel.covariates is not None
    planned, _ = panel.covariates.span(hist.dates[-1] + 1, 7)
    on = planned > 0
    # it learned that promotion days sell more (demand triples on them)
    lift = fc.daily[..., 2][on].mean() / plain.daily[..., 2][on].mean()
    assert lift > 1.3, lift

    save_artifact(model, tmp_path, data_fingerprint="test")
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["config"]["promo_inputs"] is True
    assert meta["features"]["inputs"][-1] == "promo"
    assert len(meta["features"]["inputs"]) == INPUT_DIM + 1
    for served in (load_artifact(tmp_path, device="cpu"), load_numpy(tmp_path)):
        again = served.predict(hist.values, 7, end_days=hist.dates[-1],
                               covariates=panel.covariates)
        np.testing.assert_allclose(again.mean, fc.mean, rtol=1e-3, atol=1e-3)

    # the stream does not feed past days' flags: a worker refuses it with one line
    from runtime.errors import ConfigError
    from streams.forecaster_setup import _load

    with pytest.raises(ConfigError, match="promotion inputs"):
        _load("lstm", tmp_path, "cpu")


def test_an_artifact_from_before_promotion_inputs_loads_and_ignores_covariates(
        tmp_path: Path) -> None:
    from forecasting.lstm import load_artifact, save_artifact
    from forecasting.lstm.artifact_files import ArtifactError, load_numpy

    panel = _promo_panel(covariates=False)
    model = _train(panel, max_epochs=1)
    info = save_artifact(model, tmp_path, data_fingerprint="test")
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert "promo_inputs" not in meta["config"]  # the JSON, and so the id, of before
    assert len(meta["features"]["inputs"]) == INPUT_DIM
    promoted = _promo_panel()
    assert promoted.covariates is not None
    for served in (load_artifact(tmp_path, device="cpu"), load_numpy(tmp_path)):
        assert served.model_id == info.model_id and not served.config.promo_inputs
        with_cov = served.predict(panel.values, 7, end_days=panel.dates[-1],
                                  covariates=promoted.covariates)
        without = served.predict(panel.values, 7, end_days=panel.dates[-1])
        np.testing.assert_array_equal(with_cov.daily, without.daily)
        np.testing.assert_array_equal(with_cov.mean, without.mean)
    # a metadata whose input width disagrees with its config is refused, not misread
    meta["config"]["promo_inputs"] = True
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="inputs per day"):
        load_artifact(tmp_path, device="cpu")


def test_the_mix_hands_the_promotions_to_its_lstm_part() -> None:
    panel = _promo_panel(n=12, days=420)
    model, hist = fit_small_mix(panel, promo_inputs=True)
    assert model.lstm.config.promo_inputs
    cov = panel.covariates
    assert cov is not None
    end = hist.dates[-1]
    got = model.predict(hist.values, 7, end_days=end, covariates=cov)
    flags, _ = cov.span(hist.start, hist.n_days)
    state = model.encode(hist.values, end, promo=flags)
    np.testing.assert_array_equal(model.forecast(state, 7, covariates=cov).mean, got.mean)
    # the LSTM part read them: its forecast differs from the one without any flags
    part = model.lstm.forecast_known(state, 7, cov)
    assert np.abs(part.mean - model.lstm.forecast(model.encode(hist.values, end), 7).mean
                  ).max() > 1e-3
