"""Long-format demand CSVs (unique_id, ds, y; gz ok) loaded into a dense daily panel."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from forecasting._numeric import FloatArray
from forecasting.covariates import (
    COVARIATE_COLUMNS,
    COVARIATE_DEFAULTS,
    HOLIDAY_COLUMNS,
    Covariates,
    holiday_value,
)
from forecasting.errors import ForecastingError

__all__ = ["CENSOR_COLUMN", "DataFormatError", "Panel", "load_panel"]

ID_SEPARATOR = "/"

CENSOR_COLUMN = "stockout_hours"
"""The column that marks censored days (FreshRetailNet): hours of the day the item was out of
stock. A day with any stock-out hour (> 0) is censored: its sales are a lower bound of its
demand. One rule for every set, not tuned (the other real sets have no such column)."""


class DataFormatError(ForecastingError):
    """A demand file whose columns, dates or values cannot be read; `path` says which file."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(f"{path}: {message}" if path is not None else message)
        self.path = path


@dataclass(frozen=True)
class Panel:
    """Many daily demand series on one date grid.

    Attributes:
        ids: (n,) series names; multi-column ids are joined with "/" (e.g. "store/item").
        start: the date of column 0 (numpy datetime64[D]).
        values: (n, T) demand per series and day, NaN where the file has no row (before a
            series starts, or a gap). Column t is the day start + t.
        covariates: known-in-advance covariates of the same series (planned promotions,
            price ratio), or None. Their grid may run past the demand's last day: `head`
            keeps all of it, since a promotion planned for tomorrow is known today.
        censored: (n, T) True on days whose observed sales understate demand (a stock-out:
            `CENSOR_COLUMN`), or None: no stock-out information (every day as observed).
            Training may read it (`LSTMConfig.censored_loss`); scoring never does.
    """

    ids: tuple[str, ...]
    start: np.datetime64
    values: FloatArray
    covariates: Covariates | None = None
    censored: NDArray[np.bool_] | None = None

    @property
    def n_series(self) -> int:
        """Number of series."""
        return int(self.values.shape[0])

    @property
    def n_days(self) -> int:
        """Number of days on the grid."""
        return int(self.values.shape[1])

    @property
    def dates(self) -> NDArray[np.datetime64]:
        """(T,) the date of each column."""
        return self.start + np.arange(self.n_days).astype("timedelta64[D]")

    def fingerprint(self) -> str:
        """sha256 of ids, start date and values: what a trained artifact was fitted on."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.ids).encode())
        digest.update(str(self.start).encode())
        digest.update(np.ascontiguousarray(self.values, dtype=np.float64).tobytes())
        if self.covariates is not None:  # a panel without covariates keeps its old digest
            cov = self.covariates
            digest.update(f"covariates {cov.start}".encode())
            digest.update(np.ascontiguousarray(cov.promo, dtype=np.float64).tobytes())
            digest.update(np.ascontiguousarray(cov.price_ratio, dtype=np.float64).tobytes())
        return digest.hexdigest()

    @classmethod
    def from_histories(cls, series: Sequence[NDArray[np.floating]],
                       end_day: np.datetime64) -> Panel:
        """Histories that all end on `end_day`, right-aligned on one grid (NaN before each
        starts); series are named "0", "1", ... in order."""
        length = max(len(s) for s in series)
        values = np.full((len(series), length), np.nan)
        for i, s in enumerate(series):
            values[i, length - len(s):] = np.asarray(s, dtype=np.float64)
        start = end_day - np.timedelta64(length - 1, "D")
        return cls(tuple(str(i) for i in range(len(series))), start, values)

    def head(self, n_days: int) -> Panel:
        """The first `n_days` columns (a training cut-off); the covariates stay whole
        (known in advance)."""
        if not 0 < n_days <= self.n_days:
            raise ValueError(f"n_days must be in 1..{self.n_days}, got {n_days}")
        cens = None if self.censored is None else self.censored[:, :n_days]
        return Panel(self.ids, self.start, self.values[:, :n_days], self.covariates, cens)

    def subset(self, rows: Sequence[int] | NDArray[np.integer]) -> Panel:
        """The series at positions `rows`."""
        idx = np.asarray(rows, dtype=np.intp)
        cov = None if self.covariates is None else self.covariates.subset(idx)
        cens = None if self.censored is None else self.censored[idx]
        return Panel(tuple(self.ids[i] for i in idx), self.start, self.values[idx], cov, cens)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return io.TextIOWrapper(open(path, "rb"), encoding="utf-8", newline="")


def load_panel(
    path: str | Path,
    *,
    id_cols: Sequence[str] | None = None,
    date_col: str | None = None,
    target_col: str | None = None,
    max_series: int | None = None,
    covariates: bool = False,
) -> Panel:
    """Read a long CSV (one row per series and day) into a dense daily Panel.

    Column names default to `unique_id, ds, y`; when those are absent, the Kaggle store-item
    layout `store, item, date, sales` is recognised (id = "store/item"), so both shared
    datasets load with no options. Dates are ISO `YYYY-MM-DD` (a time part is ignored).
    Duplicate (id, day) rows are summed. `max_series` keeps the first N ids in sorted order
    (smoke runs). `covariates`: also read the known-in-advance covariates the file has
    (`forecasting.covariates`: promotion flag, price ratio; with either, the data's own
    holiday column too) into `Panel.covariates`; a file with neither column gives None.
    Days without a row take the covariates' defaults.
    With `covariates`, a file with a `CENSOR_COLUMN` column also gives `Panel.censored`
    (days with stock-out hours > 0; None when the column is absent or no day has one).
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError("file not found", path)
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError("empty file", path) from None
        header = [h.strip() for h in header]
        ids, date_name, target_name = _resolve_columns(header, id_cols, date_col, target_col, path)
        id_idx = [header.index(c) for c in ids]
        d_idx, y_idx = header.index(date_name), header.index(target_name)
        cov_idx = _covariate_columns(header) if covariates else {}
        cov_raw: dict[str, list[str]] = {name: [] for name in cov_idx}
        # the data's own holiday column, with the covariates it rides along with
        h_idx = next((header.index(c) for c in HOLIDAY_COLUMNS if c in header), -1)
        h_idx = h_idx if cov_idx else -1
        holidays: list[str] = []
        c_idx = header.index(CENSOR_COLUMN) if covariates and CENSOR_COLUMN in header else -1
        stockout: list[str] = []
        keys: list[str] = []
        days: list[str] = []
        ys: list[str] = []
        single = id_idx[0] if len(id_idx) == 1 else -1
        for row in reader:
            if not row:
                continue
            keys.append(row[single] if single >= 0 else ID_SEPARATOR.join(row[i] for i in id_idx))
            days.append(row[d_idx][:10])
            ys.append(row[y_idx])
            for name, i in cov_idx.items():
                cov_raw[name].append(row[i])
            if c_idx >= 0:
                stockout.append(row[c_idx])
            if h_idx >= 0:
                holidays.append(row[h_idx])
    if not keys:
        raise DataFormatError("no data rows", path)
    try:
        day_arr = np.array(days, dtype="datetime64[D]")
        y_arr = np.array([float(v) if v != "" else np.nan for v in ys], dtype=np.float64)
    except ValueError as exc:
        raise DataFormatError(f"bad date or value: {exc}", path) from None
    uniq, inverse = np.unique(np.array(keys), return_inverse=True)
    order = _natural_order(uniq)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    rows = rank[inverse]
    start = day_arr.min()
    cols = (day_arr - start).astype(np.int64)
    values = np.full((uniq.size, int(cols.max()) + 1), np.nan)
    finite = np.isfinite(y_arr)
    summed = np.zeros_like(values)
    seen = np.zeros(values.shape, dtype=bool)
    np.add.at(summed, (rows[finite], cols[finite]), y_arr[finite])
    seen[rows[finite], cols[finite]] = True
    values = np.where(seen, summed, np.nan)
    if np.any(values < 0):
        raise DataFormatError("negative demand values (clip or net them first)", path)
    names = tuple(str(uniq[i]) for i in order)
    cov = _covariate_grid(cov_raw, rows, cols, values.shape, start, path) if cov_raw else None
    if cov is not None and holidays:
        grid = np.zeros(values.shape)
        grid[rows, cols] = np.fromiter((holiday_value(v) for v in holidays), np.float64,
                                       len(holidays))
        cov = dataclasses.replace(cov, holiday=grid)
    cens = _censored_grid(stockout, rows, cols, values.shape, path) if stockout else None
    panel = Panel(names, start, values, cov, cens)
    if max_series is not None and max_series < panel.n_series:
        panel = panel.subset(np.arange(max_series))
    return panel


def _covariate_columns(header: list[str]) -> dict[str, int]:
    """{covariate: column index} for the covariates `header` has (first matching name)."""
    found: dict[str, int] = {}
    for name, candidates in COVARIATE_COLUMNS.items():
        for col in candidates:
            if col in header:
                found[name] = header.index(col)
                break
    return found


def _covariate_grid(raw: dict[str, list[str]], rows: NDArray[np.intp],
                    cols: NDArray[np.int64], shape: tuple[int, ...], start: np.datetime64,
                    path: Path) -> Covariates:
    """The covariates' (n, T) grids; a day without a row (or an empty cell) takes the
    default, a covariate the file lacks is its default everywhere."""
    grids: dict[str, FloatArray] = {}
    for name, default in COVARIATE_DEFAULTS.items():
        grid = np.full(shape, default)
        if name in raw:
            try:
                vals = np.array([float(v) if v != "" else np.nan for v in raw[name]])
            except ValueError as exc:
                raise DataFormatError(f"bad {name} value: {exc}", path) from None
            ok = np.isfinite(vals)
            if name == "promo":
                vals = (vals > 0).astype(np.float64)
            grid[rows[ok], cols[ok]] = vals[ok]
        grids[name] = grid
    return Covariates(start, grids["promo"], grids["price_ratio"])


def _censored_grid(raw: list[str], rows: NDArray[np.intp], cols: NDArray[np.int64],
                   shape: tuple[int, ...], path: Path) -> NDArray[np.bool_] | None:
    """(n, T) True on days with stock-out hours > 0 (an empty cell or no row: not censored);
    None when no day is."""
    try:
        hours = np.array([float(v) if v != "" else 0.0 for v in raw])
    except ValueError as exc:
        raise DataFormatError(f"bad {CENSOR_COLUMN} value: {exc}", path) from None
    grid = np.zeros(shape, dtype=bool)
    hit = hours > 0
    grid[rows[hit], cols[hit]] = True
    return grid if bool(grid.any()) else None


def _natural_order(names: NDArray[np.str_]) -> NDArray[np.intp]:
    """Sort ids so "2/10" follows "2/9": numeric parts compare as numbers."""

    def key(name: str) -> tuple[tuple[int, int | str], ...]:
        parts = name.split(ID_SEPARATOR)
        return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)

    return np.array(sorted(range(names.size), key=lambda i: key(str(names[i]))), dtype=np.intp)


def _resolve_columns(
    header: list[str],
    id_cols: Sequence[str] | None,
    date_col: str | None,
    target_col: str | None,
    path: Path,
) -> tuple[list[str], str, str]:
    store_item = {"store", "item", "date", "sales"} <= set(header)
    if id_cols is None:
        id_cols = ["store", "item"] if store_item and "unique_id" not in header else ["unique_id"]
    if date_col is None:
        date_col = "date" if store_item and "ds" not in header else "ds"
    if target_col is None:
        target_col = "sales" if store_item and "y" not in header else "y"
    missing = [c for c in [*id_cols, date_col, target_col] if c not in header]
    if missing:
        raise DataFormatError(
            f"missing column(s) {missing}; header is {header} "
            "(pass --id-cols/--date-col/--target-col)",
            path,
        )
    return list(id_cols), date_col, target_col
