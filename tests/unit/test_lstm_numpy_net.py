"""NumpyNet (the numpy serving backend) against the torch kernels: same step, encode, head,
and the same state fingerprint, on random weights of every head layout it serves."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from forecasting.lstm.config import LSTMConfig
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


def _net(torch, layers: int, year_ago: bool, month: str, integer: bool = False):  # type: ignore[no-untyped-def]
    from forecasting.lstm.model import LSTMNet

    torch.manual_seed(layers + 2 * year_ago)
    cfg = LSTMConfig(horizon=7, hidden=16, layers=layers, head_hidden=16,
                     integer_demand=integer, year_ago=year_ago, year_ago_prior=year_ago,
                     head_month=month)
    net = LSTMNet(INPUT_DIM, cfg).eval()
    with torch.no_grad():  # gates away from 1/2, so a wrong gate row would show
        net.head[-1].bias.add_(torch.randn(net.head[-1].bias.shape))
    return net


def _weights(net) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize(("year_ago", "month"), [(False, "none"), (True, "onehot"),
                                                 (True, "fourier")])
def test_step_run_and_head_equal_the_torch_kernels(torch_mod, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                   layers: int, integer: bool,
                                                   year_ago: bool, month: str) -> None:
    torch = torch_mod
    from forecasting.lstm import kernels, numpy_net
    from forecasting.lstm.durable import fingerprint

    monkeypatch.setattr(numpy_net, "_CHUNK_ROWS", 5)  # several row blocks, one partial
    net = _net(torch, layers, year_ago, month, integer)
    packed = kernels.PackedNet.of(net)
    assert packed.head_packed and packed.step_packed
    npnet = NumpyNet.from_weights(net.config, _weights(net))
    assert (weights_fingerprint(net.config, _weights(net), 0.25, 1.5)
            == fingerprint(net, 0.25, 1.5))
    rng = np.random.default_rng(layers)
    n = 12
    x = rng.normal(size=(n, INPUT_DIM)).astype(np.float32)
    h0 = (rng.random((layers, n, 16)) - 0.5).astype(np.float32)
    c0 = (rng.random((layers, n, 16)) - 0.5).astype(np.float32)
    with torch.inference_mode():
        h_ref, c_ref = packed.step(torch.from_numpy(x), torch.from_numpy(h0),
                                   torch.from_numpy(c0))
    h, c = npnet.step(x, h0, c0)
    np.testing.assert_allclose(h, h_ref.numpy(), atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(c, c_ref.numpy(), atol=2e-6, rtol=1e-5)

    seq = rng.normal(size=(n, 9, INPUT_DIM)).astype(np.float32)
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
    top = hn[-1]
    with torch.inference_mode():
        ref = packed.quantiles(torch.from_numpy(top), torch.from_numpy(future),
                               torch.from_numpy(inverse), torch.from_numpy(scale),
                               year=None if year is None else torch.from_numpy(year),
                               integer=integer).numpy()
    got = npnet.quantiles(top, future, inverse, scale, year=year, integer=integer)
    assert got.dtype == np.float64 and got.shape == ref.shape
    if integer:  # a float32 hair at x.5 may round apart: at most one unit, rarely
        assert np.mean(np.abs(got - ref) > 1e-4) < 0.01 and np.abs(got - ref).max() <= 1.0 + 1e-4
    else:
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    same = npnet.quantiles(top, future[:1], None, scale, year=year, integer=integer)
    every = npnet.quantiles(top, future, np.zeros(n, dtype=np.intp), scale, year=year,
                            integer=integer)  # (BLAS may sum one row apart from three)
    assert np.mean(np.abs(same - every) > 1e-4) < 0.01
