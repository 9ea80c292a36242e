"""The torch network: an LSTM encoder over buckets and a direct multi-horizon quantile head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from forecasting.lstm.config import LSTMConfig, config_input_dim, head_future_dim

__all__ = ["LSTMConfig", "LSTMNet", "RecurrentState", "head_future_dim"]

RecurrentState = tuple[Tensor, Tensor]
"""(h, c), each (layers, n_series, hidden)."""


class LSTMNet(nn.Module):
    """LSTM over per-bucket inputs; a head maps the top hidden state at an origin bucket plus
    what is known of the next `horizon` days (holidays, months) to, in units of the series' scale:

    - daily quantiles (n, H, Q) and cumulative-demand quantiles (n, H, Q), each built as a
      base plus softplus increments so they never cross;
    - mean demand (n, H) >= 0.

    With loss="normal" the head instead emits a mean and a log-std per step and per
    cumulative step; quantiles then come from the normal distribution (the ablation).
    """

    def __init__(self, input_dim: int, config: LSTMConfig) -> None:
        super().__init__()
        if input_dim != config_input_dim(config):  # promo_inputs: one more input per day
            raise ValueError(f"input_dim {input_dim}: this config's inputs are "
                             f"{config_input_dim(config)} wide (config_input_dim)")
        self.config = config
        self.horizon = config.horizon
        self.n_levels = len(config.levels)
        self.lstm = nn.LSTM(input_dim, config.hidden, config.layers, batch_first=True)
        per_step = 2 * self.n_levels + 1 if config.loss == "pinball" else 5
        self.prior = config.year_ago and config.year_ago_prior and config.loss == "pinball"
        per_step += int(self.prior)  # the last channel: the log of the year-ago multiplier
        self.per_step = per_step
        self.head = nn.Sequential(
            nn.Linear(config.hidden + head_future_dim(config), config.head_hidden),
            nn.ReLU(),
            nn.Linear(config.head_hidden, config.horizon * per_step),
        )
        z = torch.special.ndtri(torch.tensor(config.levels))  # standard normal quantiles
        self.register_buffer("z", z, persistent=False)

    def encode(
        self, x: Tensor, state: RecurrentState | None = None
    ) -> tuple[Tensor, RecurrentState]:
        """x (n, T, F) -> top-layer outputs (n, T, hidden) and the final (h, c)."""
        out, (h, c) = self.lstm(x, state)
        return out, (h, c)

    def head_raw(self, top: Tensor, future: Tensor) -> Tensor:
        """(..., hidden) and (..., future_dim) -> (..., H, per_step) raw head outputs
        (`future` is features.future_features of the origin)."""
        if self.training and self.config.dropout > 0:
            top = nn.functional.dropout(top, self.config.dropout)
        raw: Tensor = self.head(torch.cat([top, future], dim=-1))
        raw = raw.reshape(*raw.shape[:-1], self.horizon, self.per_step)
        if not self.prior:
            return raw
        # features.year_ago_features ends the head's inputs: (..., shape (H), known flag).
        big_h = self.horizon
        shape = future[..., -big_h - 1 : -1].clamp(0.2, 5.0)
        log_prior = torch.log(shape) * future[..., -1:]
        gate = torch.sigmoid(raw[..., -1])
        return torch.cat([raw[..., :-1], (gate * log_prior)[..., None]], dim=-1)

    def quantiles(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw head outputs -> (daily (..., H, Q), cumulative (..., H, Q), mean (..., H)),
        scaled units, not yet clipped at 0 (the pinball loss needs the raw values)."""
        if self.config.loss == "pinball":
            q = self.n_levels
            # One softplus over the contiguous tensor: on CPU it is several times faster than
            # three calls on strided slices (the head's cost at inference was mostly this).
            soft = nn.functional.softplus(raw)
            daily = _monotone(raw[..., :q], soft[..., 1:q])
            cumulative = _monotone(raw[..., q : 2 * q], soft[..., q + 1 : 2 * q])
            mean = soft[..., 2 * q]
            if self.prior:  # head_raw put the log of the year-ago multiplier last
                mult = torch.exp(raw[..., 2 * q + 1])
                daily, mean = daily * mult[..., None], mean * mult
            return daily, cumulative, mean
        z: Tensor = self.z  # type: ignore[assignment]
        mu_d, sd_d = raw[..., 0], nn.functional.softplus(raw[..., 1]) + 1e-3
        mu_c, sd_c = raw[..., 2], nn.functional.softplus(raw[..., 3]) + 1e-3
        daily = mu_d[..., None] + sd_d[..., None] * z
        cumulative = mu_c[..., None] + sd_c[..., None] * z
        return daily, cumulative, nn.functional.softplus(raw[..., 4])


def _monotone(raw: Tensor, steps: Tensor) -> Tensor:
    """First value of `raw` free, then the non-negative increments `steps` (softplus of the
    rest of `raw`): non-decreasing along the last axis."""
    return torch.cat([raw[..., :1], raw[..., :1] + torch.cumsum(steps, dim=-1)], dim=-1)
