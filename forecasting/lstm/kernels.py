"""Inference kernels of the LSTM: one recurrent step and the quantile head on packed weights.

`LSTMNet` is what training builds and saves; at inference the same parameters are re-laid
once per weight version (`PackedNet.of`) so that a step and a forecast are a few large ops:

- each LSTM layer's input and recurrent weights side by side (one matmul per step instead of
  two plus a length-1 sequence through `nn.LSTM`), the cell-gate rows doubled so one sigmoid
  over all four gates also gives tanh (tanh(x) = 2 sigmoid(2x) - 1; torch's CPU tanh is ~3x
  slower than its sigmoid);
- the head's first layer split into the columns that see the hidden state and those that see
  the future features, so the future part is computed once per distinct origin day instead
  of once per series (and the concatenation goes away);
- the head's last layer's rows re-ordered into [(H, 2, Q) quantile blocks | H means] and
  zero-padded to a multiple of 16 (266 -> 272 rows: 2.5 instead of 3.7 ms at 4,096 series
  in a micro-benchmark here), so the quantiles are one cumulative sum over contiguous blocks
  of [base, softplus increments].

Large batches go in blocks of `_CHUNK_ROWS` rows so the temporaries stay in cache, and the
float64 forecast is written by the last multiply into memory from numpy (see `empty`).

With year-ago inputs (`LSTMConfig.year_ago`) the head's first layer has a third block of
columns, for the per-series year-ago features, added per series; with promotion inputs
(`LSTMConfig.promo_inputs`) a block of H columns before it, for each series' planned
flags of the forecast days, likewise added per series (skipped where a batch has none);
with the year-ago prior (`year_ago_prior`) the last layer's gate row per step goes after
the means, and the daily quantiles and the mean are multiplied by the year-ago shape to the
gated power, as in `LSTMNet.head_raw` / `LSTMNet.quantiles`.

Only the pinball head (daily and cumulative quantiles as base + softplus increments, a
softplus mean, optionally the year-ago gates) is packed; other heads (loss="normal") go
through `LSTMNet` (`reference_quantiles`). Packing never silently changes the numbers:
besides the checks of the layout, each packed weight version is run once on a random probe
against `LSTMNet` and a part that disagrees (beyond float32 rounding) is not used.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, replace

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from forecasting.lstm.features import future_dim, year_ago_dim
from forecasting.lstm.model import LSTMNet

__all__ = ["PackedNet", "empty", "reference_quantiles"]

log = logging.getLogger(__name__)

_PAD = 16
_CHUNK_ROWS = 2048  # rows per block: a block's float32 temporaries fit in L2


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised tensor. On CPU its memory comes from numpy: torch's CPU allocator
    takes ~4x longer to fault in fresh large blocks (a 16k-series forecast is 35 MB)."""
    if device.type == "cpu":
        return torch.from_numpy(np.empty(shape, dtype=torch.empty((), dtype=dtype).numpy().dtype))
    return torch.empty(shape, dtype=dtype, device=device)


def _versions(params: tuple[Tensor, ...]) -> tuple[int, ...]:
    return tuple(p._version for p in params)


@dataclass(frozen=True)
class PackedNet:
    """The parameters of one `LSTMNet` weight version, laid out for inference."""

    net: weakref.ref[LSTMNet]
    params: tuple[Tensor, ...]  # the net's parameters when packed (walking modules is slow)
    versions: tuple[int, ...]
    cells: tuple[tuple[Tensor, Tensor], ...]  # per layer: (4 hidden, in + hidden), (4 hidden,)
    hidden: int
    head_top: Tensor | None  # (head_hidden, hidden); None: the head is not packed
    head_future: Tensor | None  # (head_hidden, future_dim)
    head_year: Tensor | None  # (head_hidden, year_ago_dim); None: no year-ago inputs
    head_bias: Tensor | None  # (head_hidden,)
    out_weight: Tensor | None  # (padded width, head_hidden), rows re-ordered
    out_bias: Tensor | None  # (padded width,)
    horizon: int
    n_levels: int
    prior: bool  # the year-ago multiplier: H gate rows after the means
    step_packed: bool = True  # False: the probe found `step` differs from nn.LSTM
    head_promo: Tensor | None = None  # (head_hidden, H); None: no promotion inputs

    @classmethod
    def of(cls, net: LSTMNet, cached: PackedNet | None = None) -> PackedNet:
        """Pack `net`, or return `cached` when it was packed from these very weights (same
        net, parameters unchanged in place: training and load_state_dict bump versions)."""
        if (cached is not None and cached.net() is net
                and _versions(cached.params) == cached.versions):
            return cached
        params = tuple(net.parameters())
        with torch.no_grad():
            return cls._pack(net, params, _versions(params))

    @classmethod
    def _pack(cls, net: LSTMNet, params: tuple[Tensor, ...],
              versions: tuple[int, ...]) -> PackedNet:
        lstm, hidden = net.lstm, net.config.hidden
        cells = []
        for layer in range(lstm.num_layers):
            w = torch.cat([getattr(lstm, f"weight_ih_l{layer}"),
                           getattr(lstm, f"weight_hh_l{layer}")], dim=1)
            b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
            w, b = w.clone(), b.clone()
            w[2 * hidden : 3 * hidden] *= 2.0  # cell gate: tanh via sigmoid (see module doc)
            b[2 * hidden : 3 * hidden] *= 2.0
            cells.append((w.contiguous(), b.contiguous()))
        q, big_h = net.n_levels, net.horizon
        cfg = net.config
        prior = bool(getattr(net, "prior", False))
        unpacked = cls(weakref.ref(net), params, versions, tuple(cells), hidden,
                       None, None, None, None, None, None, big_h, q, prior)
        first, act, last = (*net.head, None, None, None)[:3]
        n_common = future_dim(big_h, cfg.head_calendar, cfg.head_annual, cfg.head_month,
                              cfg.head_month_pairs)
        n_year = year_ago_dim(big_h) if cfg.year_ago else 0
        n_promo = big_h if cfg.promo_inputs else 0
        if not (cfg.loss == "pinball" and len(net.head) == 3
                and isinstance(first, nn.Linear) and isinstance(act, nn.ReLU)
                and isinstance(last, nn.Linear)
                and prior == (cfg.year_ago and cfg.year_ago_prior)
                and net.per_step == 2 * q + 1 + int(prior)
                and first.in_features == hidden + n_common + n_promo + n_year):
            return unpacked._probed(net)
        w1 = first.weight.detach()
        per = net.per_step
        rows = [h * per + j for h in range(big_h) for j in range(2 * q)]
        rows += [h * per + 2 * q for h in range(big_h)]
        if prior:  # the gate of each step's year-ago multiplier
            rows += [h * per + 2 * q + 1 for h in range(big_h)]
        width = -(-len(rows) // _PAD) * _PAD
        w2 = last.weight.new_zeros(width, last.in_features)
        b2 = last.bias.new_zeros(width)
        idx = torch.as_tensor(rows, device=w2.device)
        w2[: len(rows)] = last.weight.detach().index_select(0, idx)
        b2[: len(rows)] = last.bias.detach().index_select(0, idx)
        flags = hidden + n_common  # the promotion columns, then the year-ago ones
        packed = cls(weakref.ref(net), params, versions, tuple(cells), hidden,
                     w1[:, :hidden].contiguous(),
                     w1[:, hidden : hidden + n_common].contiguous(),
                     w1[:, flags + n_promo :].contiguous() if n_year else None,
                     first.bias.detach().clone(), w2, b2, big_h, q, prior,
                     head_promo=(w1[:, flags : flags + n_promo].contiguous() if n_promo
                                 else None))
        return packed._probed(net)

    def _probed(self, net: LSTMNet) -> PackedNet:
        """This packing with the parts that disagree with `net` on a random probe switched
        off (logged: it means the layout assumptions no longer hold for this net)."""
        was_training = net.training
        net.eval()  # no dropout in the reference
        try:
            return self._probe(net)
        finally:
            net.train(was_training)

    def _probe(self, net: LSTMNet) -> PackedNet:
        gen = torch.Generator(device="cpu").manual_seed(0)
        device = self.cells[0][0].device
        n, u, lstm = 16, 3, net.lstm

        def rand(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=gen).to(device)

        x = rand(n, lstm.input_size) * 4 - 2
        h0, c0 = rand(lstm.num_layers, n, self.hidden) - 0.5, rand(lstm.num_layers, n,
                                                                    self.hidden) - 0.5
        _, (h_ref, c_ref) = net.lstm(x[:, None], (h0, c0))
        h, c = self._step(x, h0, c0)
        out = self
        if not (_close(h, h_ref) and _close(c, c_ref)):
            log.warning("packed LSTM step differs from nn.LSTM; using nn.LSTM")
            out = replace(out, step_packed=False)
        if not self.head_packed:
            return out
        assert self.head_future is not None
        future = rand(u, self.head_future.shape[1])
        inverse = torch.arange(n, device=device) % u
        year = None
        if self.head_year is not None:
            year = rand(n, self.head_year.shape[1]) * 3
            year[:, -1] = (torch.arange(n, device=device) % 2).float()  # known or not
        promo = None
        if self.head_promo is not None:
            promo = (rand(n, self.horizon) > 0.5).float()
        full = torch.cat([part for part in (future[inverse], promo, year) if part is not None],
                         dim=1)
        top, scale = h_ref[-1], rand(n) + 0.5
        # Not rounded (integer=False): a float32 hair at x.5 would round apart.
        ref = reference_quantiles(net, top, full, scale, integer=False)
        got = self.quantiles(top, future, inverse, scale, year=year, promo=promo,
                             integer=False)
        if not _close(got.float(), ref, tol=1e-4):
            log.warning("packed LSTM head differs from LSTMNet's; using LSTMNet's")
            return replace(out, head_top=None, out_weight=None)
        return out

    @property
    def head_packed(self) -> bool:
        """Whether `quantiles` can serve this net (else use LSTMNet's own head)."""
        return self.out_weight is not None

    def step(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One bucket through every layer: x (n, F), h and c (layers, n, hidden) -> new (h, c).
        Equals `nn.LSTM` on a length-1 sequence."""
        n = x.shape[0]
        if n <= _CHUNK_ROWS:
            return self._step(x, h, c)
        h_out = empty(tuple(h.shape), h.dtype, h.device)
        c_out = empty(tuple(c.shape), c.dtype, c.device)
        for lo in range(0, n, _CHUNK_ROWS):  # row blocks whose temporaries stay in cache
            hi = min(lo + _CHUNK_ROWS, n)
            h_out[:, lo:hi], c_out[:, lo:hi] = self._step(x[lo:hi], h[:, lo:hi], c[:, lo:hi])
        return h_out, c_out

    def run(self, x: Tensor, start: NDArray[np.intp]) -> tuple[Tensor, Tensor]:
        """Encode windows from a zero state: x (n, T, F), series i from column `start[i]` on
        (its state stays zero before: the windows are right-aligned, not packed) -> the final
        (h, c), each (layers, n, hidden). Equals `nn.LSTM` over each row's [start, T)."""
        n, length = x.shape[0], x.shape[1]
        shape = (len(self.cells), n, self.hidden)
        h_out, c_out = empty(shape, x.dtype, x.device), empty(shape, x.dtype, x.device)
        for lo in range(0, n, _CHUNK_ROWS):  # a block's state stays in cache for all steps
            hi = min(lo + _CHUNK_ROWS, n)
            first = start[lo:hi]
            h = x.new_zeros(shape[0], hi - lo, shape[2])
            c = x.new_zeros(shape[0], hi - lo, shape[2])
            begin, last_start = int(first.min()), int(first.max())
            late = torch.as_tensor(first, device=x.device)[None, :, None]
            for t in range(begin, length):
                h, c = self._step(x[lo:hi, t], h, c)
                if t < last_start:  # rows that have not started stay at zero
                    started = late <= t
                    h, c = h.mul_(started), c.mul_(started)
            h_out[:, lo:hi], c_out[:, lo:hi] = h, c
        return h_out, c_out

    def _step(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.hidden
        inp = x
        hs, cs = [], []
        for layer, (w, b) in enumerate(self.cells):
            gates = nn.functional.linear(torch.cat([inp, h[layer]], dim=1), w, b).sigmoid_()
            i, f = gates[:, :hidden], gates[:, hidden : 2 * hidden]
            g, o = gates[:, 2 * hidden : 3 * hidden], gates[:, 3 * hidden :]
            g = g.mul_(2.0).sub_(1.0)  # tanh of the cell gate
            c_new = torch.addcmul(f * c[layer], i, g)
            h_new = torch.sigmoid(c_new * 2.0).mul_(2.0).sub_(1.0).mul_(o)
            hs.append(h_new)
            cs.append(c_new)
            inp = h_new
        if len(hs) == 1:
            return hs[0].unsqueeze(0), cs[0].unsqueeze(0)
        return torch.stack(hs), torch.stack(cs)

    def quantiles(self, top: Tensor, future: Tensor, inverse: Tensor | None,
                  scale: Tensor, *, year: Tensor | None = None,
                  promo: Tensor | None = None, integer: bool) -> Tensor:
        """The forecast of series with top hidden state `top` (n, hidden) and scale (n,):
        (n, H, 2Q + 1) float64 [daily quantiles | cumulative quantiles | mean], clipped at
        0, cumulative non-decreasing over steps, rounded when `integer`.

        `future` (u, future_dim) holds the future features of u distinct rows (origins,
        with and without the calendar mask) and `inverse` (n,) which one each series has
        (None: u == 1, the same for all); `year` (n, year_ago_dim) the year-ago features
        of each series when the net has them; `promo` (n, H) each series' planned-promotion
        flags of the forecast days when the net reads them (None: no promotion planned)."""
        assert self.head_future is not None and self.head_bias is not None
        if (year is None) != (self.head_year is None):
            raise ValueError("year-ago features must be given exactly when the net uses them")
        if promo is not None and self.head_promo is None:
            raise ValueError("promotion flags given to a net without promotion inputs")
        n, q, big_h = top.shape[0], self.n_levels, self.horizon
        per_origin = nn.functional.linear(future, self.head_future, self.head_bias)
        out = empty((n, big_h, 2 * q + 1), torch.float64, top.device)
        for lo in range(0, n, _CHUNK_ROWS):  # row blocks whose temporaries stay in cache
            hi = min(lo + _CHUNK_ROWS, n)
            base = (per_origin if inverse is None
                    else per_origin.index_select(0, inverse[lo:hi]))
            if promo is not None:
                assert self.head_promo is not None
                base = torch.addmm(base, promo[lo:hi], self.head_promo.t())
            part = None if year is None else year[lo:hi]
            if part is not None:
                assert self.head_year is not None
                base = torch.addmm(base, part, self.head_year.t())
            self._quantiles(top[lo:hi], base, part, scale[lo:hi], out[lo:hi], integer)
        return out

    def _quantiles(self, top: Tensor, base: Tensor, year: Tensor | None, scale: Tensor,
                   out: Tensor, integer: bool) -> None:
        assert self.head_top is not None and self.out_weight is not None
        assert self.out_bias is not None
        n, q, big_h = top.shape[0], self.n_levels, self.horizon
        hid = torch.addmm(base, top, self.head_top.t()).relu_()
        raw = nn.functional.linear(hid, self.out_weight, self.out_bias)  # (n, padded)
        width = big_h * 2 * q
        first = raw[:, :width].view(n, big_h, 2, q)[..., 0].clone()  # bases stay raw
        soft = nn.functional.softplus(raw)  # contiguous: faster than the slice that is used
        soft_blocks = soft[:, :width].view(n, big_h, 2, q)
        soft_blocks[..., 0] = first
        quant = torch.cumsum(soft_blocks, dim=-1).clamp_(min=0.0)  # (n, H, 2, Q)
        mean = soft[:, width : width + big_h]
        prev = quant[:, 0, 0]  # cumulative >= the first day's demand, non-decreasing over steps
        factor: Tensor = scale[:, None, None, None]  # of the (n, H, 2, Q) quantile blocks
        mean_factor: Tensor = scale[:, None]
        if self.prior:  # LSTMNet.head_raw's gated year-ago multiplier of daily and mean
            assert year is not None
            shape = year[:, -big_h - 1 : -1].clamp(0.2, 5.0).log_().mul_(year[:, -1:])
            gate = raw[:, width + big_h : width + 2 * big_h].sigmoid()
            mult = gate.mul_(shape).exp_()  # (n, H)
            prev = prev * mult[:, :1]
            mean_factor = mult.mul_(mean_factor)  # scale x multiplier: daily and mean
            factor = torch.stack([mean_factor, scale[:, None].expand(n, big_h)], dim=2)[..., None]
        for step in quant[:, :, 1].unbind(1):  # one call for all the step views
            torch.maximum(step, prev, out=step)
            prev = step
        torch.mul(quant, factor, out=out[..., : 2 * q].view(n, big_h, 2, q))
        if integer:  # quantiles of counts are counts
            out[..., : 2 * q].round_()
        torch.mul(mean, mean_factor, out=out[..., 2 * q])


def reference_quantiles(net: LSTMNet, top: Tensor, future: Tensor, scale: Tensor, *,
                        integer: bool) -> Tensor:
    """`PackedNet.quantiles` through `LSTMNet`'s own head: top (n, hidden), future (n, all
    head inputs besides the state), scale (n,) -> (n, H, 2Q + 1) float32, the same
    post-processing (clipped at 0, scaled, rounded when `integer`, cumulative >= the
    first day and non-decreasing over steps)."""
    daily, cum, mean = net.quantiles(net.head_raw(top, future))
    s = scale[:, None, None]
    daily = daily.clamp(min=0.0) * s
    cum = cum.clamp(min=0.0) * s
    if integer:  # quantiles of counts are counts
        daily, cum = torch.round(daily), torch.round(cum)
    cum = torch.maximum(cum, daily[:, :1])
    for h in range(1, cum.shape[1]):  # running max over steps; faster than torch.cummax
        torch.maximum(cum[:, h], cum[:, h - 1], out=cum[:, h])
    mean = mean.clamp(min=0.0) * scale[:, None]
    return torch.cat([daily, cum, mean[..., None]], dim=-1)


def _close(a: Tensor, b: Tensor, tol: float = 1e-5) -> bool:
    return bool(torch.allclose(a, b, rtol=tol, atol=tol))
