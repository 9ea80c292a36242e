"""The durable form of one series' LSTM state: a fixed-layout binary record ("blob") per key.

A stream changelogs each SKU's carried state with the rest of its state, so a worker that
recovers a partition resumes every SKU exactly where the dead one stopped: no re-encode, no
warm-up. The record is the slot arrays of `slots.StateSlots` for one row, little-endian,
packed (a numpy structured dtype: a batch of records encodes and decodes with one
`tobytes` / `frombuffer`, no per-field Python):

    offset  size   field
    0       1      format      FORMAT (1); a record of another format is not read
    1       1      flags       bit 0: the day ring follows
    2       1      layers      LSTM layers L
    3       1      reserved    0
    4       2      hidden      hidden units H
    6       2      ring_pos    slot of the ring's oldest day
    8       4      last_day    int32 days since 1970-01-01 of the last bucket folded in
    12      8      model       fingerprint of the weights and inputs that made h, c
    20      8      level       float64 running demand level (features.ScaleState)
    28      8      count       float64 observed buckets so far
    36      4LH    h           float32 (L, H) hidden state
    .       4LH    c           float32 (L, H) cell state
    .       4R     ring        float32 the last R = RING_DAYS bucket values (year-ago inputs),
                               circular, oldest at ring_pos; NaN = missing / before first
                               (2R: float16, flags bit 1, when every value of the ring is
                               exactly a float16: counts up to 2,048, halves, NaN)

H = 64, L = 1: 548 bytes, 2,116 with the ring (R = 392), 1,332 with a float16 ring. float32
h, c and ring are what the store holds; level and count stay float64, and a ring is written
as float16 only when that is exact, so a restored state is bit-identical. Why float16: the
ring is three quarters of a record, and unit demand of a day rarely exceeds 2,048: the
changelog (and a recovery's fetch) of typical SKUs shrinks by a fifth; turnover-like demand
(Rossmann's) keeps float32 rings.

`model` says whose state it is: h and c mean something only to the weights that made them.
A record of another model is not imported; its ring (raw demand, model-free) still gives
that series' last 392 days, which the inferencer re-encodes with the new weights
(`history`), far more than the stream's window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from forecasting.lstm.config import LSTMConfig
from forecasting.lstm.features import RING_DAYS

if TYPE_CHECKING:  # torch stays out of the numpy serving path (numpy_net.py)
    from forecasting.lstm.model import LSTMNet

__all__ = ["FORMAT", "HEADER_BYTES", "RING16_FLAG", "RING_FLAG", "blob_dtype", "fingerprint",
           "half_exact", "header", "history", "record", "weights_fingerprint"]

FORMAT = 1
RING_FLAG = 1
RING16_FLAG = 2  # the ring is stored as float16 (exact: every value is one)
NO_DAY_INT = np.iinfo(np.int32).min  # last_day of a state that has none (NaT)

_HEADER_FIELDS: list[tuple[str, str]] = [
    ("format", "u1"), ("flags", "u1"), ("layers", "u1"), ("reserved", "u1"),
    ("hidden", "<u2"), ("ring_pos", "<u2"), ("last_day", "<i4"), ("model", "<u8"),
]
HEADER_DTYPE = np.dtype(_HEADER_FIELDS)
HEADER_BYTES = HEADER_DTYPE.itemsize  # 20


def blob_dtype(layers: int, hidden: int, ring: bool, half: bool = False) -> np.dtype:
    """The record layout of a state of L = `layers`, H = `hidden` (with the day ring or not;
    `half`: the ring as float16)."""
    fields: list[tuple[str, str] | tuple[str, str, tuple[int, ...]]] = [
        *_HEADER_FIELDS, ("level", "<f8"), ("count", "<f8"),
        ("h", "<f4", (layers * hidden,)), ("c", "<f4", (layers * hidden,))]
    if ring:
        fields.append(("ring", "<f2" if half else "<f4", (RING_DAYS,)))
    return np.dtype(fields)


def half_exact(rings: NDArray[np.float32]) -> NDArray[np.bool_]:
    """(n,) whether each row of `rings` (n, R) is exactly a float16 row (NaN counts as one)."""
    back = rings.astype(np.float16).astype(np.float32)
    exact: NDArray[np.bool_] = ((back == rings) | np.isnan(rings)).all(axis=1)
    return exact


def record(blob: bytes) -> np.void | None:
    """One record's fields in the layout its header names (the ring as stored: float16 or
    float32); None: of another format, or not as long as its layout."""
    head = header(blob)
    if head is None:
        return None
    flags = int(head["flags"])
    dtype = blob_dtype(int(head["layers"]), int(head["hidden"]), bool(flags & RING_FLAG),
                       bool(flags & RING16_FLAG))
    if len(blob) != dtype.itemsize:
        return None
    rec: np.void = np.frombuffer(blob, dtype=dtype, count=1)[0]
    return rec


def fingerprint(net: LSTMNet, log_scale_mean: float, log_scale_std: float) -> int:
    """64-bit fingerprint of everything that shapes a carried state: the weights, the config
    (inputs, scale memory) and the input normalisation. Equal across processes and devices
    for equal weights (a recovered worker that loaded the same artifact agrees)."""
    import torch

    with torch.no_grad():
        weights = {name: tensor.detach().to("cpu", torch.float32).contiguous().numpy()
                   for name, tensor in net.state_dict().items()}
    return weights_fingerprint(net.config, weights, log_scale_mean, log_scale_std)


def weights_fingerprint(config: LSTMConfig, weights: Mapping[str, NDArray[np.generic]],
                        log_scale_mean: float, log_scale_std: float) -> int:
    """`fingerprint` of weights given as float32 arrays by state_dict name, in state_dict
    order (the numpy backend's: a state written by either backend is read by the other)."""
    digest = hashlib.blake2b(digest_size=8)
    fields = asdict(config)
    if not fields["promo_inputs"]:  # off: the fingerprint (durable states) of before it
        del fields["promo_inputs"]
    if not fields["data_holidays"]:  # likewise
        del fields["data_holidays"]
    if fields["censored_loss"] == "none":  # likewise: a training-only knob, off
        del fields["censored_loss"]
    if fields["year_ago_gaps"] == "zero":  # likewise (the inputs of before it)
        del fields["year_ago_gaps"]
    digest.update(f"{FORMAT}|{sorted(fields.items())}|"
                  f"{log_scale_mean!r}|{log_scale_std!r}".encode())
    for name, array in weights.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return int.from_bytes(digest.digest(), "little")


def header(blob: bytes) -> np.void | None:
    """The header fields of one record (None: too short or of another format)."""
    if len(blob) < HEADER_BYTES or blob[0] != FORMAT:
        return None
    rec: np.void = np.frombuffer(blob, dtype=HEADER_DTYPE, count=1)[0]
    return rec


def history(blobs: Sequence[bytes | None]) -> tuple[NDArray[np.float64], NDArray[np.datetime64]]:
    """The demand history each record carries, whatever model wrote it: (n, RING_DAYS) the
    ring's days oldest first (NaN: missing or none) and (n,) the day of its last column
    (NaT for a record without a ring, of another format, or None)."""
    n = len(blobs)
    values = np.full((n, RING_DAYS), np.nan)
    ends = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    for i, blob in enumerate(blobs):
        rec = None if blob is None else record(blob)
        if (rec is None or not int(rec["flags"]) & RING_FLAG
                or int(rec["last_day"]) == NO_DAY_INT):
            continue
        values[i] = np.roll(rec["ring"], -int(rec["ring_pos"]))
        ends[i] = np.datetime64(int(rec["last_day"]), "D")
    return values, ends
