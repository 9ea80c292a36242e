"""NumpyNet (the numpy serving backend) against the torch kernels: same step, encode, head,
and the same state fingerprint, on random weights of every head layout it serves."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from forecasting.lstm.config import LSTMConfig, config_input_dim
from forecasting.lstm.durable import weights_fingerprint
from forecasting.lstm.features import INPUT_DIM
from forecasting.lstm.numpy_net import NumpyNet, NumpyNetError


def test_the_numpy_serving_path_imports_no_torch() -> None:
    code = ("import sys, forecasting.lstm.numpy_net, forecasting.lstm.durable, "
            "forecasting.lstm.config; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_head_it_does_not_lay_out_is_refused() -> None:
    with pytest.raises(NumpyNetError, match="pinball"):
        NumpyNet.from_weights(LSTMConfig(loss="normal"), {})
    with pytest.raises(NumpyNetError, match="lack"):
        NumpyNet.from_weights(LSTMConfig(), {})


@pytest.fixture(scope="module")
def torch_mod():  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def _net(torch, layers: int, year_ago: bool, month: str, integer: bool = False,  # type: ignore[no-untyped-def]
         promo: bool = False):
    from forecasting.lstm.model import LSTMNet

    torch.manual_seed(layers + 2 * year_ago)
    cfg = LSTMConfig(horizon=7, hidden=16, layers=layers, head_hidden=16,
                     integer_demand=integer, year_ago=year_ago, year_ago_prior=year_ago,
                     head_month=month, promo_inputs=promo)
    net = LSTMNet(config_input_dim(cfg), cfg).eval()
    with torch.no_grad():  # gates away from 1/2, so a wrong gate row would show
        net.head[-1].bias.add_(torch.randn(net.head[-1].bias.shape))
    return net


def _weights(net) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize(("year_ago", "month", "promo"),
                         [(False, "none", False), (True, "onehot", False),
                          (True, "fourier", False), (False, "none", True),
                          (True, "onehot", True)])
def test_step_run_and_head_equal_the_torch_kernels(torch_mod, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                   layers: int, integer: bool,
                                                   year_ago: bool, month: str,
                                                   promo: bool) -> None:
    torch = torch_mod
    from forecasting.lstm import kernels, numpy_net
    from forecasting.lstm.durable import fingerprint

    monkeypatch.setattr(numpy_net, "_CHUNK_ROWS", 5)  # several row blocks, one partial
    monkeypatch.setattr(kernels, "_CHUNK_ROWS", 5)
    net = _net(torch, layers, year_ago, month, integer, promo)
    packed = kernels.PackedNet.of(net)
    assert packed.head_packed and packed.step_packed
    assert (packed.head_promo is not None) == promo
    npnet = NumpyNet.from_weights(net.config, _weights(net))
    assert (weights_fingerprint(net.config, _weights(net), 0.25, 1.5)
            == fingerprint(net, 0.25, 1.5))
    rng = np.random.default_rng(layers)
    n = 12
    width = config_input_dim(net.config)
    assert width == INPUT_DIM + promo
    x = rng.normal(size=(n, width)).astype(np.float32)
    h0 = (rng.random((layers, n, 16)) - 0.5).astype(np.float32)
    c0 = (rng.random((layers, n, 16)) - 0.5).astype(np.float32)
    with torch.inference_mode():
        h_ref, c_ref = packed.step(torch.from_numpy(x), torch.from_numpy(h0),
                                   torch.from_numpy(c0))
    h, c = npnet.step(x, h0, c0)
    np.testing.assert_allclose(h, h_ref.numpy(), atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(c, c_ref.numpy(), atol=2e-6, rtol=1e-5)

    seq = rng.normal(size=(n, 9, width)).astype(np.float32)
    start = (np.arange(n) % 4).astype(np.intp)
    start[-1] = 9  # never starts: stays zero
    with torch.inference_mode():
        hr, cr = packed.run(torch.from_numpy(seq), start)
    hn, cn = npnet.run(seq, start)
    np.testing.assert_allclose(hn, hr.numpy(), atol=5e-6, rtol=1e-5)
    np.testing.assert_allclose(cn, cr.numpy(), atol=5e-6, rtol=1e-5)
    assert not hn[:, -1].any()

    assert packed.head_future is not None
    future = rng.random((3, packed.head_future.shape[1])).astype(np.float32)
    inverse = (np.arange(n) % 3).astype(np.intp)
    year = None
    if year_ago:
        assert packed.head_year is not None
        year = (rng.random((n, packed.head_year.shape[1])) * 3).astype(np.float32)
        year[:, -1] = np.arange(n) % 2
    scale = (rng.random(n) * 4 + 0.5).astype(np.float32)
    flags = (rng.random((n, 7)) < 0.4).astype(np.float32) if promo else None
    top = hn[-1]

    def t(a: np.ndarray | None):  # type: ignore[no-untyped-def]
        return None if a is None else torch.from_numpy(a)

    with torch.inference_mode():
        ref = packed.quantiles(t(top), t(future), t(inverse), t(scale), year=t(year),
                               promo=t(flags), integer=integer).numpy()
        # ... which is LSTMNet's own head on [future | flags | year-ago] (the net's layout)
        full = np.concatenate([a for a in (future[inverse], flags, year) if a is not None],
                              axis=1)
        own = kernels.reference_quantiles(net, t(top), t(full), t(scale),
                                          integer=integer).numpy()
    np.testing.assert_allclose(own, ref, atol=1e-3, rtol=1e-4)
    got = npnet.quantiles(top, future, inverse, scale, year=year, promo=flags,
                          integer=integer)
    assert got.dtype == np.float64 and got.shape == ref.shape
    if integer:  # a float32 hair at x.5 may round apart: at most one unit, rarely
        assert np.mean(np.abs(got - ref) > 1e-4) < 0.01 and np.abs(got - ref).max() <= 1.0 + 1e-4
    else:
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    same = npnet.quantiles(top, future[:1], None, scale, year=year, promo=flags,
                           integer=integer)
    every = npnet.quantiles(top, future, np.zeros(n, dtype=np.intp), scale, year=year,
                            promo=flags, integer=integer)  # (BLAS may sum one row apart)
    assert np.mean(np.abs(same - every) > 1e-4) < 0.01
    if promo:  # the flags move the forecast; none given is all-zero flags
        assert flags is not None
        unplanned = npnet.quantiles(top, future, inverse, scale, year=year, integer=integer)
        zeros = npnet.quantiles(top, future, inverse, scale, year=year,
                                promo=np.zeros_like(flags), integer=integer)
        np.testing.assert_array_equal(unplanned, zeros)
        assert np.abs(unplanned - got).max() > 1e-2
    else:
        with pytest.raises(ValueError, match="promotion"):
            npnet.quantiles(top, future, inverse, scale, year=year,
                            promo=np.zeros((n, 7), dtype=np.float32), integer=integer)


END = np.datetime64("2011-03-01")


def _long_windows(rng: np.random.Generator, n: int = 10, length: int = 430) -> np.ndarray:
    days = np.arange(length)
    rate = 5.0 + 3.0 * np.sin(2 * np.pi * days / 365.25)[None, :] + rng.gamma(2.0, 1.0, (n, 1))
    w = rng.poisson(rate).astype(float)
    w[0, :50] = np.nan  # started late
    w[1, 300] = np.nan  # a missing bucket
    w[2, :-100] = np.nan  # less than a year of history
    w[3] = np.nan  # no history at all
    return w


def _panel(torch, days: int = 140):  # type: ignore[no-untyped-def]
    from forecasting.data import Panel

    rng = np.random.default_rng(0)
    t = np.arange(days)
    y = rng.poisson(3 + 2 * (t % 7 == 5)[None, :] + rng.random((8, 1)) * 3, (8, days))
    return Panel([f"s{i}" for i in range(8)], np.datetime64("2011-01-01") + t,
                 y.astype(float))


@pytest.fixture(scope="module")
def trained(torch_mod, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A tiny trained artifact (model.pt + model.npz), and its torch forecaster."""
    from forecasting.lstm import load_artifact, save_artifact, train_lstm

    cfg = LSTMConfig(horizon=7, hidden=8, head_hidden=8, max_epochs=2, val_days=14,
                     year_ago=False, year_ago_prior=False)
    result = train_lstm(_panel(torch_mod), cfg, device="cpu")
    out = tmp_path_factory.mktemp("art")
    save_artifact(result.forecaster, out, data_fingerprint="test")
    return out, load_artifact(out, device="cpu")


def test_a_trained_artifact_serves_the_same_numbers_and_states_in_numpy(trained) -> None:  # type: ignore[no-untyped-def]
    from forecasting.lstm.artifact_files import load_numpy

    path, torch_fc = trained
    assert (path / "model.npz").exists()
    np_fc = load_numpy(path)
    assert np_fc.model_version == torch_fc.model_version
    assert np_fc.state_fingerprint() == torch_fc.state_fingerprint()
    assert np_fc.calibration == torch_fc.calibration
    w = _long_windows(np.random.default_rng(2))[:, -60:]
    ft = torch_fc.predict(w, 10, end_days=END)  # beyond the trained horizon too
    fn = np_fc.predict(w, 10, end_days=END)
    for a, b in ((ft.daily, fn.daily), (ft.cumulative, fn.cumulative), (ft.mean, fn.mean)):
        assert np.mean(np.abs(a - b) > 1e-3) < 0.01 and np.abs(a - b).max() <= 1.0 + 1e-3


@pytest.mark.parametrize("year_ago", [False, True])
def test_numpy_and_torch_forecasters_agree_and_resume_each_others_states(  # type: ignore[no-untyped-def]
        torch_mod, year_ago: bool) -> None:
    from forecasting.lstm.forecaster import LSTMForecaster
    from forecasting.lstm.numpy_forecaster import NumpyLSTMForecaster

    net = _net(torch_mod, 2, year_ago, "onehot" if year_ago else "none")
    tfc = LSTMForecaster(net, log_scale_mean=0.3, log_scale_std=1.2, device="cpu",
                         model_id="abc", end_day=lambda: END)
    nfc = NumpyLSTMForecaster(net.config, _weights(net), log_scale_mean=0.3,
                              log_scale_std=1.2, model_id="abc", end_day=lambda: END)
    assert nfc.model_version == tfc.model_version == "lstm-1+abc"
    assert nfc.state_fingerprint() == tfc.state_fingerprint()
    w = _long_windows(np.random.default_rng(4))
    ends = END - (np.arange(w.shape[0]) % 2).astype("timedelta64[D]")
    st, sn = tfc.encode(w[:, :-3], ends - 3), nfc.encode(w[:, :-3], ends - 3)
    np.testing.assert_allclose(sn.h, st.h.numpy(), atol=1e-4)
    np.testing.assert_allclose(sn.c, st.c.numpy(), atol=1e-4)
    warm_t = tfc.encode(w, ends, warmup_days=30)
    warm_n = nfc.encode(w, ends, warmup_days=30)
    np.testing.assert_allclose(warm_n.h, warm_t.h.numpy(), atol=1e-4)
    for k in range(3, 0, -1):
        st = tfc.update(st, w[:, -k], consume=True)
        sn = nfc.update(sn, w[:, -k], consume=True)
    np.testing.assert_allclose(sn.h, st.h.numpy(), atol=1e-4)
    a, b = tfc.forecast(st, 7), nfc.forecast(sn, 7)
    np.testing.assert_allclose(b.mean, a.mean, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(b.cumulative, a.cumulative, rtol=1e-3, atol=1e-3)

    # Durable records: one backend's export restores into the other's store, bit for bit.
    t_slots, n_slots = tfc.keyed_states(100), nfc.keyed_states(100)
    keys = [f"k{i}" for i in range(w.shape[0])]
    slots_t, _ = t_slots.slots(keys)
    t_slots.scatter(slots_t, st)
    blobs = t_slots.export(slots_t)
    slots_n, _ = n_slots.slots(keys)
    assert n_slots.restore(slots_n, blobs).all()
    assert n_slots.export(slots_n) == blobs
    back, _ = t_slots.slots([f"x{k}" for k in keys])
    assert t_slots.restore(back, n_slots.export(slots_n)).all()
    got = n_slots.gather(slots_n)
    np.testing.assert_array_equal(got.h, st.h.numpy())
    np.testing.assert_allclose(nfc.forecast(got, 7).mean, a.mean, rtol=1e-3, atol=1e-3)


def test_the_backend_follows_the_setting_and_the_device(trained, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from forecasting import make_forecaster
    from forecasting.lstm.forecaster import LSTMForecaster
    from forecasting.lstm.numpy_forecaster import NumpyLSTMForecaster

    path = str(trained[0])
    monkeypatch.delenv("SHELFCAST_LSTM_BACKEND", raising=False)
    assert isinstance(make_forecaster("lstm", path=path, shared={"device": "cpu"}),
                      NumpyLSTMForecaster)
    monkeypatch.setenv("SHELFCAST_LSTM_BACKEND", "torch")
    assert isinstance(make_forecaster("lstm", path=path, shared={"device": "cpu"}),
                      LSTMForecaster)
    assert isinstance(make_forecaster("lstm", path=path,
                                      shared={"device": "cpu", "backend": "numpy"}),
                      NumpyLSTMForecaster)
    with pytest.raises(ValueError, match="backend"):
        make_forecaster("lstm", path=path, shared={"backend": "jax"})


def test_add_npz_writes_the_same_weights_to_an_older_artifact(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from forecasting.lstm.artifact import main
    from forecasting.lstm.artifact_files import load_numpy

    path, torch_fc = trained
    old = tmp_path / "old"
    shutil.copytree(path, old)
    (old / "model.npz").unlink()
    assert main(["--add-npz", str(old)]) == 0
    assert (old / "model.npz").read_bytes() == (path / "model.npz").read_bytes()
    assert load_numpy(old).state_fingerprint() == torch_fc.state_fingerprint()
    assert main(["--add-npz", str(tmp_path / "none")]) == 1


def test_serving_from_model_npz_imports_no_torch(trained) -> None:  # type: ignore[no-untyped-def]
    code = ("import sys, numpy as np; from forecasting import make_forecaster; "
            f"m = make_forecaster('lstm', path={str(trained[0])!r}, "
            "shared={'device': 'cpu'}); "
            "f = m.predict(np.ones((3, 40)), 7, end_days=np.datetime64('2011-03-01')); "
            "assert f.mean.shape == (3, 7); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
