// shelfcast dashboard: SKU search, one SVG chart per SKU (demand, forecast bands, stock,
// restocks), tables of restocks and alerts. Plain browser JS, no libraries, no network but
// this worker's /api.
"use strict";

const $ = (sel) => document.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";
const fmtDate = (t) => new Date(t * 1000).toISOString().slice(0, 10);
const fmtNum = (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en", { maximumFractionDigits: 1 }));

async function getJSON(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" } });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fillTable(selector, rows, cells) {
  const body = $(`${selector} tbody`);
  body.replaceChildren();
  if (!rows.length) {
    const tr = el("tr");
    tr.append(el("td", { colspan: $(`${selector} thead tr`).children.length, class: "empty" }, "none"));
    body.append(tr);
    return;
  }
  for (const row of rows) {
    const tr = el("tr");
    for (const cell of cells(row)) {
      const td = el("td", cell.cls ? { class: cell.cls } : {});
      if (cell.title) td.title = cell.title;
      if (cell.href) td.append(el("a", { href: cell.href }, cell.text)); else td.textContent = cell.text;
      tr.append(td);
    }
    body.append(tr);
  }
}

// ---------------------------------------------------------------- chart

function drawChart(data) {
  const box = $("#chart");
  box.replaceChildren();
  const W = 1100, H = 380, M = { l: 56, r: 16, t: 14, b: 30 };
  const step = data.bucket_seconds;
  const fc = data.forecast;
  const fcPoints = fc ? fc.quantiles.map((q, i) => ({ t: fc.start + i * step, q })) : [];
  const times = [
    ...data.demand.map((d) => d.t), ...data.stock.map((s) => s.t), ...data.bands.map((b) => b.t),
    ...data.restocks.map((r) => r.t), ...fcPoints.map((p) => p.t),
  ].filter((t) => t !== null && t !== undefined);
  if (!times.length) { box.textContent = "No data for this SKU yet."; return; }
  const t0 = Math.min(...times) - step / 2, t1 = Math.max(...times) + step / 2;
  const values = [
    ...data.demand.map((d) => d.units), ...data.stock.map((s) => s.on_hand + s.on_order),
    ...data.bands.map((b) => b.high), ...fcPoints.map((p) => p.q[p.q.length - 1]),
    ...data.restocks.map((r) => r.quantity), 1,
  ];
  const vmax = Math.max(...values) * 1.08;
  const x = (t) => M.l + ((t - t0) / (t1 - t0)) * (W - M.l - M.r);
  const y = (v) => H - M.b - (Math.max(0, v) / vmax) * (H - M.t - M.b);
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `demand and forecast for ${data.key}` });

  // axes and grid
  const axis = el("svg:g", { class: "axis" });
  for (let i = 0; i <= 4; i++) {
    const v = (vmax / 4) * i;
    axis.append(el("svg:line", { x1: M.l, x2: W - M.r, y1: y(v), y2: y(v), class: "grid-line" }));
    axis.append(el("svg:text", { x: M.l - 8, y: y(v) + 4, "text-anchor": "end" }, fmtNum(v)));
  }
  const nTicks = Math.min(8, Math.max(2, Math.round((t1 - t0) / step / 7)));
  for (let i = 0; i <= nTicks; i++) {
    const t = t0 + ((t1 - t0) / nTicks) * i;
    const anchor = i === 0 ? "start" : i === nTicks ? "end" : "middle";
    axis.append(el("svg:text", { x: x(t), y: H - 8, "text-anchor": anchor }, fmtDate(t)));
  }
  svg.append(axis);

  // forecast fan for the coming buckets: outer band, inner band, median
  if (fcPoints.length) {
    const n = fc.levels.length;
    const band = (lo, hi, opacity, cls) => {
      const upper = fcPoints.map((p) => `${x(p.t)},${y(p.q[hi])}`);
      const lower = fcPoints.slice().reverse().map((p) => `${x(p.t)},${y(p.q[lo])}`);
      svg.append(el("svg:polygon", { points: [...upper, ...lower].join(" "), fill: "var(--band)", opacity, class: cls }));
    };
    band(0, n - 1, 0.18, "series-forecast-outer");
    if (n >= 4) band(1, n - 2, 0.3, "series-forecast-inner");
    const mid = fcPoints.map((p) => `${x(p.t)},${y(median(fc.levels, p.q))}`).join(" ");
    svg.append(el("svg:polyline", { points: mid, fill: "none", stroke: "var(--band)", "stroke-width": 2, class: "series-forecast-median" }));
    svg.append(el("svg:line", { x1: x(fc.start - step / 2), x2: x(fc.start - step / 2), y1: M.t, y2: H - M.b, stroke: "var(--muted)", "stroke-dasharray": "3 3" }));
  }

  // past one-step-ahead bands (what the model expected for each bucket when it closed)
  for (const b of data.bands) {
    if (fc && b.t >= fc.start) continue;
    svg.append(el("svg:line", { x1: x(b.t), x2: x(b.t), y1: y(b.low), y2: y(b.high), stroke: "var(--band)", "stroke-width": 6, opacity: 0.35, class: "series-band" }));
  }

  // observed demand per closed bucket
  const bw = Math.max(2, ((W - M.l - M.r) / ((t1 - t0) / step)) * 0.55);
  for (const d of data.demand) {
    svg.append(el("svg:rect", { x: x(d.t) - bw / 2, y: y(d.units), width: bw, height: Math.max(0, y(0) - y(d.units)), fill: "var(--demand)", class: "series-demand" }));
  }

  // stock on hand and on hand + on order, as steps
  const steps = (key) => data.stock.map((s, i) => {
    const v = key(s);
    return `${i ? "" : "M"}${x(s.t)},${y(v)}`;
  }).join(" L");
  if (data.stock.length) {
    svg.append(el("svg:path", { d: steps((s) => s.on_hand + s.on_order), fill: "none", stroke: "var(--order)", "stroke-width": 2, "stroke-dasharray": "5 3", class: "series-position" }));
    svg.append(el("svg:path", { d: steps((s) => s.on_hand), fill: "none", stroke: "var(--hand)", "stroke-width": 2, class: "series-on-hand" }));
  }

  // restock orders: a marker at the bucket that decided them, with the quantity
  for (const r of data.restocks) {
    const cx = x(r.t), cy = y(r.quantity);
    svg.append(el("svg:path", { d: `M${cx},${cy - 8} L${cx - 7},${cy + 5} L${cx + 7},${cy + 5} Z`, fill: "var(--restock)", class: "series-restock" }));
    svg.append(el("svg:text", { x: cx, y: cy - 11, "text-anchor": "middle", "font-size": 11, fill: "var(--restock)" }, `+${r.quantity}`));
  }
  box.append(svg);
  box.dataset.rendered = "true";
  box.dataset.points = String(data.demand.length + fcPoints.length + data.stock.length + data.restocks.length);

  $("#legend").replaceChildren(...[
    ["demand (closed buckets)", "var(--demand)"],
    [fc ? `forecast ${pct(fc.levels[0])}–${pct(fc.levels[fc.levels.length - 1])} band, median (${fc.model_version})` : "forecast", "var(--band)", 0.5],
    ["on hand", "var(--hand)"], ["on hand + on order", "var(--order)"], ["restock order", "var(--restock)"],
  ].map(([label, c, o]) => { const s = el("span", {}, label); s.style.setProperty("--c", c); if (o) s.style.setProperty("--o", o); return s; }));
}

const pct = (l) => `${Math.round(l * 100)}%`;

function median(levels, q) {
  for (let i = 1; i < levels.length; i++) {
    if (levels[i] >= 0.5) {
      const w = levels[i] === levels[i - 1] ? 0 : (0.5 - levels[i - 1]) / (levels[i] - levels[i - 1]);
      return q[i - 1] + w * (q[i] - q[i - 1]);
    }
  }
  return q[q.length - 1];
}

// ---------------------------------------------------------------- views

async function showSku(key) {
  const data = await getJSON(`/api/sku/${encodeURIComponent(key)}/`);
  $("#sku").hidden = false;
  $("#sku-tables").hidden = false;
  $("#sku-title").textContent = data.key;
  const s = data.state, p = s.policy || {};
  const facts = [
    ["on hand", fmtNum(s.on_hand)], ["on order", fmtNum(s.on_order_total)], ["backorders", fmtNum(s.backorders)],
    ["lead time", p.lead_time_days !== undefined ? `${p.lead_time_days} d` : "default"],
    ["service level", p.service_level !== undefined ? pct(p.service_level) : "default"],
  ];
  $("#sku-facts").replaceChildren(...facts.map(([k, v]) => {
    const pair = el("div");
    pair.append(el("dt", {}, k), el("dd", {}, v));
    return pair;
  }));
  drawChart(data);
  fillTable("#sku-restocks", data.restocks.slice().reverse(), (r) => [
    { text: fmtDate(r.t) }, { text: fmtNum(r.quantity) }, { text: fmtNum(r.reorder_point) },
    { text: fmtNum(r.order_up_to) }, { text: fmtNum(r.inventory_position) },
    { text: r.open ? "open" : "received", cls: r.open ? "status-open" : "" },
  ]);
  fillTable("#sku-alerts", data.alerts.slice().reverse(), (a) => [
    { text: fmtDate(a.raised_at) }, { text: a.severity, cls: `sev-${a.severity}` }, { text: a.kind }, { text: a.message },
  ]);
  document.title = `shelfcast · ${data.key}`;
}

async function refreshOverview() {
  const o = await getJSON("/api/overview/");
  $("#totals").innerHTML = "";
  for (const [label, v] of [["SKUs", o.skus], ["events", o.events], ["forecasts", o.forecasts], ["restocks", o.restocks], ["alerts", o.alerts], ["DLQ", o.dlq]]) {
    $("#totals").append(el("span", {}, `${label} `), el("b", {}, fmtNum(v)), document.createTextNode("  "));
  }
  const link = (key) => `?sku=${encodeURIComponent(key)}`;
  fillTable("#open-restocks", o.open_restocks, (r) => [
    { text: r.key, href: link(r.key) }, { text: fmtDate(r.t) }, { text: fmtNum(r.quantity) }, { text: r.supplier }, { text: r.reason },
  ]);
  fillTable("#recent-alerts", o.recent_alerts, (a) => [
    { text: a.key, href: link(a.key) }, { text: a.severity, cls: `sev-${a.severity}` }, { text: a.kind }, { text: a.message },
  ]);
}

// ---------------------------------------------------------------- model versions

const fmtScore = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(3));

async function refreshModels() {
  const m = await getJSON("/api/models/");
  $("#models-note").textContent = !m.database
    ? "No database configured (SHELFCAST_DATABASE_URL): no model history on this worker."
    : (m.error ? `Model history unavailable: ${m.error}` : "Newest first; ★ = promoted into the model directory. Hover a decision for its reason.");
  fillTable("#model-versions", m.versions, (v) => {
    const ch = v.champion_scores || {}, cl = v.challenger_scores || {};
    const decision = v.promoted ? (v.serving ? "★ promoted · serving" : "★ promoted") : "champion kept";
    return [
      { text: fmtDate(v.decided_at) },
      { text: v.version, cls: v.serving ? "model-serving" : "" },
      { text: `${fmtDate(v.data_first_bucket)} – ${fmtDate(v.data_last_bucket)}, ${v.n_series} SKUs` },
      { text: `${fmtScore(ch.pinball)} → ${fmtScore(cl.pinball)}` },
      { text: `${fmtScore(ch.coverage_80)} → ${fmtScore(cl.coverage_80)}` },
      { text: decision, cls: v.promoted ? "model-promoted" : "model-kept", title: v.reason },
    ];
  });
  $("#models").dataset.loaded = "true";
}

// ---------------------------------------------------------------- accuracy over time

const VERSION_COLOURS = ["#4e79a7", "#e15759", "#59a14f", "#b07aa1", "#f28e2b", "#76b7b2"];
const versionColour = {};
function colourOf(version) {
  if (!(version in versionColour)) versionColour[version] = VERSION_COLOURS[Object.keys(versionColour).length % VERSION_COLOURS.length];
  return versionColour[version];
}

// One chart: rolling relative pinball (left axis, a line per model version), rolling 80%
// coverage (right axis, dashed, nominal 0.80 dotted) and a marker where each promoted
// version took over.
function drawAccuracy(box, data) {
  box.replaceChildren();
  const pts = data.points.filter((p) => p.pinball_relative !== null);
  if (!pts.length) { box.textContent = data.database ? "No scored forecasts yet." : "No database configured."; box.dataset.rendered = "false"; return; }
  const W = 560, H = 240, M = { l: 44, r: 40, t: 18, b: 26 };
  const step = data.bucket_seconds;
  const t0 = pts[0].t - step / 2, t1 = pts[pts.length - 1].t + step / 2;
  const lmax = Math.max(...pts.map((p) => p.pinball_relative)) * 1.1 || 1;
  const x = (t) => M.l + ((t - t0) / Math.max(t1 - t0, 1)) * (W - M.l - M.r);
  const yl = (v) => H - M.b - (v / lmax) * (H - M.t - M.b);
  const yc = (v) => H - M.b - v * (H - M.t - M.b);
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `forecast accuracy of ${data.key}` });
  const axis = el("svg:g", { class: "axis" });
  for (let i = 0; i <= 4; i++) {
    const v = (lmax * i) / 4;
    axis.append(el("svg:line", { x1: M.l, x2: W - M.r, y1: yl(v), y2: yl(v), class: "grid-line" }));
    axis.append(el("svg:text", { x: M.l - 6, y: yl(v) + 4, "text-anchor": "end" }, v.toFixed(2)));
    axis.append(el("svg:text", { x: W - M.r + 6, y: yc(i / 4) + 4 }, pct(i / 4)));
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    axis.append(el("svg:text", { x: x(t), y: H - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, fmtDate(t)));
  }
  axis.append(el("svg:line", { x1: M.l, x2: W - M.r, y1: yc(0.8), y2: yc(0.8), class: "nominal" }));
  svg.append(axis);
  // relative pinball: one polyline per run of buckets of the same version
  let run = [];
  const flush = () => {
    if (!run.length) return;
    svg.append(el("svg:polyline", { points: run.map((p) => `${x(p.t)},${yl(p.pinball_relative)}`).join(" "), fill: "none", stroke: colourOf(run[0].version), "stroke-width": 2, class: "accuracy-pinball", "data-version": run[0].version }));
  };
  for (const p of pts) {
    if (run.length && p.version !== run[run.length - 1].version) { run.push(p); flush(); run = [p]; } else run.push(p);
  }
  flush();
  const cov = pts.filter((p) => p.coverage_80 !== null);
  svg.append(el("svg:polyline", { points: cov.map((p) => `${x(p.t)},${yc(p.coverage_80)}`).join(" "), fill: "none", stroke: "var(--muted)", "stroke-width": 1.2, "stroke-dasharray": "5 3", class: "accuracy-coverage" }));
  for (const m of data.promotions) {
    if (m.t === null || m.t < t0 || m.t > t1) continue;
    const g = el("svg:g", { class: "accuracy-promotion-marker" });
    g.append(el("svg:line", { x1: x(m.t - step / 2), x2: x(m.t - step / 2), y1: M.t, y2: H - M.b, class: "accuracy-promotion" }));
    const mx = x(m.t - step / 2), right = mx > W - M.r - 150;  // near the right edge: label to the left
    g.append(el("svg:text", { x: right ? mx - 4 : mx + 4, y: M.t + 10, "text-anchor": right ? "end" : "start", class: "promotion-label" }, `★ ${m.version}`));
    const title = el("svg:title", {}, `${m.version} promoted${m.champion_version ? ` over ${m.champion_version}` : ""}: ${m.reason}`);
    g.append(title);
    svg.append(g);
  }
  box.append(svg);
  box.dataset.rendered = "true";
}

async function refreshAccuracy() {
  const key = new URLSearchParams(location.search).get("sku");
  const [fleet, sku] = await Promise.all([
    getJSON("/api/accuracy/"),
    key ? getJSON(`/api/accuracy/?sku=${encodeURIComponent(key)}`) : Promise.resolve(null),
  ]);
  $("#accuracy-note").textContent = !fleet.database
    ? "No database configured (SHELFCAST_DATABASE_URL): forecasts are scored by the optimizer into PostgreSQL."
    : (fleet.error ? `Accuracy unavailable: ${fleet.error}`
      : `Rolling over the last ${fleet.window_buckets} buckets: relative pinball (sum pinball / sum demand, lower is better; a line per model version) and 80% interval coverage (dashed, right axis; nominal 80% dotted). ★ = a promoted version took over.`);
  drawAccuracy($("#accuracy-fleet"), fleet);
  if (sku) {
    $("#accuracy-sku-title").textContent = `SKU ${sku.key}`;
    drawAccuracy($("#accuracy-sku"), sku);
  }
  const versions = [...fleet.versions, ...(sku ? sku.versions : [])];
  const seen = new Set();
  $("#accuracy-legend").replaceChildren(...versions.filter((v) => !seen.has(v.version) && seen.add(v.version)).map((v) => {
    const item = el("span", { style: `--c: ${colourOf(v.version)}`, class: "accuracy-version" }, `${v.version} (${fmtDate(v.first)} – ${fmtDate(v.last)})`);
    return item;
  }));
  $("#accuracy").dataset.loaded = "true";
}

let searchTimer;
$("#q").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(async () => {
    const r = await getJSON(`/api/skus?limit=20&q=${encodeURIComponent($("#q").value)}`);
    $("#sku-list").replaceChildren(...r.skus.map((k) => el("option", { value: k })));
  }, 150);
});
$("#search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const key = $("#q").value.trim();
  if (!key) return;
  history.replaceState(null, "", `?sku=${encodeURIComponent(key)}`);
  showSku(key).catch((err) => { $("#sku").hidden = false; $("#chart").textContent = String(err); });
  refreshAccuracy().catch(() => {});
});

async function main() {
  const key = new URLSearchParams(location.search).get("sku");
  const jobs = [refreshOverview(), refreshModels(), refreshAccuracy()];
  if (key) { $("#q").value = key; jobs.push(showSku(key)); }
  await Promise.allSettled(jobs);
  document.body.dataset.loaded = "true";
  let ticks = 0;
  setInterval(() => {
    refreshOverview().catch(() => {});
    if (++ticks % 6 === 0) {  // a minute: retraining is rare, scores come a bucket at a time
      refreshModels().catch(() => {});
      refreshAccuracy().catch(() => {});
    }
    const k = new URLSearchParams(location.search).get("sku");
    if (k) showSku(k).catch(() => {});
  }, 10000);
}
main();
