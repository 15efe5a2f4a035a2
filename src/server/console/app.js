// eddy's web console: hash-routed pages over the JSON API of
// server/console.rs. Every figure is a query of the eddy_catalog system
// tables through POST /api/sql, shown as PostgreSQL prints it; the message
// browser reads /api/topics/{t}/messages; SUBSCRIBE streams through
// /api/subscribe (server-sent events). No build step, no dependencies.
"use strict";

const page = document.getElementById("page");
const statusLine = document.getElementById("status");
// What the current page started (timers, an EventSource), stopped when
// the route changes.
let cleanups = [];

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class SqlError extends Error {
  constructor(e) {
    super(`${e.code}: ${e.message}`);
    this.code = e.code;
  }
}

// Run statements; the results of each (throws the first error).
async function sql(text) {
  const r = await fetch("/api/sql", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ sql: text }),
  });
  const body = await r.json();
  if (body.error) throw new SqlError(body.error);
  return body.results;
}

// The rows of one query as objects keyed by column name.
async function rows(text) {
  const [res] = await sql(text);
  return res.rows.map((r) => Object.fromEntries(res.columns.map((c, i) => [c.name, r[i]])));
}

const NUMERIC = /^(int[248]|float[48]|numeric|oid)$/;

// A result table; `key` names the column whose value tags each row
// (data-key), and every cell carries its column (data-col).
function table(columns, data, opts = {}) {
  const head = el("tr", {}, columns.map((c) => el("th", {}, c.label ?? c.name)));
  const body = data.map((row) =>
    el("tr", { "data-key": opts.key ? row[opts.key] : undefined },
      columns.map((c) => {
        const v = row[c.name];
        if (c.render) return el("td", { "data-col": c.name }, c.render(v, row));
        if (v === null || v === undefined) return el("td", { class: "null", "data-col": c.name }, "NULL");
        return el("td", { class: c.num ? "num" : undefined, "data-col": c.name }, v);
      })));
  return el("table", { id: opts.id }, el("thead", {}, head), el("tbody", {}, body));
}

function resultTable(res, id) {
  const cols = res.columns.map((c, i) => ({ name: String(i), label: c.name, num: NUMERIC.test(c.type) }));
  const data = res.rows.map((r) => Object.fromEntries(r.map((v, i) => [String(i), v])));
  return table(cols, data, { id });
}

function showError(e) {
  return el("p", { class: "error", id: "error" }, e.message);
}

// Refresh `render` every `ms` while the page is shown.
function every(ms, render) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try {
      await render();
      statusLine.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      statusLine.textContent = e.message;
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  let timer = setTimeout(tick, 0);
  cleanups.push(() => { stopped = true; clearTimeout(timer); });
}

// A line chart of the last `keep` samples on a canvas.
class Chart {
  constructor(id, title, unit, keep = 120) {
    this.samples = [];
    this.keep = keep;
    this.unit = unit;
    this.canvas = el("canvas", { width: 680, height: 280 });
    this.now = el("span", { class: "now", "data-metric": id }, "–");
    this.node = el("div", { class: "chart", id: `chart-${id}`, "data-samples": 0 },
      el("div", { class: "title" }, el("span", {}, title), this.now), this.canvas);
  }
  push(v) {
    this.samples.push(v);
    if (this.samples.length > this.keep) this.samples.shift();
    this.node.setAttribute("data-samples", this.samples.length);
    this.now.textContent = `${fmt(v)} ${this.unit}`;
    this.draw();
  }
  draw() {
    const c = this.canvas, g = c.getContext("2d");
    const w = c.width, h = c.height, pad = 24;
    g.clearRect(0, 0, w, h);
    const max = Math.max(1, ...this.samples);
    g.strokeStyle = "#dfe3ea";
    g.fillStyle = "#6b7385";
    g.font = "20px system-ui";
    for (const f of [0, 0.5, 1]) {
      const y = h - pad - f * (h - 2 * pad);
      g.beginPath(); g.moveTo(pad, y); g.lineTo(w, y); g.stroke();
      g.fillText(fmt(max * f), pad + 4, y - 4);
    }
    g.strokeStyle = "#2f6fde";
    g.lineWidth = 3;
    g.beginPath();
    // The first samples spread over a minute's width, then scroll.
    const span = Math.max(this.samples.length, 60) - 1;
    this.samples.forEach((v, i) => {
      const x = pad + (i / span) * (w - pad);
      const y = h - pad - (v / max) * (h - 2 * pad);
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
  }
}

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (Math.abs(v) >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (Math.abs(v) >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

const TOTALS = `
SELECT
  (SELECT count(*) FROM eddy_catalog.topics WHERE NOT internal) AS topics,
  (SELECT count(*) FROM eddy_catalog.partitions p JOIN eddy_catalog.topics t ON p.topic = t.name WHERE NOT t.internal) AS partitions,
  (SELECT coalesce(sum(p.end_offset), 0) FROM eddy_catalog.partitions p JOIN eddy_catalog.topics t ON p.topic = t.name WHERE NOT t.internal) AS records_produced,
  (SELECT count(DISTINCT group_id) FROM eddy_catalog.consumer_groups) AS consumer_groups,
  (SELECT coalesce(sum(lag), 0) FROM eddy_catalog.consumer_groups) AS consumer_lag,
  (SELECT count(*) FROM eddy_catalog.materialized_views) AS views,
  (SELECT coalesce(sum(stream_records - stream_records_read), 0) FROM eddy_catalog.materialized_views) AS records_behind,
  (SELECT coalesce(sum(errors), 0) FROM eddy_catalog.decode_errors) AS decode_errors`;

const CARDS = [
  ["topics", "Topics"], ["partitions", "Partitions"], ["records_produced", "Records produced"],
  ["consumer_groups", "Consumer groups"], ["consumer_lag", "Consumer lag"], ["views", "Materialized views"],
  ["records_behind", "Records not yet in views"], ["decode_errors", "Records that did not decode"],
];

async function overview() {
  const cards = el("div", { class: "cards", id: "totals" });
  const throughput = new Chart("throughput", "Records produced per second", "rec/s");
  const lag = new Chart("lag", "Consumer-group lag", "records");
  const freshness = new Chart("freshness", "View freshness: stream records not yet in a view", "records");
  page.replaceChildren(el("h1", {}, "Overview"), cards,
    el("div", { class: "charts" }, throughput.node, lag.node, freshness.node));
  let last = null;
  every(1000, async () => {
    const [t] = await rows(TOTALS);
    cards.replaceChildren(...CARDS.map(([k, label]) =>
      el("div", { class: "card", "data-total": k },
        el("div", { class: "label" }, label), el("div", { class: "value" }, t[k]))));
    const now = performance.now(), produced = Number(t.records_produced);
    if (last) throughput.push(Math.max(0, (produced - last.produced) / ((now - last.at) / 1000)));
    last = { at: now, produced };
    lag.push(Number(t.consumer_lag));
    freshness.push(Number(t.records_behind));
  });
}

async function topics() {
  const holder = el("div");
  page.replaceChildren(el("h1", {}, "Topics"), holder);
  every(2000, async () => {
    const data = await rows(`
      SELECT t.name, t.partitions, sum(p.end_offset - p.start_offset) AS records,
             sum(p.start_offset) AS start_offset, sum(p.end_offset) AS end_offset,
             sum(p.size_bytes) AS size_bytes, t.config
      FROM eddy_catalog.topics t JOIN eddy_catalog.partitions p ON p.topic = t.name
      WHERE NOT t.internal GROUP BY t.name, t.partitions, t.config ORDER BY t.name`);
    holder.replaceChildren(data.length ? table([
      { name: "name", render: (v) => el("a", { href: `#/topics/${encodeURIComponent(v)}` }, v) },
      { name: "partitions", num: true }, { name: "records", num: true },
      { name: "start_offset", label: "start offsets (sum)", num: true },
      { name: "end_offset", label: "end offsets (sum)", num: true },
      { name: "size_bytes", label: "bytes on disk", num: true }, { name: "config" },
    ], data, { key: "name", id: "topics" }) : el("p", { class: "muted" }, "No topics yet."));
  });
}

async function topic(name) {
  const parts = el("div");
  const browser = el("div");
  page.replaceChildren(el("h1", {}, "Topic ", el("code", {}, name)), el("h2", {}, "Partitions"), parts,
    el("h2", {}, "Messages"), browser);
  const quoted = name.replace(/'/g, "''");
  const partitions = await rows(`SELECT "partition", start_offset, end_offset, size_bytes, segments
    FROM eddy_catalog.partitions WHERE topic = '${quoted}' ORDER BY "partition"`);
  parts.replaceChildren(table([
    { name: "partition", num: true }, { name: "start_offset", num: true }, { name: "end_offset", num: true },
    { name: "size_bytes", num: true }, { name: "segments", num: true },
  ], partitions, { key: "partition", id: "partitions" }));

  const partition = el("select", { id: "msg-partition" },
    partitions.map((p) => el("option", { value: p.partition }, `partition ${p.partition}`)));
  const offset = el("input", { id: "msg-offset", type: "number", min: 0, placeholder: "newest" });
  const list = el("div", { id: "messages" });
  let from = null;
  const load = async (at) => {
    const q = new URLSearchParams({ partition: partition.value, limit: 50 });
    if (at !== null && at !== undefined && at !== "") q.set("offset", at);
    const r = await fetch(`/api/topics/${encodeURIComponent(name)}/messages?${q}`);
    const body = await r.json();
    if (body.error) { list.replaceChildren(showError(new SqlError(body.error))); return; }
    from = body.from;
    list.replaceChildren(
      el("p", { class: "muted" }, `offsets ${body.from}–${body.from + body.messages.length - 1} of ${body.start_offset}–${body.end_offset - 1}`),
      table([
        { name: "offset", num: true },
        { name: "timestamp", render: (v) => new Date(v).toISOString() },
        { name: "key" }, { name: "value", render: (v, m) => el("pre", {}, m.binary ? `(base64) ${v}` : v) },
        { name: "headers", render: (v) => v.map(([k, h]) => `${k}=${h}`).join(", ") },
      ], body.messages, { key: "offset", id: "message-table" }));
  };
  browser.replaceChildren(el("div", { class: "toolbar" }, partition, "from offset", offset,
    el("button", { class: "primary", id: "msg-load", onclick: () => load(offset.value) }, "Show"),
    el("button", { onclick: () => load(Math.max(0, (from ?? 0) - 50)) }, "Older"),
    el("button", { onclick: () => load((from ?? 0) + 50) }, "Newer"),
    el("button", { onclick: () => { offset.value = ""; load(null); } }, "Newest")), list);
  partition.addEventListener("change", () => load(offset.value));
  await load(null);
}

async function groups() {
  const holder = el("div");
  page.replaceChildren(el("h1", {}, "Consumer groups"), holder);
  every(2000, async () => {
    const data = await rows(`SELECT group_id, topic, "partition", committed_offset, end_offset, lag
      FROM eddy_catalog.consumer_groups ORDER BY group_id, topic, "partition"`);
    if (!data.length) { holder.replaceChildren(el("p", { class: "muted" }, "No consumer group has committed offsets.")); return; }
    const byGroup = new Map();
    for (const r of data) {
      if (!byGroup.has(r.group_id)) byGroup.set(r.group_id, []);
      byGroup.get(r.group_id).push({ ...r, key: `${r.group_id}/${r.topic}/${r.partition}` });
    }
    holder.replaceChildren(...[...byGroup].map(([g, rs]) => el("section", { "data-group": g },
      el("h2", {}, g, " ", el("span", { class: "badge", "data-col": "total_lag" },
        `lag ${rs.reduce((s, r) => s + Number(r.lag ?? 0), 0)}`)),
      table([
        { name: "topic" }, { name: "partition", num: true }, { name: "committed_offset", num: true },
        { name: "end_offset", num: true }, { name: "lag", num: true },
      ], rs, { key: "key" }))));
  });
}

async function relations() {
  const holder = el("div");
  page.replaceChildren(el("h1", {}, "Streams, tables and views"), holder);
  every(2000, async () => {
    const data = await rows(`SELECT r.name, r.kind, r.topic, v."rows", v.status,
        v.stream_records - v.stream_records_read AS behind, r.create_sql
      FROM eddy_catalog.relations r LEFT JOIN eddy_catalog.materialized_views v ON v.name = r.name
      ORDER BY r.kind, r.name`);
    holder.replaceChildren(data.length ? table([
      { name: "name" }, { name: "kind" }, { name: "topic" }, { name: "rows", num: true },
      { name: "status", render: (v) => v === null ? "" : el("span", { class: v === "running" ? "badge" : "badge bad" }, v) },
      { name: "behind", label: "records behind", num: true },
      { name: "create_sql", label: "SQL", render: (v) => el("pre", { class: "sql" }, v) },
      { name: "subscribe", label: "", render: (_, r) => el("a", { href: `#/sql?subscribe=${encodeURIComponent(r.name)}` }, "subscribe") },
    ], data, { key: "name", id: "relations" }) : el("p", { class: "muted" }, "Nothing created yet."));
  });
}

function sqlEditor(params) {
  const text = el("textarea", { id: "sql", spellcheck: "false" });
  text.value = params.get("q") ?? (params.get("subscribe") ? `SUBSCRIBE ${params.get("subscribe")}` : "SELECT * FROM eddy_catalog.materialized_views;");
  const out = el("div", { id: "result" });
  const tag = el("span", { id: "tag", class: "muted" });
  let source = null;
  const stop = () => { if (source) { source.close(); source = null; } stopButton.disabled = true; };
  cleanups.push(stop);
  const run = async () => {
    stop();
    tag.textContent = "running…";
    out.replaceChildren();
    const r = await fetch("/api/sql", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ sql: text.value }),
    });
    const body = await r.json();
    const parts = (body.results ?? []).map((res, i) => el("div", { class: "statement", "data-statement": i },
      res.columns.length ? resultTable(res, i === body.results.length - 1 ? "result-table" : undefined) : null,
      el("p", { class: "muted" }, res.tag + (res.truncated ? ` (first ${res.rows.length} shown)` : ""))));
    out.replaceChildren(...parts, body.error ? showError(new SqlError(body.error)) : "");
    tag.textContent = body.error ? "error" : (body.results.at(-1)?.tag ?? "");
  };
  const subscribe = () => {
    stop();
    out.replaceChildren();
    tag.textContent = "subscribing…";
    let columns = [], n = 0;
    const tbody = el("tbody");
    source = new EventSource(`/api/subscribe?${new URLSearchParams({ sql: text.value })}`);
    stopButton.disabled = false;
    source.addEventListener("columns", (e) => {
      columns = JSON.parse(e.data).columns;
      out.replaceChildren(el("table", { id: "subscribe-table" },
        el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c.name)))), tbody));
      tag.textContent = "streaming";
    });
    source.addEventListener("rows", (e) => {
      for (const r of JSON.parse(e.data).rows) {
        n += 1;
        tbody.append(el("tr", { "data-row": n }, r.map((v, i) => el("td",
          { "data-col": columns[i]?.name, class: v === null ? "null" : undefined }, v ?? "NULL"))));
      }
      while (tbody.rows.length > 1000) tbody.deleteRow(0);
      tag.textContent = `streaming: ${n} rows`;
    });
    source.addEventListener("error", (e) => {
      if (e.data) { out.append(showError(new SqlError(JSON.parse(e.data)))); tag.textContent = "error"; }
      stop();
    });
  };
  const stopButton = el("button", { id: "stop", disabled: true, onclick: () => { stop(); tag.textContent = "stopped"; } }, "Stop");
  text.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(); });
  page.replaceChildren(el("h1", {}, "SQL"), text,
    el("div", { class: "toolbar" },
      el("button", { class: "primary", id: "run", onclick: run }, "Run (Ctrl+Enter)"),
      el("button", { id: "subscribe", onclick: subscribe }, "Subscribe"), stopButton, tag),
    out);
  if (params.get("subscribe")) subscribe();
}

async function route() {
  for (const c of cleanups) c();
  cleanups = [];
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = (path || "/").split("/").filter(Boolean);
  const params = new URLSearchParams(query ?? "");
  const section = parts[0] ?? "overview";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === section);
  try {
    if (section === "topics" && parts[1]) await topic(decodeURIComponent(parts[1]));
    else if (section === "topics") await topics();
    else if (section === "groups") await groups();
    else if (section === "relations") await relations();
    else if (section === "sql") sqlEditor(params);
    else await overview();
  } catch (e) {
    page.replaceChildren(showError(e));
  }
}

window.addEventListener("hashchange", route);
route();
