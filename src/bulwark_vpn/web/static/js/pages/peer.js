// One peer: its live state (handshake, endpoint, traffic), the QR code and config download, share links, the
// traffic history chart, and changes (allowed IPs, keepalive, expiry, owner, enable/disable, delete).

import * as api from "../api.js";
import { chartPanel } from "../chart.js";
import {
  ago, busy, bytes, confirmAction, field, h, heading, replace, say, secretBox, section, select, time, toast,
} from "../dom.js";
import { onlineBadge } from "./peers.js";

const LIVE_MS = 5000;
const CHART_MS = 60000;

export async function peerPage(ctx) {
  const [name] = ctx.params;
  ctx.setTitle(name);
  let peer;
  try {
    peer = await api.get(api.peerPath(name));
  } catch (error) {
    if (error.status === 404) {
      ctx.setTitle("Not found");
      replace(ctx.main, heading("Peer not found"),
        h("p", { class: "alert", role: "alert" }, `Not found: there is no peer named '${name}' that you can see.`),
        h("p", {}, h("a", { href: "/peers" }, "Back to the peers")));
      return;
    }
    throw error;
  }
  if (!ctx.alive()) return;
  const admin = ctx.session.role === "admin";
  const badge = h("span", { id: "peer-state" }, onlineBadge({ ...peer, online: false }));
  const facts = {
    handshake: h("dd", { id: "peer-handshake" }, "…"),
    endpoint: h("dd", { id: "peer-endpoint" }, "…"),
    traffic: h("dd", { id: "peer-traffic" }, "…"),
  };
  const chart = chartPanel(`Traffic of ${peer.name}`, (range) => api.get(api.peerPath(peer.name, "/traffic"), { range }));
  replace(ctx.main,
    heading(peer.name, badge),
    h("p", {}, h("a", { href: "/peers" }, "← All peers")),
    h("div", { class: "columns" },
      section("Connection",
        h("dl", { class: "facts" },
          h("dt", {}, "Latest handshake"), facts.handshake,
          h("dt", {}, "Endpoint"), facts.endpoint,
          h("dt", {}, "Traffic since the gateway started"), facts.traffic,
          h("dt", {}, "Address"), h("dd", {}, h("code", {}, [peer.address4, peer.address6].filter(Boolean).join(", "))),
          h("dt", {}, "Public key"), h("dd", {}, h("code", { class: "key" }, peer.public_key)),
          h("dt", {}, "Allowed IPs (client)"), h("dd", {}, h("code", {}, peer.allowed_ips.join(", "))),
          peer.server_allowed_ips.length ? [h("dt", {}, "Networks behind it"), h("dd", {}, h("code", {}, peer.server_allowed_ips.join(", ")))] : null,
          h("dt", {}, "Keepalive"), h("dd", {}, peer.keepalive ? `${peer.keepalive} s` : "off"),
          h("dt", {}, "Owner"), h("dd", {}, peer.owner || "none"),
          h("dt", {}, "Expires"), h("dd", {}, peer.expires_at ? time(peer.expires_at) : "never"),
          h("dt", {}, "Enabled"), h("dd", {}, peer.enabled ? "yes" : "no"))),
      section("Config", configPanel(peer))),
    section("Traffic history", chart.panel),
    section("Share link", sharePanel(ctx, peer)),
    section("Change", editForm(ctx, peer, admin)),
    section("Danger zone", dangerPanel(ctx, peer)));

  async function live() {
    try {
      const status = await api.get("/status", { name: peer.name });
      if (!ctx.alive()) return;
      const row = status.peers.find((p) => p.name === peer.name);
      replace(badge, onlineBadge(row ? { ...row, expired: peer.expired } : { ...peer, online: false }));
      replace(facts.handshake, row && row.latest_handshake ? time(row.latest_handshake, ago(row.latest_handshake)) : "never");
      facts.endpoint.textContent = (row && row.endpoint) || (status.up ? "not connected" : "the gateway is down");
      facts.traffic.textContent = row ? `received ${bytes(row.rx_bytes)}, sent ${bytes(row.tx_bytes)}` : "none";
    } catch (error) {
      // Tried again at the next tick.
    }
  }
  ctx.poll(live, LIVE_MS);
  ctx.poll(chart.refresh, CHART_MS);
  await live();
}

function configPanel(peer) {
  if (!peer.has_private_key) {
    return h("p", {}, "This peer brought its own key pair: its config lives only on the client.");
  }
  const slot = h("div", { class: "qr-box", id: "peer-qr" });
  const show = h("button", { type: "button", class: "secondary", "aria-controls": "peer-qr", "aria-expanded": "false" }, "Show QR code");
  show.addEventListener("click", () => {
    const open = show.getAttribute("aria-expanded") === "true";
    if (open) {
      replace(slot);
    } else {
      replace(slot, h("img", { src: `/api/v1${api.peerPath(peer.name, "/qr.svg")}`, alt: `QR code of the WireGuard config of ${peer.name}`, class: "qr", id: "peer-qr-image" }));
    }
    show.setAttribute("aria-expanded", String(!open));
    show.textContent = open ? "Show QR code" : "Hide QR code";
  });
  return h("div", { class: "stack" },
    h("p", {}, "Scan the QR code with the WireGuard app, or download the file for ", h("code", {}, "wg-quick up"), "."),
    h("p", { class: "muted" }, "Both hold the peer's private key: show them only to its owner."),
    h("div", { class: "row" },
      h("a", { class: "button", href: `/api/v1${api.peerPath(peer.name, "/config")}`, download: peer.config_filename }, `Download ${peer.config_filename}`),
      show),
    slot);
}

function sharePanel(ctx, peer) {
  if (!peer.has_private_key) return h("p", {}, "There is no config to share: it lives only on the client.");
  const expires = select([["1h", "1 hour"], ["24h", "24 hours"], ["7d", "7 days"], ["30d", "30 days"]], {});
  expires.value = "24h";
  const button = h("button", { type: "submit" }, "Create share link");
  const message = h("div", { class: "messages" });
  const result = h("div");
  const list = h("div");
  const form = h("form", { class: "stack" },
    h("p", {}, "A link that shows this config and its QR code once, to one person, without an account."),
    field("Expires after", expires), message, h("div", { class: "row" }, button), result);
  form.addEventListener("submit", busy(button, message, async () => {
    const made = await api.post(api.peerPath(peer.name, "/shares"), { expires: expires.value });
    // The link as the API makes it: on the gateway's web address (the api_url setting), which the person it is
    // for can reach, whatever address this page was opened on.
    replace(result, secretBox("Share link (shown once)", made.url, `Works once, until ${new Date(made.expires_at * 1000).toLocaleString()}.`));
    await drawList();
  }));
  async function drawList() {
    const shares = (await api.get("/shares", { peer: peer.name })).shares.filter((s) => !s.used && !s.revoked && s.expires_at > Date.now() / 1000);
    if (!shares.length) {
      replace(list);
      return;
    }
    replace(list, h("h3", {}, "Open links"), h("ul", { class: "plain" }, shares.map((s) => {
      const revoke = h("button", { type: "button", class: "secondary small" }, "Revoke");
      revoke.addEventListener("click", busy(revoke, null, async () => {
        await api.del(`/shares/${s.id}`);
        toast("Share link revoked");
        await drawList();
      }));
      return h("li", {}, `Link ${s.id}, by ${s.created_by}, expires `, time(s.expires_at), " ", revoke);
    })));
  }
  drawList().catch(() => {});
  return h("div", {}, form, list);
}

function editForm(ctx, peer, admin) {
  const initial = {
    allowed_ips: peer.allowed_ips.join(", "),
    keepalive: peer.keepalive ? String(peer.keepalive) : "",
    expires: peer.expires_at ? new Date(peer.expires_at * 1000).toISOString().slice(0, 10) : "",
    owner: peer.owner || "",
  };
  const inputs = {
    allowed_ips: h("input", { value: initial.allowed_ips, spellcheck: "false" }),
    keepalive: h("input", { value: initial.keepalive, inputmode: "numeric", placeholder: "off" }),
    expires: h("input", { value: initial.expires, spellcheck: "false", placeholder: "never" }),
    owner: h("input", { value: initial.owner, spellcheck: "false", autocapitalize: "none", placeholder: "none" }),
  };
  const button = h("button", { type: "submit" }, "Save changes");
  const message = h("div", { class: "messages" });
  const form = h("form", { class: "stack" },
    h("div", { class: "grid" },
      field("Allowed IPs (client)", inputs.allowed_ips, "Empty: back to the server's default."),
      field("Keepalive (seconds)", inputs.keepalive, "Empty: off."),
      field("Expires", inputs.expires, "30d, 12h or a date like 2026-12-31; empty: never."),
      admin ? field("Owner", inputs.owner, "A user name; empty: no owner.") : null),
    message, h("div", { class: "row" }, button));
  form.addEventListener("submit", busy(button, message, async () => {
    // Only what changed is sent; a field emptied is cleared ("not given" is not "zero").
    const body = { clear: [] };
    for (const key of Object.keys(initial)) {
      if (key === "owner" && !admin) continue;
      const value = inputs[key].value.trim();
      if (value === initial[key]) continue;
      if (value === "") body.clear.push(key);
      else body[key] = value;
    }
    if (Object.keys(body).length === 1 && !body.clear.length) {
      say(message, "Nothing changed.", "note");
      return;
    }
    await api.patch(api.peerPath(peer.name), body);
    toast(`${peer.name} saved`);
    ctx.navigate(location.pathname, { replaceState: true });
  }));
  return form;
}

function dangerPanel(ctx, peer) {
  const toggle = h("button", { type: "button", class: "secondary" }, peer.enabled ? "Disable" : "Enable");
  toggle.addEventListener("click", busy(toggle, null, async () => {
    await api.post(api.peerPath(peer.name, peer.enabled ? "/disable" : "/enable"));
    toast(`${peer.name} ${peer.enabled ? "disabled" : "enabled"}`);
    ctx.navigate(location.pathname, { replaceState: true });
  }));
  const remove = h("button", { type: "button", class: "danger" }, "Delete peer");
  remove.addEventListener("click", busy(remove, null, async () => {
    const sure = await confirmAction(`Delete ${peer.name}?`,
      "Its keys and address are removed and its device loses the tunnel at once. This cannot be undone.", "Delete");
    if (!sure) return;
    await api.del(api.peerPath(peer.name));
    ctx.navigate("/peers", { notice: `${peer.name} deleted.` });
  }));
  return h("div", { class: "row" },
    h("p", { class: "muted" }, peer.enabled ? "A disabled peer keeps its keys and address but cannot connect." : "This peer is disabled."),
    toggle, remove);
}
