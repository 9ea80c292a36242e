"""NumpyNet: the LSTM's serving forward pass in float32 numpy, without torch.

The same computation as `kernels.PackedNet` (the packed inference kernels of `LSTMNet`):
one recurrent step from a carried (h, c), a full-window encode from a zero state
(right-aligned windows, each row from its own start column) and the pinball quantile head
on a top hidden state. It is built from the net's `state_dict` as float32 arrays (an
artifact's model.npz, or `LSTMNet.state_dict()`), so `durable.weights_fingerprint` of the
same arrays equals `durable.fingerprint` of the torch net: a durable state one backend
writes, the other resumes. On a CPU the torch kernels cost more than numpy's BLAS calls on
these shapes (benchmarks/README.md), and serving needs no torch install at all.

Only the pinball head (`LSTMConfig.loss == "pinball"`, with or without the year-ago
inputs and prior, with or without promotion inputs) is laid out; other heads need torch
(`NumpyNetError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from forecasting.errors import ForecastingError
from forecasting.lstm.config import LSTMConfig, config_input_dim
from forecasting.lstm.features import future_dim, year_ago_dim

__all__ = ["NumpyNet", "NumpyNetError"]

F32 = NDArray[np.float32]
_CHUNK_ROWS = 2048  # rows per block: a block's float32 temporaries stay in cache


class NumpyNetError(ForecastingError):
    """Weights that the numpy backend cannot serve (a missing array, another head)."""


def _sigmoid(x: F32) -> F32:
    """In place: 1 / (1 + exp(-x))."""
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1.0
    np.reciprocal(x, out=x)
    return x


def _softplus(x: F32) -> F32:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), stable, in float32 (torch's is
    linear above 20, where the two differ by < 1e-8 relative); ~5x cheaper here than
    np.logaddexp, which dominated the head's cost."""
    out: F32 = np.abs(x)
    np.negative(out, out=out)
    np.exp(out, out=out)
    np.log1p(out, out=out)
    out += np.maximum(x, 0.0)
    return out


@dataclass(frozen=True)
class NumpyNet:
    """An `LSTMNet`'s parameters laid out for numpy inference (see `kernels.PackedNet`)."""

    config: LSTMConfig
    cells: tuple[tuple[F32, F32], ...]  # per layer: (in + hidden, 4 hidden) transposed, bias
    head_top: F32  # (hidden, head_hidden): transposed for x @ w
    head_future: F32  # (future_dim, head_hidden)
    head_year: F32 | None  # (year_ago_dim, head_hidden); None: no year-ago inputs
    head_bias: F32  # (head_hidden,)
    out_weight: F32  # (head_hidden, 2HQ + H [+ H]): columns re-ordered as PackedNet's rows
    out_bias: F32
    prior: bool
    head_promo: F32 | None = None  # (H, head_hidden); None: no promotion inputs

    @property
    def hidden(self) -> int:
        """Hidden units per layer."""
        return self.config.hidden

    @property
    def layers(self) -> int:
        """LSTM layers."""
        return len(self.cells)

    @classmethod
    def from_weights(cls, config: LSTMConfig, weights: Mapping[str, NDArray[np.generic]],
                     input_dim: int | None = None) -> NumpyNet:
        """Lay out `weights` (an `LSTMNet.state_dict()` as arrays, by name) of a net with
        `config` (`input_dim`: the per-day input width; None: the config's,
        `config_input_dim`); raises NumpyNetError for a head it does not serve or a shape
        mismatch."""
        if input_dim is None:
            input_dim = config_input_dim(config)
        if config.loss != "pinball":
            raise NumpyNetError(f"the numpy backend serves the pinball head only, not "
                                f"loss={config.loss!r} (serve it with backend='torch')")

        def get(name: str, shape: tuple[int, ...]) -> F32:
            if name not in weights:
                raise NumpyNetError(f"weights lack {name!r}")
            arr = np.asarray(weights[name], dtype=np.float32)
            if arr.shape != shape:
                raise NumpyNetError(f"{name}: shape {arr.shape}, expected {shape}")
            return arr

        hidden, big_h, q = config.hidden, config.horizon, len(config.levels)
        cells = []
        for layer in range(config.layers):
            width = input_dim if layer == 0 else hidden
            w = np.concatenate([get(f"lstm.weight_ih_l{layer}", (4 * hidden, width)),
                                get(f"lstm.weight_hh_l{layer}", (4 * hidden, hidden))], axis=1)
            b = (get(f"lstm.bias_ih_l{layer}", (4 * hidden,))
                 + get(f"lstm.bias_hh_l{layer}", (4 * hidden,)))
            cells.append((np.ascontiguousarray(w.T), b.astype(np.float32)))
        n_common = future_dim(big_h, config.head_calendar, config.head_annual,
                              config.head_month, config.head_month_pairs)
        n_year = year_ago_dim(big_h) if config.year_ago else 0
        n_promo = big_h if config.promo_inputs else 0
        prior = config.year_ago and config.year_ago_prior
        per = 2 * q + 1 + int(prior)
        w1 = get("head.0.weight", (config.head_hidden, hidden + n_common + n_promo + n_year))
        w2 = get("head.2.weight", (big_h * per, config.head_hidden))
        b2 = get("head.2.bias", (big_h * per,))
        rows = [h * per + j for h in range(big_h) for j in range(2 * q)]
        rows += [h * per + 2 * q for h in range(big_h)]
        if prior:
            rows += [h * per + 2 * q + 1 for h in range(big_h)]
        idx = np.asarray(rows, dtype=np.intp)
        flags = hidden + n_common  # the promotion columns, then the year-ago ones
        return cls(config, tuple(cells),
                   np.ascontiguousarray(w1[:, :hidden].T),
                   np.ascontiguousarray(w1[:, hidden : hidden + n_common].T),
                   np.ascontiguousarray(w1[:, flags + n_promo :].T) if n_year else None,
                   get("head.0.bias", (config.head_hidden,)),
                   np.ascontiguousarray(w2[idx].T), np.ascontiguousarray(b2[idx]), prior,
                   np.ascontiguousarray(w1[:, flags : flags + n_promo].T) if n_promo
                   else None)

    # --- the recurrence --------------------------------------------------------------------
    def step(self, x: NDArray[np.floating], h: F32, c: F32) -> tuple[F32, F32]:
        """One bucket through every layer: x (n, F), h and c (layers, n, hidden) -> new
        (h, c), float32. Equals `nn.LSTM` on a length-1 sequence."""
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        n = x32.shape[0]
        h_out = np.empty((self.layers, n, self.hidden), dtype=np.float32)
        c_out = np.empty_like(h_out)
        for lo in range(0, n, _CHUNK_ROWS):
            hi = min(lo + _CHUNK_ROWS, n)
            self._step(x32[lo:hi], h[:, lo:hi], c[:, lo:hi], h_out[:, lo:hi], c_out[:, lo:hi])
        return h_out, c_out

    def run(self, x: NDArray[np.floating], start: NDArray[np.intp]) -> tuple[F32, F32]:
        """Encode windows from a zero state: x (n, T, F), series i from column `start[i]` on
        (its state stays zero before) -> the final (h, c), each (layers, n, hidden)."""
        x32 = np.asarray(x, dtype=np.float32)
        n, length = x32.shape[0], x32.shape[1]
        h_out = np.zeros((self.layers, n, self.hidden), dtype=np.float32)
        c_out = np.zeros_like(h_out)
        for lo in range(0, n, _CHUNK_ROWS):
            hi = min(lo + _CHUNK_ROWS, n)
            first = np.asarray(start[lo:hi])
            if first.size == 0 or int(first.min()) >= length:
                continue
            h, c = h_out[:, lo:hi].copy(), c_out[:, lo:hi].copy()
            h_new, c_new = np.empty_like(h), np.empty_like(c)
            last_start = int(first.max())
            for t in range(int(first.min()), length):
                self._step(np.ascontiguousarray(x32[lo:hi, t]), h, c, h_new, c_new)
                if t < last_start:  # rows that have not started stay at zero
                    waiting = first > t
                    h_new[:, waiting] = 0.0
                    c_new[:, waiting] = 0.0
                h, h_new = h_new, h
                c, c_new = c_new, c
            h_out[:, lo:hi], c_out[:, lo:hi] = h, c
        return h_out, c_out

    def _step(self, x: F32, h: F32, c: F32, h_out: F32, c_out: F32) -> None:
        hidden, inp = self.hidden, x
        for layer, (w, b) in enumerate(self.cells):
            gates = np.concatenate([inp, h[layer]], axis=1) @ w
            gates += b
            _sigmoid(gates[:, : 2 * hidden])  # input and forget gates
            np.tanh(gates[:, 2 * hidden : 3 * hidden], out=gates[:, 2 * hidden : 3 * hidden])
            _sigmoid(gates[:, 3 * hidden :])
            i, f = gates[:, :hidden], gates[:, hidden : 2 * hidden]
            g, o = gates[:, 2 * hidden : 3 * hidden], gates[:, 3 * hidden :]
            c_new = c_out[layer]
            np.multiply(f, c[layer], out=c_new)
            c_new += i * g
            h_new = h_out[layer]
            np.tanh(c_new, out=h_new)
            h_new *= o
            inp = h_new

    # --- the head --------------------------------------------------------------------------
    def quantiles(self, top: F32, future: NDArray[np.floating],
                  inverse: NDArray[np.intp] | None, scale: NDArray[np.floating], *,
                  year: NDArray[np.floating] | None = None,
                  promo: NDArray[np.floating] | None = None,
                  integer: bool) -> NDArray[np.float64]:
        """`PackedNet.quantiles` in numpy: top (n, hidden), future (u, future_dim) of the
        distinct rows with `inverse` (n,) saying which each series has (None: all the
        first), scale (n,), year (n, year_ago_dim) with the year-ago inputs, promo (n, H)
        the planned-promotion flags of the forecast days with promotion inputs (None: no
        promotion planned) -> (n, H, 2Q + 1) float64 [daily quantiles | cumulative
        quantiles | mean]."""
        if (year is None) != (self.head_year is None):
            raise ValueError("year-ago features must be given exactly when the net uses them")
        if promo is not None and self.head_promo is None:
            raise ValueError("promotion flags given to a net without promotion inputs")
        n, q, big_h = top.shape[0], len(self.config.levels), self.config.horizon
        per_origin = np.asarray(future, dtype=np.float32) @ self.head_future
        per_origin += self.head_bias
        out = np.empty((n, big_h, 2 * q + 1), dtype=np.float64)
        scale32 = np.asarray(scale, dtype=np.float32)
        year32 = None if year is None else np.asarray(year, dtype=np.float32)
        promo32 = None if promo is None else np.asarray(promo, dtype=np.float32)
        for lo in range(0, n, _CHUNK_ROWS):
            hi = min(lo + _CHUNK_ROWS, n)
            base = (np.broadcast_to(per_origin[0], (hi - lo, per_origin.shape[1]))
                    if inverse is None else per_origin[inverse[lo:hi]])
            if promo32 is not None:
                assert self.head_promo is not None
                base = base + promo32[lo:hi] @ self.head_promo
            part = None if year32 is None else year32[lo:hi]
            if part is not None:
                assert self.head_year is not None
                base = base + part @ self.head_year
            self._quantiles(np.asarray(top[lo:hi], dtype=np.float32), base, part,
                            scale32[lo:hi], out[lo:hi], integer)
        return out

    def _quantiles(self, top: F32, base: NDArray[np.float32], year: F32 | None, scale: F32,
                   out: NDArray[np.float64], integer: bool) -> None:
        n, q, big_h = top.shape[0], len(self.config.levels), self.config.horizon
        hid = top @ self.head_top
        hid += base
        np.maximum(hid, 0.0, out=hid)
        raw: F32 = np.matmul(hid, self.out_weight)
        raw += self.out_bias
        width = big_h * 2 * q
        blocks = raw[:, :width].reshape(n, big_h, 2, q)
        soft = _softplus(raw)
        soft_blocks = soft[:, :width].reshape(n, big_h, 2, q)
        soft_blocks[..., 0] = blocks[..., 0]  # bases stay raw
        quant = soft_blocks.copy()
        for j in range(1, q):  # the cumulative sum over levels: Q - 1 adds beat np.cumsum
            quant[..., j] += quant[..., j - 1]  # over a short strided axis (5x here)
        np.maximum(quant, 0.0, out=quant)
        mean = soft[:, width : width + big_h]
        prev = quant[:, 0, 0]  # cumulative >= the first day's demand, non-decreasing
        mean_factor = scale[:, None]
        factor = scale[:, None, None, None]
        if self.prior:  # LSTMNet.head_raw's gated year-ago multiplier of daily and mean
            assert year is not None
            shape = np.log(np.clip(year[:, -big_h - 1 : -1], 0.2, 5.0)) * year[:, -1:]
            gate = _sigmoid(raw[:, width + big_h : width + 2 * big_h].copy())
            mult = np.exp(gate * shape)  # (n, H)
            prev = prev * mult[:, :1]
            mean_factor = mult * mean_factor
            factor = np.stack([mean_factor, np.broadcast_to(scale[:, None], (n, big_h))],
                              axis=2)[..., None]
        cum = quant[:, :, 1]
        for step in range(big_h):
            np.maximum(cum[:, step], prev, out=cum[:, step])
            prev = cum[:, step]
        out[..., : 2 * q] = (quant * factor).reshape(n, big_h, 2 * q)
        if integer:  # quantiles of counts are counts
            np.round(out[..., : 2 * q], out=out[..., : 2 * q])
        out[..., 2 * q] = mean * mean_factor
