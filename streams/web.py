"""The planner's dashboard on the worker's web server: an HTML page and its JSON API.

`/dashboard/` is one static page (streams/static/, a hand-written SVG chart, no CDN).
The API reads the SKU state table this worker holds and a bounded in-memory history that
follows each stream batch (forecast bands, stock samples, restocks, alerts):

- `GET /api/skus?q=MUG&limit=50`  SKU keys (`sku@location`) on this worker matching `q`
- `GET /api/sku/{key}/`            state, demand buckets, latest forecast fan, history
- `GET /api/overview/`             totals, open restocks and recent alerts on this worker

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import unquote

from forecasting.quantiles import quantile_at
from runtime.errors import ConfigError
from runtime.settings import Settings
from schemas import sku_key
from streams.metrics import add_batch_observer

__all__ = ["SkuHistory", "WorkerWeb", "install_web", "start_worker_web"]

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

    forecast: dict[str, Any] | None = None
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
        for al in getattr(out, "alerts", ()):
            entry = {"alert_id": al.alert_id, "key": sku_key(al.sku, al.location), "kind": al.kind,
                     "severity": al.severity, "message": al.message,
                     "raised_at": _epoch_s(al.raised_at)}
            self._track(entry["key"]).alerts.append(entry)
            self.recent_alerts.append(entry)

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
        stock = _stock_of(self._table.get(key) if self._table is not None else None)
        if stock is not None:
            on_hand, on_order, backorders = stock
            track.stock.append({"t": start_epoch_s - step_s, "on_hand": on_hand,
                                "on_order": sum(on_order.values()), "backorders": backorders})


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
        "forecast": track.forecast if track else None,
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


Reply = tuple[int, str, bytes]


class WorkerWeb:
    """Routes of a worker's web server as plain functions: `(status, content type, body)`.

    Served by aiohttp for the batch engine (`start`/`stop`) or mounted on Faust's web server
    (`mount_faust`). `table` is the state mapping or a callable returning it (the batch
    engine creates its store when it starts).
    """

    def __init__(self, settings: Settings, table: Any, *, counters: Any = None,
                 metrics: Any = None, ready: Callable[[], bool] | None = None,
                 degraded: Callable[[], bool] | None = None) -> None:
        self.settings = settings
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

    def _file(self, name: str) -> Reply:
        return 200, f"{STATIC_FILES[name]}; charset=utf-8", self.static[name]

    def skus(self, query: str, limit_text: str) -> dict[str, Any]:
        try:
            limit = max(1, min(500, int(limit_text)))
        except ValueError:
            limit = 50
        q = query.strip().lower()
        found = sorted(k for k in set(self.table.keys()) | set(self.history.tracks)
                       if q in k.lower())
        return {"skus": found[:limit], "total": len(found)}

    def sku(self, key: str) -> dict[str, Any] | None:
        state = _as_dict(self.table.get(key))
        track = self.history.tracks.get(key)
        if state is None and track is None:
            return None
        return sku_payload(key, state, track, self.bucket_seconds)

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

    # --- serving ---------------------------------------------------------------------------
    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve on `host:port` (aiohttp, in the running event loop)."""
        from aiohttp import web

        async def handler(request: web.Request) -> web.Response:
            status, ctype, body = self.route(request.path, request.query)
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
            return reply(view, self.route("/api/skus", request.query))

        @app.page("/api/sku/{key}/", name="shelfcast_api_sku")
        async def sku(view: Any, request: Any, key: str) -> Any:
            return reply(view, self.route(f"/api/sku/{key}/", {}))

        @app.page("/api/overview/", name="shelfcast_api_overview")
        async def overview(view: Any, request: Any) -> Any:
            return reply(view, self.route("/api/overview/", {}))


def _json(value: Any, status: int = 200) -> Reply:
    return status, "application/json", json.dumps(value).encode()


def install_web(app: Any, table: Any, settings: Settings, counters: Any = None) -> WorkerWeb:
    """Faust engine: the dashboard and its API on the app's web server."""
    counters = counters if counters is not None else getattr(app, "shelfcast_counters", None)
    web = WorkerWeb(settings, table, counters=counters)
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
                    degraded=lambda: bool(getattr(engine, "degraded", False)))
    await web.start(settings.web_port)
    return web
