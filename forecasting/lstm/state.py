"""SeriesState: what the LSTM carries per series between buckets (h, c, running scale, day
ring); below the forecaster, which makes and reads it, and the keyed store (slots.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from forecasting.lstm.features import DayRing, ScaleState

__all__ = ["DateArray", "SeriesState"]

DateArray = NDArray[np.datetime64]


@dataclass
class SeriesState:
    """What the LSTM carries per series between buckets (a batch of series).

    h, c: (layers, n, hidden) float32 recurrent state after the last bucket seen.
    scale: running demand level and observation count (see features.ScaleState).
    last_day: (n,) date of the last bucket folded in.
    ring: the last features.RING_DAYS bucket values, for the year-ago features (None when
    the model does not use them); from a `slots.StateSlots` store, a view of its rows.
    A series with count 0 has no history yet: its h, c are zeros and it forecasts zero.
    """

    h: torch.Tensor
    c: torch.Tensor
    scale: ScaleState
    last_day: DateArray
    ring: DayRing | None = None

    @property
    def n_series(self) -> int:
        """Number of series in the batch."""
        return int(self.scale.count.shape[0])

    def take(self, rows: NDArray[np.intp] | Sequence[int]) -> SeriesState:
        """The states of series `rows` (a copy)."""
        idx = np.asarray(rows, dtype=np.intp)
        t_idx = torch.as_tensor(idx, device=self.h.device)
        return SeriesState(
            self.h[:, t_idx].clone(), self.c[:, t_idx].clone(),
            ScaleState(self.scale.level[idx].copy(), self.scale.count[idx].copy()),
            self.last_day[idx].copy(),
            None if self.ring is None else self.ring.take(idx),
        )
