// The audit log (admins): who did what, when, from where, and the result; filtered by user and peer, paged.

import * as api from "../api.js";
import { field, h, heading, replace, say, time } from "../dom.js";

const LIMIT = 50;

export async function auditPage(ctx) {
  ctx.setTitle("Audit log");
  const view = { user: ctx.query.get("user") || "", peer: ctx.query.get("peer") || "", offset: Math.max(0, parseInt(ctx.query.get("offset") || "0", 10) || 0) };
  const user = h("input", { value: view.user, spellcheck: "false", autocapitalize: "none", placeholder: "any" });
  const peer = h("input", { value: view.peer, spellcheck: "false", autocapitalize: "none", placeholder: "any" });
  const tbody = h("tbody");
  const summary = h("p", { class: "muted", id: "audit-summary", "aria-live": "polite" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages of the audit log" });
  const message = h("div", { class: "messages" });
  const form = h("form", { class: "toolbar", role: "search" },
    field("User", user), field("Peer", peer), h("div", { class: "field" }, h("button", { type: "submit" }, "Filter")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    update({ user: user.value.trim(), peer: peer.value.trim(), offset: 0 });
  });
  replace(ctx.main, heading("Audit log"),
    h("section", { class: "card", "aria-label": "Entries" }, form, message, summary,
      h("div", { class: "table-wrap" }, h("table", { class: "responsive", "aria-describedby": "audit-summary" },
        h("caption", { class: "visually-hidden" }, "Audit log, newest first"),
        h("thead", {}, h("tr", {}, ["When", "Who", "Via", "From", "What", "Target", "Result", "Detail"].map((t) => h("th", { scope: "col" }, t)))),
        tbody)), pager));

  function update(change) {
    Object.assign(view, change);
    const params = new URLSearchParams();
    if (view.user) params.set("user", view.user);
    if (view.peer) params.set("peer", view.peer);
    if (view.offset) params.set("offset", String(view.offset));
    const text = params.toString();
    history.replaceState(null, "", `/audit${text ? `?${text}` : ""}`);
    load();
  }

  async function load() {
    let page;
    try {
      page = await api.get("/audit", { user: view.user, peer: view.peer, offset: view.offset, limit: LIMIT });
    } catch (error) {
      say(message, error);
      return;
    }
    if (!ctx.alive()) return;
    say(message, null);
    replace(tbody, page.entries.map((e) => h("tr", {},
      h("td", { "data-label": "When" }, time(e.at)),
      h("td", { "data-label": "Who" }, e.actor),
      h("td", { "data-label": "Via" }, e.via),
      h("td", { "data-label": "From" }, e.address || ""),
      h("td", { "data-label": "What" }, h("code", {}, e.operation)),
      h("td", { "data-label": "Target" }, e.target || ""),
      h("td", { "data-label": "Result" }, h("span", { class: ["badge", e.result === "ok" ? "on" : "bad"] }, e.result)),
      h("td", { "data-label": "Detail" }, e.detail || ""))));
    if (!page.entries.length) tbody.append(h("tr", {}, h("td", { colspan: "8", class: "empty" }, "No entries.")));
    const first = page.total ? view.offset + 1 : 0;
    const about = [view.user && `user ${view.user}`, view.peer && `peer ${view.peer}`].filter(Boolean).join(" and ");
    summary.textContent = `${first}–${view.offset + page.entries.length} of ${page.total} entries${about ? ` for ${about}` : ""}, newest first`;
    replace(pager,
      h("button", { type: "button", class: "secondary", disabled: view.offset === 0, onclick: () => update({ offset: Math.max(0, view.offset - LIMIT) }) }, "Newer"),
      h("button", { type: "button", class: "secondary", disabled: view.offset + LIMIT >= page.total, onclick: () => update({ offset: view.offset + LIMIT }) }, "Older"));
  }
  await load();
}
