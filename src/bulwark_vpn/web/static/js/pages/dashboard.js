// The admin's dashboard: the gateway up or down, its backend, peers online of all, the total traffic chart, and
// the doctor's checks with each problem's evidence and fix (run again with a button).

import * as api from "../api.js";
import { chartPanel } from "../chart.js";
import { busy, h, heading, moment, replace, section } from "../dom.js";

const LIVE_MS = 5000;
const CHART_MS = 60000;
const ORDER = { fail: 0, warn: 1, ok: 2, skip: 3 };

export async function dashboardPage(ctx) {
  ctx.setTitle("Dashboard");
  const tiles = h("div", { class: "tiles", "aria-live": "polite" });
  const doctor = h("div");
  const chart = chartPanel("Traffic of the gateway", (range) => api.get("/traffic", { range }));
  replace(ctx.main, heading("Dashboard"), tiles,
    section("Total traffic", chart.panel),
    section("Health checks", doctor));

  async function live() {
    let status;
    try {
      status = await api.get("/status", { summary: true });
    } catch (error) {
      replace(tiles, h("p", { class: "alert", role: "alert" }, error.text));
      return;
    }
    if (!ctx.alive()) return;
    replace(tiles,
      tile("Gateway", status.up ? "up" : "down", status.up ? "on" : "bad", `${status.interface}${status.listen_port ? `, UDP ${status.listen_port}` : ""}`, "gateway-state"),
      tile("Backend", status.backend || "—", "", status.up ? "how WireGuard runs" : "not running"),
      tile("Peers online", `${status.peers_online.toLocaleString()} / ${status.peers_total.toLocaleString()}`, status.peers_online ? "on" : "",
        "handshake in the last 3 minutes", "peers-online"),
      tile("Addresses", status.addresses.join(", ") || "—", "small", "the gateway's tunnel addresses"));
  }

  await Promise.all([live(), drawDoctor(ctx, doctor)]);
  ctx.poll(live, LIVE_MS);
  ctx.poll(chart.refresh, CHART_MS);
}

function tile(label, value, kind, note, id) {
  return h("div", { class: "tile" }, h("p", { class: "tile-label" }, label),
    h("p", { class: ["tile-value", kind], id }, value), h("p", { class: "muted" }, note));
}

async function drawDoctor(ctx, box) {
  const run = h("button", { type: "button" }, "Run checks");
  const message = h("div", { class: "messages" });
  const results = h("div", { "aria-live": "polite" });
  run.addEventListener("click", busy(run, message, async () => {
    replace(results, h("p", { class: "muted" }, "Running the checks…"));
    showReport(results, await api.post("/doctor"));
  }));
  replace(box, h("div", { class: "row" }, run, h("span", { class: "muted" }, "Checks the gateway's device, routes, firewall and DNS; nothing is changed.")), message, results);
  try {
    showReport(results, await api.get("/doctor"));
  } catch (error) {
    if (error.status !== 404) throw error;
    replace(results, h("p", { class: "muted" }, "The checks have not run since the API started: run them."));
  }
}

function showReport(box, report) {
  const checks = [...report.checks].sort((a, b) => (ORDER[a.status] ?? 9) - (ORDER[b.status] ?? 9));
  const counts = {};
  checks.forEach((c) => {
    counts[c.status] = (counts[c.status] || 0) + 1;
  });
  const verdict = report.failed ? "Problems found" : counts.warn ? "No check failed" : "All checks passed";
  replace(box,
    h("p", { class: report.failed ? "alert" : "note", id: "doctor-verdict" },
      `${verdict}: ${["fail", "warn", "ok", "skip"].filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(", ")}`,
      report.at ? h("span", { class: "muted" }, ` (run ${moment(report.at)})`) : null),
    h("ul", { class: "checks" }, checks.map((c) => h("li", { class: ["check-item", c.status] },
      h("p", {}, h("span", { class: ["badge", c.status === "ok" ? "on" : c.status === "fail" ? "bad" : c.status === "warn" ? "warn" : "off"] }, c.status),
        " ", h("strong", {}, c.name)),
      h("p", { class: "evidence" }, c.evidence),
      c.fix ? h("p", { class: "fix" }, h("strong", {}, "Fix: "), c.fix, c.fixable ? h("span", { class: "muted" }, " (bulwark doctor --fix applies it)") : null) : null))));
}
