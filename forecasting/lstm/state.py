"""SeriesState: what the LSTM carries per series between buckets (h, c, running scale, day
ring); below the forecaster, which makes and reads it, and the keyed store (slots.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
from numpy.typing import NDArray

from forecasting.lstm.features import DayRing, ScaleState

if TYPE_CHECKING:  # the numpy backend (numpy_net.py) serves without torch
    import torch

__all__ = ["DateArray", "SeriesState", "StateArray"]

DateArray = NDArray[np.datetime64]
StateArray: TypeAlias = "torch.Tensor | NDArray[np.float32]"
"""h or c: a torch tensor (the torch backend) or a float32 array (the numpy backend)."""


@dataclass
class SeriesState:
    """What the LSTM carries per series between buckets (a batch of series).

    h, c: (layers, n, hidden) float32 recurrent state after the last bucket seen (torch
    tensors or numpy arrays, as the forecaster's backend computes).
    scale: running demand level and observation count (see features.ScaleState).
    last_day: (n,) date of the last bucket folded in.
    ring: the last features.RING_DAYS bucket values, for the year-ago features (None when
    the model does not use them); from a `slots.StateSlots` store, a view of its rows.
    A series with count 0 has no history yet: its h, c are zeros and it forecasts zero.
    """

    h: StateArray
    c: StateArray
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
        h: StateArray
        c: StateArray
        if isinstance(self.h, np.ndarray) and isinstance(self.c, np.ndarray):
            h, c = self.h[:, idx], self.c[:, idx]  # fancy indexing copies
        else:
            import torch

            assert isinstance(self.h, torch.Tensor) and isinstance(self.c, torch.Tensor)
            t_idx = torch.as_tensor(idx, device=self.h.device)
            h, c = self.h[:, t_idx].clone(), self.c[:, t_idx].clone()
        return SeriesState(
            h, c,
            ScaleState(self.scale.level[idx].copy(), self.scale.count[idx].copy()),
            self.last_day[idx].copy(),
            None if self.ring is None else self.ring.take(idx),
        )
