"""Fast decode of the hot input records (orders, stock) for the batch processor.

`schemas.decode` validates with the pydantic models, which costs ~40 us per record (model
construction and its after-validators). The stream only needs a few fields, so this module
parses with orjson and checks the contract by hand for the common, well-formed shape. It is
deliberately narrower than the models: it accepts a record only when every field is plainly
valid (ASCII keys, upper-case timestamps, exact JSON types) and returns None for anything
else, and the caller then decodes with the model, which gives the reason for the DLQ. So a
record is never accepted here that the model would refuse (tests/unit/test_streams_codec.py
checks this against the models on valid and mutated records).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from itertools import islice
from operator import attrgetter, mul
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import orjson

from schemas.events import MAX_QUANTITY

__all__ = ["FastOrder", "FastStock", "OrderColumns", "fast_order", "fast_stock", "order_columns",
           "order_columns_from", "stock_columns", "stock_columns_from"]

# sku/location: the models' `^[^@\s]+$`, narrowed to printable ASCII (Python's and the
# validator's ideas of Unicode whitespace differ; anything else takes the slow path)
_NAME = re.compile(r"[!-?A-~]{1,64}")
# `schemas.events.TIMESTAMP_PATTERN` in upper case (ASCII digits: Python's `\d` also takes
# other scripts' digits); fromisoformat and the year check do the rest (the calendar, hours,
# minutes, seconds), and lowercase t/z take the slow path, whose model decides
_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)")  # fromisoformat takes +05:60
_ORDER_TYPES = {"placed": 1, "cancelled": -1, "returned": -1}
_STOCK_TYPES = frozenset({"snapshot", "adjustment", "receipt"})
_ORDER_KEYS = frozenset({"event_id", "type", "sku", "location", "quantity", "occurred_at",
                         "unit_price", "order_id", "schema_version"})
_STOCK_KEYS = frozenset({"event_id", "type", "sku", "location", "on_hand", "delta",
                         "occurred_at", "restock_id", "schema_version"})
_UNITS_MAX = 1_000_000_000


class FastOrder(NamedTuple):
    event_id: str
    sku: str
    location: str
    occurred_at: float  # epoch seconds
    signed_quantity: int


class FastStock(NamedTuple):
    event_id: str
    type: str
    sku: str
    location: str
    occurred_at: float
    on_hand: int | None
    delta: int | None
    restock_id: str | None


def _obj(raw: bytes | None, max_bytes: int) -> dict[str, Any] | None:
    if raw is None or len(raw) > max_bytes:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if type(data) is dict else None


def _time(value: object) -> float | None:
    if type(value) is not str or not _TIME.fullmatch(value):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if not 1990 <= when.year <= 2100:
        return None
    return when.timestamp()


_good_names: set[str] = set()  # names that passed _NAME: a shop has few SKUs and locations


def _name(value: object) -> bool:
    if type(value) is not str:
        return False
    if value in _good_names:
        return True
    if not _NAME.fullmatch(value):
        return False
    if len(_good_names) >= 200_000:
        _good_names.clear()
    _good_names.add(value)
    return True


def _common(data: dict[str, Any]) -> tuple[str, str, str, float] | None:
    """event_id, sku, location, occurred_at — or None if any is not plainly valid."""
    event_id, sku, location = data.get("event_id"), data.get("sku"), data.get("location")
    if (type(event_id) is not str or not 1 <= len(event_id) <= 128
            or not _name(sku) or not _name(location)):
        return None
    assert isinstance(sku, str) and isinstance(location, str)  # _name checked; for mypy
    version = data.get("schema_version", 1)
    if type(version) is not int or version != 1:
        return None
    ts = _time(data.get("occurred_at"))
    if ts is None:
        return None
    return event_id, sku, location, ts


def _opt_str(data: dict[str, Any], key: str) -> bool:
    value = data.get(key)
    return value is None or type(value) is str


def fast_order(raw: bytes | None, max_bytes: int) -> FastOrder | None:
    """The order's fields, or None: decode it with `schemas.decode` instead."""
    data = _obj(raw, max_bytes)
    if data is None or not _ORDER_KEYS.issuperset(data):
        return None
    common = _common(data)
    kind = data.get("type")
    sign = _ORDER_TYPES.get(kind) if type(kind) is str else None
    qty = data.get("quantity")
    if common is None or sign is None or type(qty) is not int or not 0 < qty <= MAX_QUANTITY:
        return None
    price = data.get("unit_price")
    if price is not None and (type(price) not in (int, float) or not price >= 0):
        return None
    if not _opt_str(data, "order_id"):
        return None
    return FastOrder(common[0], common[1], common[2], common[3], sign * qty)


def fast_stock(raw: bytes | None, max_bytes: int) -> FastStock | None:
    """The stock event's fields, or None: decode it with `schemas.decode` instead."""
    data = _obj(raw, max_bytes)
    if data is None or not _STOCK_KEYS.issuperset(data):
        return None
    common = _common(data)
    kind = data.get("type")
    if (common is None or type(kind) is not str or kind not in _STOCK_TYPES
            or not _opt_str(data, "restock_id")):
        return None
    on_hand, delta = data.get("on_hand"), data.get("delta")
    if kind == "snapshot":
        if type(on_hand) is not int or not 0 <= on_hand <= _UNITS_MAX or delta is not None:
            return None
    else:
        if type(delta) is not int or not -MAX_QUANTITY <= delta <= MAX_QUANTITY:
            return None
        if on_hand is not None or (kind == "receipt" and delta <= 0):
            return None
    return FastStock(common[0], str(kind), common[1], common[2], common[3], on_hand, delta,
                     data.get("restock_id"))


class OrderColumns(NamedTuple):
    """A run of orders decoded at once: one list per field, `fast_order`'s values."""

    event_id: list[str]
    sku: list[str]
    location: list[str]
    occurred_at: list[float]
    signed_quantity: list[int]


# the shapes `_TIME` accepts, every ASCII digit written as "0": a run's timestamps are checked
# by mapping its digits to "0" in one bytes.translate and looking each result up here
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_TIME_SHAPES = frozenset(
    f"0000-00-00{separator}00:00:00{fraction}{zone}".encode()
    for separator in "T "
    for fraction in ["", *("." + "0" * n for n in range(1, 10))]
    for zone in ("Z", "+00:00", "-00:00", "+0000", "-0000", "+00", "-00"))


# offset minutes 60-99, which fromisoformat reads (`+05:60` as 6:00) and the contract refuses;
# one scan of a run's joined timestamps (hours 24 and over: fromisoformat raises, as a
# `timezone` is under a day; the shape check fixed the digit counts)
_BAD_ZONE = re.compile(r"[+-][0-9]{2}:?[6-9][0-9](?:\n|$)")


class _Order(msgspec.Struct, forbid_unknown_fields=True):
    """An order as `fast_order` accepts it, typed: msgspec checks the JSON types (a float or a
    bool is no int, null only where optional), lengths and ranges while it parses, in C.
    Names and timestamps are checked afterwards, a column at a time."""

    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    type: Literal["placed", "cancelled", "returned"]
    sku: str
    location: str
    quantity: Annotated[int, msgspec.Meta(gt=0, le=MAX_QUANTITY)]
    occurred_at: str
    unit_price: Annotated[float, msgspec.Meta(ge=0)] | None = None
    order_id: str | None = None
    schema_version: Literal[1] = 1


_decode_order = msgspec.json.Decoder(_Order).decode
_COLUMNS = [attrgetter(name) for name in ("event_id", "type", "sku", "location", "quantity",
                                          "occurred_at")]
_YEAR = attrgetter("year")


def order_columns(raws: Sequence[Any], max_bytes: int) -> OrderColumns | None:
    """`fast_order` of every record value (bytes, or None: not plainly valid), checked a column
    at a time; None unless ALL are plainly valid (then decode them one by one: `fast_order`
    says which are not).

    Each record is parsed straight into a typed struct (`_Order`: msgspec checks types,
    lengths and ranges while parsing, which is cheaper than orjson's dicts plus checks in
    Python), then the names and timestamps are checked as whole columns (a set of the few
    names, every timestamp's shape from one bytes.translate of them all). Same contract as
    `fast_order`: accepted only what it accepts, with the same values
    (tests/unit/test_streams_codec.py).
    """
    docs, parsed = _parse(_decode_order, raws, 0, max_bytes)
    if parsed < len(raws):
        return None
    return _order_columns(docs)


def order_columns_from(raws: Sequence[Any], start: int, max_bytes: int
                       ) -> tuple[OrderColumns | None, int]:
    """(columns, n): the records from `start` on that parse as typed structs are the next
    n; `columns` holds them when they pass the column checks too (else None). The record
    after them, if any, is not plainly valid: the caller decodes it alone."""
    docs, n = _parse(_decode_order, raws, start, max_bytes)
    return _order_columns(docs), n


def _parse(decode: Any, raws: Sequence[Any], start: int, max_bytes: int
           ) -> tuple[list[Any], int]:
    """The typed structs of the records from `start` up to the first that does not parse
    (oversized, None, bad JSON, a type or range refused), and how many there are."""
    if start == 0:  # the common case, every record plainly valid: one map() at C speed
        try:
            if max(map(len, raws), default=0) <= max_bytes:  # a None raises TypeError
                docs = list(map(decode, raws))
                return docs, len(docs)
        except (TypeError, msgspec.DecodeError):
            pass  # find the first that fails, one at a time
    docs = []
    append = docs.append
    try:
        for raw in islice(raws, start, None):
            if len(raw) > max_bytes:  # a None value raises TypeError
                break
            append(decode(raw))
    except (TypeError, msgspec.DecodeError):  # ValidationError is a DecodeError
        pass
    return docs, len(docs)


def _order_columns(docs: list[_Order]) -> OrderColumns | None:
    if not docs:
        return OrderColumns([], [], [], [], [])
    ids, kinds, skus, locations, qtys, times = (list(map(get, docs)) for get in _COLUMNS)
    epochs = _checked_columns(skus, locations, times)
    if epochs is None:
        return None
    signs = list(map(_ORDER_TYPES.__getitem__, kinds))
    return OrderColumns(ids, skus, locations, epochs, list(map(mul, signs, qtys)))


def _checked_columns(skus: list[str], locations: list[str], times: list[str]
                     ) -> list[float] | None:
    """The epoch seconds of `times` when every name and timestamp of a run is plainly valid
    (`_name`, `_time`), checked a column at a time; else None."""
    if not all(map(_name, (set(skus) | set(locations)) - _good_names)):
        return None
    try:
        joined = "\n".join(times)
        shapes = joined.encode("ascii").translate(_DIGITS_TO_ZERO).split(b"\n")
    except UnicodeEncodeError:  # other digits or letters: record by record, `_TIME` decides
        return None
    if len(shapes) != len(times) or not _TIME_SHAPES.issuperset(shapes):
        return None
    if _BAD_ZONE.search(joined):  # minutes 60-99: fromisoformat takes them, the contract not
        return None
    try:
        whens = list(map(datetime.fromisoformat, times))
    except ValueError:
        return None
    years = list(map(_YEAR, whens))
    if min(years) < 1990 or max(years) > 2100:
        return None
    return list(map(datetime.timestamp, whens))


class _Stock(msgspec.Struct, forbid_unknown_fields=True):
    """A stock event as `fast_stock` accepts it, typed (as `_Order`); which of on_hand and
    delta a kind needs is checked afterwards, a column at a time."""

    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    type: Literal["snapshot", "adjustment", "receipt"]
    sku: str
    location: str
    occurred_at: str
    on_hand: Annotated[int, msgspec.Meta(ge=0, le=_UNITS_MAX)] | None = None
    delta: Annotated[int, msgspec.Meta(ge=-MAX_QUANTITY, le=MAX_QUANTITY)] | None = None
    restock_id: str | None = None
    schema_version: Literal[1] = 1


_decode_stock = msgspec.json.Decoder(_Stock).decode
_STOCK_COLUMNS = [attrgetter(name) for name in (
    "event_id", "type", "sku", "location", "occurred_at", "on_hand", "delta", "restock_id")]


def stock_columns(raws: Sequence[Any], max_bytes: int) -> list[FastStock] | None:
    """`fast_stock` of every record value, or None unless ALL are plainly valid (as
    `order_columns`: typed parse in C, names and timestamps a column at a time)."""
    docs, parsed = _parse(_decode_stock, raws, 0, max_bytes)
    if parsed < len(raws):
        return None
    return _stock_rows(docs)


def stock_columns_from(raws: Sequence[Any], start: int, max_bytes: int
                       ) -> tuple[list[FastStock] | None, int]:
    """`order_columns_from` for stock events."""
    docs, n = _parse(_decode_stock, raws, start, max_bytes)
    return _stock_rows(docs), n


def _stock_rows(docs: list[_Stock]) -> list[FastStock] | None:
    if not docs:
        return []
    ids, kinds, skus, locations, times, on_hands, deltas, restocks = (
        list(map(get, docs)) for get in _STOCK_COLUMNS)
    for kind, on_hand, delta in zip(kinds, on_hands, deltas, strict=True):
        if kind == "snapshot":
            if on_hand is None or delta is not None:
                return None
        elif delta is None or on_hand is not None or (kind == "receipt" and delta <= 0):
            return None
    epochs = _checked_columns(skus, locations, times)
    if epochs is None:
        return None
    return list(map(FastStock, ids, kinds, skus, locations, epochs, on_hands, deltas,
                    restocks))
