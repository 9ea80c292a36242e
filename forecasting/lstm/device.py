"""Where the LSTM runs: the torch device a request like "auto" resolves to.

Below the forecaster and training modules, which both need it (so neither imports the other
for it).
"""

from __future__ import annotations

import torch

__all__ = ["auto_device"]


def auto_device(requested: str = "auto") -> torch.device:
    """CUDA when available (or asked for), else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
