// The peers table: one page at a time from the API (search, sort and paging are the server's), the live state of
// just the shown peers from /status?name=..., refreshed every few seconds in place; add, enable/disable, delete.

import * as api from "../api.js";
import {
  ago, busy, bytes, confirmAction, field, h, heading, replace, say, section, select, time, toast,
} from "../dom.js";

const SORTS = [["created", "Added"], ["name", "Name"], ["address", "Address"], ["owner", "Owner"], ["expires", "Expiry"]];
const LIVE_MS = 5000;

export function splitNames(text) {
  return text.split(/[\s,]+/).map((n) => n.trim()).filter(Boolean);
}

export function onlineBadge(row) {
  if (!row) return h("span", { class: "badge off" }, "unknown");
  if (row.expired) return h("span", { class: "badge warn" }, "expired");
  if (!row.enabled) return h("span", { class: "badge off" }, "disabled");
  return row.online ? h("span", { class: "badge on" }, "online") : h("span", { class: "badge off" }, "offline");
}

export function trafficText(row) {
  if (!row) return "";
  return `↓ ${bytes(row.rx_bytes)} ↑ ${bytes(row.tx_bytes)}`;
}

export async function peersPage(ctx) {
  ctx.setTitle("Peers");
  const admin = ctx.session.role === "admin";
  const q = ctx.query;
  const view = {
    search: q.get("q") || "",
    sort: SORTS.some(([s]) => s === q.get("sort")) ? q.get("sort") : "created",
    descending: q.get("desc") === "1",
    offset: Math.max(0, parseInt(q.get("offset") || "0", 10) || 0),
    limit: [25, 50, 100].includes(parseInt(q.get("limit"), 10)) ? parseInt(q.get("limit"), 10) : 50,
  };
  const rowsByName = new Map();
  const tbody = h("tbody");
  const summary = h("p", { class: "muted", id: "peers-summary", "aria-live": "polite" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages of peers" });
  const message = h("div", { class: "messages" });

  const search = h("input", { type: "search", value: view.search, placeholder: "name, address or key", maxlength: "100", spellcheck: "false" });
  const sort = select(SORTS, { value: view.sort });
  sort.value = view.sort;
  const order = select([["0", "Ascending"], ["1", "Descending"]], {});
  order.value = view.descending ? "1" : "0";
  const size = select([["25", "25"], ["50", "50"], ["100", "100"]], {});
  size.value = String(view.limit);
  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => update({ search: search.value.trim(), offset: 0 }), 250);
  });
  sort.addEventListener("change", () => update({ sort: sort.value, offset: 0 }));
  order.addEventListener("change", () => update({ descending: order.value === "1", offset: 0 }));
  size.addEventListener("change", () => update({ limit: parseInt(size.value, 10), offset: 0 }));
  const tools = h("form", { class: "toolbar", role: "search", onsubmit: (e) => { e.preventDefault(); update({ search: search.value.trim(), offset: 0 }); } },
    field("Search", search), field("Sort by", sort), field("Order", order), field("Per page", size));

  const headers = [["Name"], ["Owner"], ["Address"], ["State"], ["Latest handshake"], ["Traffic"], ["Expires"], ["Enabled"], ["Actions"]];
  const table = h("table", { class: "peers responsive", "aria-describedby": "peers-summary" },
    h("caption", { class: "visually-hidden" }, "Peers"),
    h("thead", {}, h("tr", {}, headers.map(([t]) => h("th", { scope: "col" }, t)))), tbody);

  replace(ctx.main,
    heading(admin ? "Peers" : "My peers"),
    ctx.notice ? h("p", { class: "note", role: "status" }, ctx.notice) : null,
    section("Add peers", addForm(ctx, admin, () => load())),
    h("section", { class: "card", "aria-labelledby": "list-title" }, h("h2", { id: "list-title" }, "All peers"),
      tools, message, summary, h("div", { class: "table-wrap" }, table), pager));

  function update(change) {
    Object.assign(view, change);
    const params = new URLSearchParams();
    if (view.search) params.set("q", view.search);
    if (view.sort !== "created") params.set("sort", view.sort);
    if (view.descending) params.set("desc", "1");
    if (view.offset) params.set("offset", String(view.offset));
    if (view.limit !== 50) params.set("limit", String(view.limit));
    const text = params.toString();
    history.replaceState(null, "", `/peers${text ? `?${text}` : ""}`);
    load();
  }

  let loading = 0;
  async function load() {
    const mine = ++loading;
    let page;
    try {
      page = await api.get("/peers", { search: view.search, sort: view.sort, descending: view.descending, offset: view.offset, limit: view.limit });
    } catch (error) {
      say(message, error);
      return;
    }
    if (mine !== loading || !ctx.alive()) return;
    say(message, null);
    if (page.total && view.offset >= page.total) {
      update({ offset: Math.max(0, Math.floor((page.total - 1) / view.limit) * view.limit) });
      return;
    }
    rowsByName.clear();
    replace(tbody, page.peers.map((peer) => {
      const row = peerRow(ctx, admin, peer, load);
      rowsByName.set(peer.name, row);
      return row.tr;
    }));
    if (!page.peers.length) {
      tbody.append(h("tr", {}, h("td", { colspan: "9", class: "empty" },
        view.search ? `No peer matches '${view.search}'.` : "No peers yet: add one above.")));
    }
    const first = page.total ? view.offset + 1 : 0;
    const last = view.offset + page.peers.length;
    summary.textContent = `${first.toLocaleString()}–${last.toLocaleString()} of ${page.total.toLocaleString()} peers` +
      (view.search ? ` matching '${view.search}'` : "");
    drawPager(page.total);
    live();
  }

  function drawPager(total) {
    const pages = Math.max(1, Math.ceil(total / view.limit));
    const current = Math.floor(view.offset / view.limit) + 1;
    const go = (n) => update({ offset: (n - 1) * view.limit });
    replace(pager,
      h("button", { type: "button", class: "secondary", disabled: current <= 1, onclick: () => go(1) }, "First"),
      h("button", { type: "button", class: "secondary", disabled: current <= 1, onclick: () => go(current - 1), rel: "prev" }, "Previous"),
      h("span", { class: "muted" }, `Page ${current.toLocaleString()} of ${pages.toLocaleString()}`),
      h("button", { type: "button", class: "secondary", disabled: current >= pages, onclick: () => go(current + 1), rel: "next" }, "Next"),
      h("button", { type: "button", class: "secondary", disabled: current >= pages, onclick: () => go(pages) }, "Last"));
  }

  async function live() {
    if (!rowsByName.size) return;
    try {
      const status = await api.get("/status", { name: [...rowsByName.keys()] });
      if (!ctx.alive()) return;
      const byName = new Map(status.peers.map((p) => [p.name, p]));
      for (const [name, row] of rowsByName) row.live(byName.get(name), status.up);
    } catch (error) {
      // The next tick tries again; a lost session is handled by the API module.
    }
  }

  ctx.poll(live, LIVE_MS);
  await load();
}

function peerRow(ctx, admin, peer, reload) {
  const href = `/peers/${encodeURIComponent(peer.name)}`;
  const state = h("td", { "data-label": "State" }, onlineBadge({ ...peer, online: false }));
  const handshake = h("td", { "data-label": "Latest handshake" }, h("span", { class: "muted" }, "…"));
  const traffic = h("td", { "data-label": "Traffic", class: "num" }, "");
  // A switch: its name says what it controls, aria-checked its state (the visible On/Off is for the eyes).
  const toggle = h("button", { type: "button", class: ["switch", peer.enabled && "on"], role: "switch", "aria-checked": String(peer.enabled) },
    h("span", { class: "visually-hidden" }, `${peer.name} enabled`), h("span", { "aria-hidden": "true" }, peer.enabled ? "On" : "Off"));
  toggle.addEventListener("click", busy(toggle, null, async () => {
    await api.post(api.peerPath(peer.name, peer.enabled ? "/disable" : "/enable"));
    toast(`${peer.name} ${peer.enabled ? "disabled" : "enabled"}`);
    await reload();
  }));
  const remove = h("button", { type: "button", class: "danger small", "aria-label": `Delete ${peer.name}` }, "Delete");
  remove.addEventListener("click", busy(remove, null, async () => {
    const sure = await confirmAction(`Delete ${peer.name}?`,
      "Its keys and address are removed and its device loses the tunnel at once. This cannot be undone.", "Delete");
    if (!sure) return;
    await api.del(api.peerPath(peer.name));
    toast(`${peer.name} deleted`);
    await reload();
  }));
  const tr = h("tr", {},
    h("th", { scope: "row", "data-label": "Name" }, h("a", { href }, peer.name)),
    h("td", { "data-label": "Owner" }, peer.owner || h("span", { class: "muted" }, "—")),
    h("td", { "data-label": "Address" }, h("code", {}, peer.address4)),
    state, handshake, traffic,
    h("td", { "data-label": "Expires" }, peer.expires_at ? time(peer.expires_at, peer.expired ? "expired" : null) : h("span", { class: "muted" }, "never")),
    h("td", { "data-label": "Enabled" }, toggle),
    h("td", { "data-label": "Actions" }, remove));
  return {
    tr,
    live(status, up) {
      replace(state, onlineBadge(status ? { ...status, expired: peer.expired, enabled: peer.enabled } : (up === false ? { ...peer, online: false } : null)));
      replace(handshake, status && status.latest_handshake ? time(status.latest_handshake, ago(status.latest_handshake)) : h("span", { class: "muted" }, "never"));
      traffic.textContent = trafficText(status);
    },
  };
}

function addForm(ctx, admin, reload) {
  const names = h("input", { required: true, spellcheck: "false", autocapitalize: "none", placeholder: "laptop phone" });
  const owner = h("input", { spellcheck: "false", autocapitalize: "none" });
  const allowed = h("input", { spellcheck: "false", placeholder: "the server's default" });
  const keepalive = h("input", { inputmode: "numeric", placeholder: "off" });
  const expires = h("input", { spellcheck: "false", placeholder: "never" });
  const button = h("button", { type: "submit" }, "Add");
  const message = h("div", { class: "messages" });
  const form = h("form", { class: "stack" },
    field("Names", names, "One name, or several separated by spaces or commas: letters, digits, - and _."),
    h("details", {}, h("summary", {}, "More options"),
      h("div", { class: "grid" },
        admin ? field("Owner", owner, "A user name; empty: no owner (admins manage it)") : null,
        field("Allowed IPs", allowed, "What the client sends through the tunnel, e.g. 0.0.0.0/0, ::/0"),
        field("Keepalive", keepalive, "Seconds, e.g. 25 behind NAT"),
        field("Expires", expires, "e.g. 30d, 12h or 2026-12-31"))),
    message, h("div", { class: "row" }, button));
  form.addEventListener("submit", busy(button, message, async () => {
    const list = splitNames(names.value);
    if (!list.length) throw new Error("Give at least one name.");
    const body = { names: list };
    if (admin && owner.value.trim()) body.owner = owner.value.trim();
    if (allowed.value.trim()) body.allowed_ips = allowed.value.trim();
    if (keepalive.value.trim()) body.keepalive = keepalive.value.trim();
    if (expires.value.trim()) body.expires = expires.value.trim();
    const result = await api.post("/peers", body);
    names.value = "";
    const added = result.peers.map((p) => p.name);
    await reload(); // the table first, then the message that points at it
    say(message, null);
    message.append(h("p", { class: "note", role: "status" }, `Added ${added.length === 1 ? "" : `${added.length} peers: `}`,
      added.map((name, i) => [i ? ", " : "", h("a", { href: `/peers/${encodeURIComponent(name)}` }, name)]),
      added.length === 1 ? ": open it for its QR code and config." : "."));
  }));
  return form;
}
