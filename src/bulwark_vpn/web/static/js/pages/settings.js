// The gateway's settings (admins): all of them to read; the safe ones (those that cannot cut off the gateway or
// this page) to change, each sent only when changed and checked by the same parsers as `bulwark init`.

import * as api from "../api.js";
import { busy, checkbox, field, h, heading, replace, say, section, toast } from "../dom.js";

const HINTS = {
  server_url: "The public host name or address clients connect to (auto: discovered).",
  server_port: "The UDP port clients connect to, when it differs from the listen port (a forwarded port).",
  peer_dns: "DNS servers for new configs: auto (the gateway), empty, or a list.",
  allowed_ips: "What new clients send through the tunnel by default, e.g. 0.0.0.0/0, ::/0.",
  mtu: "Interface MTU for the server and clients.",
  peer_to_peer: "Peers may reach each other through the gateway.",
  lan_to_peers: "Hosts on the gateway's networks may reach the peers.",
  host_access: "Peers may reach services on the gateway host itself (besides DNS and this API).",
  dns_clients: "Networks besides the tunnel whose DNS queries the gateway answers.",
  api_url: "Where people open these pages (used in setup and share links).",
  require_2fa: "Everyone must set up two-factor sign-in.",
  audit_retention_days: "Days the audit log keeps its entries.",
};

const show = (value) => (Array.isArray(value) ? value.join(", ") : value === null || value === undefined ? "" : String(value));

export async function settingsPage(ctx) {
  ctx.setTitle("Settings");
  const view = await api.get("/settings");
  if (!ctx.alive()) return;
  const safe = new Set(view.safe_to_change);
  const inputs = {};
  const controls = view.safe_to_change.map((key) => {
    const value = view.settings[key];
    if (typeof value === "boolean") {
      const box = checkbox(key, { checked: value, name: key }, HINTS[key]);
      inputs[key] = { read: () => box.querySelector("input").checked, initial: value };
      return box;
    }
    const input = h("input", { name: key, value: show(value), spellcheck: "false", autocapitalize: "none" });
    inputs[key] = { read: () => input.value.trim(), initial: show(value) };
    return field(key, input, HINTS[key]);
  });
  const button = h("button", { type: "submit" }, "Save settings");
  const message = h("div", { class: "messages" });
  const form = h("form", { class: "stack" }, h("div", { class: "grid" }, controls), message, h("div", { class: "row" }, button));
  form.addEventListener("submit", busy(button, message, async () => {
    const body = {};
    for (const [key, input] of Object.entries(inputs)) {
      const value = input.read();
      if (value !== input.initial) body[key] = value;
    }
    if (!Object.keys(body).length) {
      say(message, "Nothing changed.", "note");
      return;
    }
    await api.patch("/settings", body);
    toast(`Saved: ${Object.keys(body).join(", ")}`);
    ctx.navigate("/settings", { replaceState: true });
  }));
  const fixed = Object.entries(view.settings).filter(([key]) => !safe.has(key));
  replace(ctx.main, heading("Settings"),
    section("Safe to change here", form),
    section("Changed on the gateway only",
      h("p", {}, "These could cut off the gateway or this page: change them with ", h("code", {}, "bulwark init"), " on the gateway."),
      h("div", { class: "table-wrap" }, h("table", { class: "settings" },
        h("caption", { class: "visually-hidden" }, "Settings changed on the gateway only"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Setting"), h("th", { scope: "col" }, "Value"))),
        h("tbody", {}, fixed.map(([key, value]) => h("tr", {}, h("th", { scope: "row" }, key), h("td", {}, h("code", {}, show(value) || "—")))))))));
}
