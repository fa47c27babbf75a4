// The traffic chart: received and sent bytes per minute (or hour) from the persisted history, drawn as SVG
// (colours come from the stylesheet). The summary a screen reader hears is the chart's label.

import { bytes, h } from "./dom.js";

// One SVG unit is one CSS pixel at the width the chart is drawn at, so labels keep their size on any screen.
const PAD = { left: 64, right: 8, top: 10, bottom: 26 };
const SPAN = { hour: 3600, day: 86400, month: 31 * 86400 };

function buckets(series) {
  const step = series.resolution;
  const now = Math.floor(Date.now() / 1000);
  const end = now - (now % step);
  const start = end - SPAN[series.range] + step;
  const byTime = new Map(series.points.map((p) => [p.at, p]));
  const out = [];
  for (let at = start; at <= end; at += step) {
    const p = byTime.get(at);
    out.push({ at, rx: p ? p.rx : 0, tx: p ? p.tx : 0 });
  }
  return out;
}

function niceMax(value) {
  if (value <= 0) return 1024;
  const exp = 2 ** Math.ceil(Math.log2(value));
  return exp;
}

function label(at, range) {
  const d = new Date(at * 1000);
  if (range === "month") return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

function path(points, key, x, y, close) {
  let d = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[key]).toFixed(1)}`).join("");
  if (close && points.length) d += `L${x(points.length - 1).toFixed(1)},${y(0)}L${x(0).toFixed(1)},${y(0)}Z`;
  return d;
}

export function trafficChart(series, what, width = 640) {
  const W = Math.max(280, Math.round(width));
  const H = W < 500 ? 180 : 220;
  const points = buckets(series);
  const rx = points.reduce((a, p) => a + p.rx, 0);
  const tx = points.reduce((a, p) => a + p.tx, 0);
  const peak = Math.max(0, ...points.map((p) => Math.max(p.rx, p.tx)));
  const top = niceMax(peak);
  const per = series.resolution === 60 ? "minute" : "hour";
  const span = { hour: "hour", day: "day", month: "month" }[series.range];
  const summary = `${what} in the last ${span}: received ${bytes(rx)}, sent ${bytes(tx)}; busiest ${per}: ${bytes(peak)}`;
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (points.length > 1 ? (i * innerW) / (points.length - 1) : 0);
  const y = (v) => PAD.top + innerH - (v / top) * innerH;
  const grid = [0, 0.5, 1].map((f) => {
    const yy = y(top * f);
    return [
      h("svg:line", { x1: PAD.left, x2: W - PAD.right, y1: yy, y2: yy, class: "grid" }),
      h("svg:text", { x: PAD.left - 6, y: yy + 4, "text-anchor": "end", class: "axis" }, bytes(top * f)),
    ];
  });
  const ticks = [0, Math.floor(points.length / 2), points.length - 1].map((i, n) =>
    h("svg:text", { x: x(i), y: H - 8, "text-anchor": ["start", "middle", "end"][n], class: "axis" },
      label(points[i].at, series.range)));
  const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": summary },
    grid, ticks,
    h("svg:path", { d: path(points, "rx", x, y, true), class: "rx-area" }),
    h("svg:path", { d: path(points, "rx", x, y, false), class: "rx-line" }),
    h("svg:path", { d: path(points, "tx", x, y, false), class: "tx-line" }));
  const legend = h("p", { class: "legend" },
    h("span", { class: "swatch rx" }), `Received ${bytes(rx)}`, " ",
    h("span", { class: "swatch tx" }), `Sent ${bytes(tx)}`, " ",
    h("span", { class: "muted" }, `(per ${per}; history kept by the gateway)`));
  return h("figure", { class: "chart-box" }, svg, legend);
}

// A chart with hour/day/month buttons; `load(range)` returns the API's series.
export function chartPanel(what, load, initial = "day") {
  const box = h("div", { class: "chart-slot", "aria-live": "polite" });
  const buttons = {};
  let current = initial;
  async function show(range) {
    current = range;
    for (const [name, button] of Object.entries(buttons)) button.setAttribute("aria-pressed", String(name === range));
    try {
      const series = await load(range);
      box.replaceChildren(trafficChart(series, what, box.clientWidth || 640));
    } catch (error) {
      box.replaceChildren(h("p", { class: "alert", role: "alert" }, error.text || error.message));
    }
  }
  const group = h("div", { class: "segmented", role: "group", "aria-label": "Time range" },
    ["hour", "day", "month"].map((range) => {
      buttons[range] = h("button", { type: "button", class: "secondary", "aria-pressed": "false", onclick: () => show(range) },
        `Last ${range}`);
      return buttons[range];
    }));
  const panel = h("div", { class: "chart-panel" }, group, box);
  show(initial);
  return { panel, refresh: () => show(current) };
}
