"""The planner's dashboard on the worker's web server: an HTML page and its JSON API.

`/dashboard/` is one static page (streams/static/, a hand-written SVG chart, no CDN).
The API reads the SKU state table this worker holds and a bounded in-memory history that
follows each stream batch (forecast bands, stock samples, restocks, alerts). With a database
configured (SHELFCAST_DATABASE_URL) the demand history comes from PostgreSQL's
`demand_history` (the actuals the optimizer writes: it survives restarts and holds every SKU,
not only this worker's partitions), merged with the closed buckets in memory (newer); without
one, or while it cannot be read, from memory alone.

- `GET /api/skus?q=MUG&limit=50`  SKU keys (`sku@location`) on this worker matching `q`
- `GET /api/sku/{key}/`            state, demand buckets, latest forecast fan, history
- `GET /api/overview/`             totals, open restocks and recent alerts on this worker
- `GET /api/models/`               the model versions retraining decided on (`model_versions`
                                   in PostgreSQL, when SHELFCAST_DATABASE_URL is set), newest
                                   first, with promotion markers and the one serving now
- `GET /api/accuracy/?sku=KEY`      forecast accuracy over time (`forecast_scores`, or the
                                   fleet's `accuracy_buckets` without `sku`): rolling
                                   relative pinball and 80% coverage, the model versions that
                                   served and where each promoted one took over

Each worker serves the partitions it owns; behind a Service, ask the pod that holds the SKU.
Wiring: the batch engine calls `start_worker_web(settings, engine, counters, metrics)` (its
own aiohttp server on SHELFCAST_WEB_PORT, with `/metrics`, `/healthz`, `/readyz`); the Faust
engine calls `install_web(app, table, settings)` (Faust's web server).
"""

from __future__ import annotations

import errno
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import unquote

import numpy as np

from forecasting.quantiles import quantile_at
from runtime.errors import ConfigError
from runtime.settings import Settings
from schemas import sku_key
from streams.metrics import add_batch_observer

__all__ = ["DemandSource", "SkuHistory", "WorkerWeb", "demand_source", "install_web",
           "start_worker_web"]

log = logging.getLogger(__name__)

STATIC_FILES = {"dashboard.html": "text/html", "dashboard.js": "text/javascript",
                "dashboard.css": "text/css"}


def _epoch_s(value: Any) -> float | None:
    """A datetime as epoch seconds (what the dashboard plots); None for anything else."""
    if isinstance(value, datetime):
        return value.timestamp()
    return None


@dataclass
class _SkuTrack:
    """What the dashboard remembers about one SKU beyond the table's current state."""

    forecast: dict[str, Any] | _LazyForecast | None = None
    bands: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=120))
    stock: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=240))
    restocks: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=60))
    alerts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=60))


class SkuHistory:
    """Bounded per-SKU history fed by stream batches (least recently updated SKUs dropped)."""

    def __init__(self, table: Any = None, *, max_skus: int = 20_000, recent: int = 200) -> None:
        self._table = table
        self.max_skus = max_skus
        self.tracks: OrderedDict[str, _SkuTrack] = OrderedDict()
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=recent)
        self.recent_restocks: deque[dict[str, Any]] = deque(maxlen=recent)

    def _track(self, key: str) -> _SkuTrack:
        track = self.tracks.get(key)
        if track is None:
            track = self.tracks[key] = _SkuTrack()
            if len(self.tracks) > self.max_skus:
                self.tracks.popitem(last=False)
        else:
            self.tracks.move_to_end(key)
        return track

    def observe_batch(self, n_events: int, out: Any) -> None:
        """Record a batch's forecasts, restocks and alerts (cheap: no copies of windows)."""
        rows = getattr(out, "forecast_rows", None)
        if rows is not None and out.forecasts_only_as_rows:  # read the rows, build no models
            for block in rows:
                self._forecast_rows(block)
        else:
            for fc in getattr(out, "forecasts", ()):
                self._forecast(fc)
        for rs in getattr(out, "restocks", ()):
            entry = {"restock_id": rs.restock_id, "key": sku_key(rs.sku, rs.location),
                     "t": _epoch_s(rs.bucket), "quantity": rs.quantity,
                     "reorder_point": rs.reorder_point, "order_up_to": rs.order_up_to,
                     "inventory_position": rs.inventory_position, "supplier": rs.supplier,
                     "reason": rs.reason, "issued_at": _epoch_s(rs.issued_at)}
            self._track(entry["key"]).restocks.append(entry)
            self.recent_restocks.append(entry)
        alert_rows = getattr(out, "alert_rows", None)
        alerts = (alert_rows if alert_rows is not None and out.alerts_only_as_rows
                  else getattr(out, "alerts", ()))
        for al in alerts:
            entry = {"alert_id": al.alert_id, "key": sku_key(al.sku, al.location), "kind": al.kind,
                     "severity": al.severity, "message": al.message,
                     "raised_at": _epoch_s(al.raised_at)}
            self._track(entry["key"]).alerts.append(entry)
            self.recent_alerts.append(entry)

    def _forecast_rows(self, rows: Any) -> None:
        """`_forecast` for each row of a `ForecastRows`, from its arrays: the first step's band
        for all rows in one go, a row's quantiles and mean made lists only when it is shown
        (`_LazyForecast`)."""
        if not len(rows) or not rows.levels:
            return
        step_s = float(rows.bucket_seconds)
        levels = list(rows.levels)
        first = rows.daily[:, 0, :]
        low, high = first[:, 0].tolist(), first[:, -1].tolist()
        median = np.asarray(quantile_at(first, levels, 0.5)).tolist()
        issued_at = _epoch_s(rows.issued_at)
        for i, sku in enumerate(rows.skus):
            key = sku_key(sku, rows.locations[i])
            track = self._track(key)
            start_epoch_s = rows.last_closed[i] * step_s + step_s  # the first forecast bucket
            track.forecast = _LazyForecast(rows, i, start_epoch_s, step_s, levels, issued_at)
            track.bands.append({"t": start_epoch_s, "low": low[i], "high": high[i],
                                "median": median[i]})
            self._stock_at(track, key, start_epoch_s - step_s)

    def _stock_at(self, track: _SkuTrack, key: str, t: float) -> None:
        stock = _stock_of(self._table.get(key) if self._table is not None else None)
        if stock is not None:
            on_hand, on_order, backorders = stock
            track.stock.append({"t": t, "on_hand": on_hand,
                                "on_order": sum(on_order.values()), "backorders": backorders})

    def _forecast(self, fc: Any) -> None:
        key = sku_key(fc.sku, fc.location)
        track = self._track(key)
        step_s = float(fc.bucket_seconds)
        start_epoch_s = (_epoch_s(fc.bucket) or 0.0) + step_s  # the first forecast bucket
        levels = list(fc.quantile_levels)
        track.forecast = {"start": start_epoch_s, "step": step_s, "levels": levels,
                          "quantiles": fc.quantiles, "mean": fc.mean,
                          "model_version": fc.model_version, "issued_at": _epoch_s(fc.issued_at)}
        first = fc.quantiles[0] if fc.quantiles else []
        if first:
            track.bands.append({"t": start_epoch_s, "low": first[0], "high": first[-1],
                                "median": float(quantile_at(first, levels, 0.5))})
        self._stock_at(track, key, start_epoch_s - step_s)


class _LazyForecast:
    """A forecast the dashboard shows as `SkuHistory._forecast`'s dict, kept as a row of a
    `ForecastRows` until a reader asks (`as_dict`): most are replaced unread."""

    __slots__ = ("_i", "_issued_at", "_levels", "_rows", "_start", "_step")

    def __init__(self, rows: Any, i: int, start_epoch_s: float, step_s: float,
                 levels: list[float], issued_at: float | None) -> None:
        self._rows, self._i = rows, i
        self._start, self._step, self._levels = start_epoch_s, step_s, levels
        self._issued_at = issued_at

    def as_dict(self) -> dict[str, Any]:
        rows, i = self._rows, self._i
        return {"start": self._start, "step": self._step, "levels": self._levels,
                "quantiles": rows.daily[i].tolist(), "mean": rows.mean[i].tolist(),
                "model_version": rows.model_version, "issued_at": self._issued_at}


def _stock_of(state: Any) -> tuple[int, dict[str, int], int] | None:
    """(on hand, open orders, backorders) of a JSON dict or a live `SkuState`, without copying."""
    if isinstance(state, dict):
        return (state.get("on_hand", 0), state.get("on_order") or {}, state.get("backorders", 0))
    if state is None:
        return None
    return state.on_hand, state.on_order, state.backorders


def _as_dict(state: Any) -> dict[str, Any] | None:
    """Table values are JSON dicts (Faust, or just recovered) or live `SkuState` objects."""
    return state.to_json() if hasattr(state, "to_json") else state


def sku_payload(key: str, state: dict[str, Any] | None, track: _SkuTrack | None,
                bucket_seconds: int) -> dict[str, Any]:
    """Everything the SKU view draws, as JSON-able values (times in epoch seconds)."""
    state = state or {}
    demand = sorted((int(b), float(q)) for b, q in (state.get("demand") or {}).items())
    watermark = state.get("watermark")
    on_order = state.get("on_order") or {}
    restocks = [{**r, "open": r["restock_id"] in on_order} for r in track.restocks] if track else []
    return {
        "key": key,
        "bucket_seconds": bucket_seconds,
        "state": {
            "on_hand": state.get("on_hand"), "backorders": state.get("backorders"),
            "on_order": on_order, "on_order_total": sum(on_order.values()),
            "policy": state.get("policy"), "open_alerts": state.get("open_alerts") or {},
            "open_bucket": watermark * bucket_seconds if watermark is not None else None,
            "stock_as_of": state.get("stock_as_of"),
        },
        # the open bucket is still filling: the chart shows closed buckets only
        "demand": [{"t": b * bucket_seconds, "units": q} for b, q in demand
                   if watermark is None or b < watermark],
        "forecast": (track.forecast.as_dict() if isinstance(track.forecast, _LazyForecast)
                     else track.forecast) if track else None,
        "bands": list(track.bands) if track else [],
        "stock": list(track.stock) if track else [],
        "restocks": restocks,
        "alerts": list(track.alerts) if track else [],
    }


def _static(name: str) -> bytes:
    return resources.files("streams").joinpath("static", name).read_bytes()


class _StrKeys:
    """Read-only str-keyed view of a table whose keys may be bytes (Faust) or str (StateStore)."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: str) -> Any:
        table = self._table() if callable(self._table) else self._table
        if table is None:
            return None
        value = table.get(key)
        if value is None:
            try:
                value = table.get(key.encode())
            except (TypeError, AttributeError):
                value = None
        return value

    def keys(self) -> list[str]:
        table = self._table() if callable(self._table) else self._table
        if table is None:
            return []
        return [k.decode() if isinstance(k, bytes) else str(k) for k in list(table.keys())]

    def partitions_of(self, key: str) -> list[int] | None:
        """The input partitions holding a state of `key` (the batch engine keeps one per
        partition the key was seen on); None where the table does not say (Faust)."""
        table = self._table() if callable(self._table) else self._table
        states_of = getattr(table, "states_of", None)
        return None if states_of is None else sorted(states_of(key))


Reply = tuple[int, str, bytes]


class DemandSource:
    """The actuals in PostgreSQL (`demand_history`), read through a small lazy pool."""

    def __init__(self, dsn: str, bucket_seconds: int, *, history_buckets: int = 400) -> None:
        self._dsn = dsn
        self.bucket_seconds = bucket_seconds
        self.history_buckets = history_buckets
        self._pool: Any = None

    async def _connect(self) -> Any:
        if self._pool is None:
            import asyncpg

            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=0, max_size=2, timeout=5.0,
                server_settings={"application_name": "shelfcast-dashboard"})
        return self._pool

    async def history(self, key: str) -> list[dict[str, float]]:
        """The SKU's closed buckets' demand, oldest first, as the dashboard plots it."""
        from optimizer.actuals import demand_history

        sku, _, location = key.rpartition("@")
        rows = await demand_history(await self._connect(), sku, location, self.bucket_seconds,
                                    self.history_buckets)
        return [{"t": bucket.timestamp(), "units": quantity} for bucket, quantity in rows]

    async def skus(self, query: str, limit: int) -> list[str]:
        from optimizer.actuals import demand_skus

        return await demand_skus(await self._connect(), query, self.bucket_seconds, limit)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class WorkerWeb:
    """Routes of a worker's web server as plain functions: `(status, content type, body)`.

    Served by aiohttp for the batch engine (`start`/`stop`) or mounted on Faust's web server
    (`mount_faust`). `table` is the state mapping or a callable returning it (the batch
    engine creates its store when it starts).
    """

    def __init__(self, settings: Settings, table: Any, *, counters: Any = None,
                 metrics: Any = None, ready: Callable[[], bool] | None = None,
                 degraded: Callable[[], bool] | None = None,
                 demand: DemandSource | None = None) -> None:
        self.settings = settings
        self.demand = demand
        self.table = _StrKeys(table)
        self.counters = counters
        self.metrics = metrics
        self.ready = ready or (lambda: True)
        self.degraded = degraded or (lambda: False)
        self.history = SkuHistory(self.table)
        if counters is not None:
            add_batch_observer(counters, self.history.observe_batch)
        self.bucket_seconds = settings.bucket_seconds()
        self.static = {name: _static(name) for name in STATIC_FILES}
        self.started = time.time()
        self._runner: Any = None
        self._db_pool: Any = None  # asyncpg pool, opened on the first /api/models/ request

    # --- routes --------------------------------------------------------------------------
    def route(self, path: str, query: Mapping[str, str]) -> Reply:
        if path == "/metrics" and self.metrics is not None:
            from streams.metrics import CONTENT_TYPE_LATEST

            return 200, CONTENT_TYPE_LATEST, self.metrics.render()
        if path == "/healthz":  # alive (200) even when degraded: a restart would not help
            return _json({"status": "degraded" if self.degraded() else "ok"})
        if path == "/readyz":
            degraded = bool(self.degraded())
            ok = bool(self.ready()) and not degraded
            return _json({"ready": ok, "degraded": degraded}, 200 if ok else 503)
        if path in ("/dashboard", "/dashboard/", "/"):
            return self._file("dashboard.html")
        if path.startswith("/dashboard/"):
            name = path.removeprefix("/dashboard/")
            if name in self.static:
                return self._file(name)
        if path.rstrip("/") == "/api/skus":
            return _json(self.skus(query.get("q", ""), query.get("limit", "50")))
        if path.rstrip("/") == "/api/overview":
            return _json(self.overview())
        if path.startswith("/api/sku/"):
            key = unquote(path.removeprefix("/api/sku/").rstrip("/"))
            payload = self.sku(key)
            if payload is None:
                return _json({"error": f"{key} is not on this worker"}, 404)
            return _json(payload)
        return _json({"error": f"no such page {path}"}, 404)

    async def handle(self, path: str, query: Mapping[str, str]) -> Reply:
        """`route`, with the demand history and the SKU search read from PostgreSQL when a
        `DemandSource` is set (from memory alone when it fails: the page still draws)."""
        if self.demand is not None:
            try:
                if path.rstrip("/") == "/api/skus":
                    found = self.skus(query.get("q", ""), query.get("limit", "50"))
                    limit = _limit(query.get("limit", "50"))
                    stored = await self.demand.skus(query.get("q", "").strip(), limit)
                    merged = sorted(set(found["skus"]) | set(stored))
                    return _json({"skus": merged[:limit],
                                  "total": max(found["total"], len(merged))})
                if path.startswith("/api/sku/"):
                    key = unquote(path.removeprefix("/api/sku/").rstrip("/"))
                    stored_demand = await self.demand.history(key)
                    payload = self.sku(key)
                    if payload is None and not stored_demand:
                        return _json({"error": f"{key} is neither on this worker nor in "
                                               "demand_history"}, 404)
                    if payload is None:
                        payload = sku_payload(key, None, None, self.bucket_seconds)
                    in_memory = {row["t"]: row for row in payload["demand"]}
                    merged = {row["t"]: row for row in stored_demand} | in_memory
                    payload["demand"] = [merged[t] for t in sorted(merged)]
                    payload["demand_source"] = "postgresql"
                    return _json(payload)
            except Exception as exc:  # the database is down or not migrated: memory serves
                if not self._demand_failed:
                    log.warning("dashboard: demand_history not readable (%s: %s); serving "
                                "the in-memory history", type(exc).__name__, exc)
                self._demand_failed = True
            else:
                self._demand_failed = False
        return self.route(path, query)

    _demand_failed = False

    def _file(self, name: str) -> Reply:
        return 200, f"{STATIC_FILES[name]}; charset=utf-8", self.static[name]

    def skus(self, query: str, limit_text: str) -> dict[str, Any]:
        limit = _limit(limit_text)
        q = query.strip().lower()
        found = sorted(k for k in set(self.table.keys()) | set(self.history.tracks)
                       if q in k.lower())
        return {"skus": found[:limit], "total": len(found)}

    def sku(self, key: str) -> dict[str, Any] | None:
        state = _as_dict(self.table.get(key))
        track = self.history.tracks.get(key)
        if state is None and track is None:
            return None
        payload = sku_payload(key, state, track, self.bucket_seconds)
        # a key seen on several input partitions has a state on each; `state` is the one
        # whose clock is furthest
        payload["partitions"] = self.table.partitions_of(key)
        return payload

    def overview(self) -> dict[str, Any]:
        open_restocks = []
        for r in reversed(self.history.recent_restocks):
            stock = _stock_of(self.table.get(r["key"]))
            if stock is not None and r["restock_id"] in stock[1]:
                open_restocks.append(r)
        c = self.counters
        return {
            "skus": len(self.table.keys()), "uptime_s": round(time.time() - self.started, 1),
            "events": getattr(c, "events", None), "dlq": getattr(c, "dlq", None),
            "forecasts": getattr(c, "forecasts", None), "restocks": getattr(c, "restocks", None),
            "alerts": getattr(c, "alerts", None), "open_restocks": open_restocks[:50],
            "recent_alerts": list(self.history.recent_alerts)[::-1][:50]}

    async def models(self) -> Reply:
        """`/api/models/`: the latest retraining decisions (model_versions_payload)."""
        if self.settings.database_url is None:
            return _json({"database": False, "versions": []})
        import asyncpg

        from optimizer.errors import StoreError
        from optimizer.model_versions import list_model_versions

        try:
            if self._db_pool is None:
                self._db_pool = await asyncpg.create_pool(
                    self.settings.database_url.get_secret_value(), min_size=0, max_size=1)
            rows = await list_model_versions(self._db_pool, limit=50)
        except (OSError, asyncpg.PostgresError, StoreError) as exc:
            return _json({"database": True, "versions": [], "error": str(exc)})
        return _json({"database": True, "versions": model_versions_payload(rows)})

    async def accuracy(self, query: Mapping[str, str]) -> Reply:
        """`/api/accuracy/?sku=KEY&window=7`: accuracy_payload of one SKU, or of the fleet."""
        key = query.get("sku", "").strip()
        window = _limit(query.get("window", str(ACCURACY_WINDOW_BUCKETS)))
        base = {"database": self.settings.database_url is not None, "scope": "sku" if key
                else "fleet", "key": key or FLEET_KEY, "window_buckets": window,
                "bucket_seconds": self.bucket_seconds}
        if self.settings.database_url is None:
            return _json({**base, "points": [], "versions": [], "promotions": []})
        import asyncpg

        from optimizer.actuals import scored_buckets
        from optimizer.errors import StoreError
        from optimizer.model_versions import list_model_versions
        from schemas import split_key

        try:
            sku, location = split_key(key) if key else (None, None)
        except ValueError:
            return _json({"error": f"not a sku@location key: {key!r}"}, 400)
        try:
            if self._db_pool is None:
                self._db_pool = await asyncpg.create_pool(
                    self.settings.database_url.get_secret_value(), min_size=0, max_size=1)
            rows = await scored_buckets(self._db_pool, self.bucket_seconds, sku=sku,
                                        location=location)
            decisions = await list_model_versions(self._db_pool, limit=50)
        except (OSError, asyncpg.PostgresError, StoreError) as exc:
            return _json({**base, "points": [], "versions": [], "promotions": [],
                          "error": str(exc)})
        return _json({**base, **accuracy_payload(rows, decisions, window)})

    async def aroute(self, path: str, query: Mapping[str, str]) -> Reply:
        """`route`, plus the routes that read the database."""
        if path.rstrip("/") == "/api/models":
            return await self.models()
        if path.rstrip("/") == "/api/accuracy":
            return await self.accuracy(query)
        return await self.handle(path, query)

    # --- serving ---------------------------------------------------------------------------
    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve on `host:port` (aiohttp, in the running event loop)."""
        from aiohttp import web

        async def handler(request: web.Request) -> web.Response:
            status, ctype, body = await self.aroute(request.path, request.query)
            return web.Response(status=status, body=body, headers={
                "Content-Type": ctype, "Cache-Control": "no-cache"})

        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno != errno.EADDRINUSE:
                raise
            raise ConfigError(
                f"port {port} is already in use (the optimizer, or another worker, on this "
                "host?): give this worker another SHELFCAST_WEB_PORT (and the optimizer its "
                "own SHELFCAST_OPTIMIZER_WEB_PORT)") from None
        self._runner = runner
        log.info("worker web server on http://%s:%d (/dashboard/, /metrics)", host, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.demand is not None:
            await self.demand.close()
        if self._db_pool is not None:
            await self._db_pool.close()
            self._db_pool = None

    def mount_faust(self, app: Any) -> None:
        """Faust engine: the dashboard and API on Faust's web server (`/metrics` is mounted
        by `WorkerMetrics.install`)."""

        def reply(view: Any, r: Reply) -> Any:
            status, ctype, body = r
            return view.bytes(body, status=status, headers={"Content-Type": ctype,
                                                            "Cache-Control": "no-cache"})

        @app.page("/dashboard/", name="shelfcast_dashboard")
        async def dashboard(view: Any, request: Any) -> Any:
            return reply(view, self._file("dashboard.html"))

        @app.page("/dashboard/{name}", name="shelfcast_dashboard_static")
        async def dashboard_static(view: Any, request: Any, name: str) -> Any:
            return reply(view, self.route(f"/dashboard/{name}", {}))

        @app.page("/api/skus", name="shelfcast_api_skus")
        async def skus(view: Any, request: Any) -> Any:
            return reply(view, await self.handle("/api/skus", request.query))

        @app.page("/api/sku/{key}/", name="shelfcast_api_sku")
        async def sku(view: Any, request: Any, key: str) -> Any:
            return reply(view, await self.handle(f"/api/sku/{key}/", {}))

        @app.page("/api/overview/", name="shelfcast_api_overview")
        async def overview(view: Any, request: Any) -> Any:
            return reply(view, self.route("/api/overview/", {}))

        @app.page("/api/models/", name="shelfcast_api_models")
        async def models(view: Any, request: Any) -> Any:
            return reply(view, await self.models())

        @app.page("/api/accuracy/", name="shelfcast_api_accuracy")
        async def accuracy(view: Any, request: Any) -> Any:
            return reply(view, await self.accuracy(request.query))


def model_versions_payload(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """`optimizer.model_versions.ModelVersionRecord`s (newest first) as the dashboard draws
    them: times in epoch seconds, and `serving` on the newest promoted version (a promotion
    swaps the model directory, so that is the one the workers roll in)."""
    out = []
    serving_marked = False
    for r in rows:
        serving = bool(r.promoted) and not serving_marked
        serving_marked = serving_marked or serving
        out.append({
            "id": r.id, "version": r.version, "promoted": r.promoted, "serving": serving,
            "reason": r.reason, "decided_at": _epoch_s(r.decided_at),
            "trained_at": _epoch_s(r.trained_at),
            "data_first_bucket": _epoch_s(r.data_first_bucket),
            "data_last_bucket": _epoch_s(r.data_last_bucket), "n_series": r.n_series,
            "champion_version": r.champion_version, "champion_scores": r.champion_scores,
            "challenger_scores": r.challenger_scores, "protocol": r.protocol})
    return out


ACCURACY_WINDOW_BUCKETS = 7  # the drift monitor's window: a whole week, the same weekday mix
FLEET_KEY = "*"


def accuracy_payload(rows: Sequence[Any], decisions: Sequence[Any], window: int
                     ) -> dict[str, Any]:
    """Scored buckets (`optimizer.actuals.ScoredBucket`, oldest first) as the accuracy chart
    draws them.

    - `points`: per bucket, the rolling scores over the last `window` buckets, pooled as the
      drift monitor pools a segment (relative pinball = sum pinball / sum actual; coverage =
      covered / scored), and the version that scored most of the bucket;
    - `versions`: each version that served, its first and last scored bucket;
    - `promotions`: each promoted decision (`model_versions`, newest first in `decisions`)
      at the first bucket its version scored (where it took over), oldest first; a promotion
      whose version never served yet has `t` null.
    """
    by_bucket: dict[float, list[Any]] = {}
    for r in rows:
        by_bucket.setdefault(r.bucket_start.timestamp(), []).append(r)
    times = sorted(by_bucket)
    totals = [(sum(r.scored for r in by_bucket[t]), sum(r.pinball for r in by_bucket[t]),
               sum(r.actual for r in by_bucket[t]), sum(r.covered for r in by_bucket[t]))
              for t in times]
    points = []
    for i, t in enumerate(times):
        recent = totals[max(0, i - window + 1):i + 1]
        scored, pinball, actual, covered = (sum(x[k] for x in recent) for k in range(4))
        top = max(by_bucket[t], key=lambda r: (r.scored, r.model_version))
        points.append({"t": t, "scored": scored, "version": top.model_version,
                       "pinball_relative": round(pinball / actual, 5) if actual > 0 else None,
                       "coverage_80": round(covered / scored, 4) if scored else None})
    versions: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = r.bucket_start.timestamp()
        v = versions.setdefault(r.model_version, {"version": r.model_version, "first": t,
                                                  "last": t, "scored": 0})
        v["first"], v["last"] = min(v["first"], t), max(v["last"], t)
        v["scored"] += r.scored
    promotions = [{"version": d.version, "decided_at": _epoch_s(d.decided_at),
                   "champion_version": d.champion_version, "reason": d.reason,
                   "t": versions[d.version]["first"] if d.version in versions else None}
                  for d in reversed(decisions) if d.promoted]
    return {"points": points,
            "versions": sorted(versions.values(), key=lambda v: (v["first"], v["version"])),
            "promotions": promotions}


def _limit(text: str) -> int:
    try:
        return max(1, min(500, int(text)))
    except ValueError:
        return 50


def _json(value: Any, status: int = 200) -> Reply:
    return status, "application/json", json.dumps(value).encode()


def demand_source(settings: Settings) -> DemandSource | None:
    """The actuals in PostgreSQL when SHELFCAST_DATABASE_URL is set, else None."""
    if settings.database_url is None:
        return None
    return DemandSource(settings.database_url.get_secret_value(), settings.bucket_seconds())


def install_web(app: Any, table: Any, settings: Settings, counters: Any = None) -> WorkerWeb:
    """Faust engine: the dashboard and its API on the app's web server."""
    counters = counters if counters is not None else getattr(app, "shelfcast_counters", None)
    web = WorkerWeb(settings, table, counters=counters, demand=demand_source(settings))
    web.mount_faust(app)
    app.shelfcast_web = web
    return web


async def start_worker_web(settings: Settings, engine: Any, counters: Any,
                           metrics: Any = None) -> WorkerWeb | None:
    """Batch engine: bind metrics and serve `/metrics`, `/healthz`, `/readyz`, the dashboard
    and its API on `settings.web_port`; None when no port is set."""
    if settings.web_port is None:
        return None
    if metrics is not None:
        metrics.bind(engine, counters)
    ready = getattr(engine, "ready", None)
    web = WorkerWeb(settings, lambda: getattr(engine, "store", None), counters=counters,
                    metrics=metrics, ready=ready.is_set if ready is not None else None,
                    degraded=lambda: bool(getattr(engine, "degraded", False)),
                    demand=demand_source(settings))
    await web.start(settings.web_port)
    return web
