// API tokens for scripts: create (scopes, expiry; admins also for another user), shown once; revoke; last use.

import * as api from "../api.js";
import { busy, checkbox, confirmAction, field, h, heading, replace, secretBox, section, time, toast } from "../dom.js";

const SCOPES = [
  ["read", "read: list and show peers, status, configs"],
  ["peers:write", "peers:write: add, change and remove peers"],
  ["admin", "admin: users, settings, audit (admins only)"],
  ["metrics", "metrics: the Prometheus /metrics"],
];

export async function tokensPage(ctx) {
  ctx.setTitle("API tokens");
  const admin = ctx.session.role === "admin";
  const tbody = h("tbody");
  const message = h("div", { class: "messages" });
  replace(ctx.main, heading("API tokens"),
    h("p", {}, "Scripts and CI send a token as ", h("code", {}, "Authorization: Bearer TOKEN"), ". A token never does more than its owner may."),
    section("Create a token", createForm(admin, () => load())),
    h("section", { class: "card", "aria-labelledby": "tokens-title" }, h("h2", { id: "tokens-title" }, admin ? "All tokens" : "Your tokens"), message,
      h("div", { class: "table-wrap" }, h("table", { class: "responsive" },
        h("caption", { class: "visually-hidden" }, "API tokens"),
        h("thead", {}, h("tr", {}, ["Name", "Owner", "Scopes", "Starts with", "Created", "Expires", "Last used", "State", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
        tbody))));

  async function load() {
    const list = await api.get("/tokens");
    if (!ctx.alive()) return;
    replace(tbody, list.tokens.map((t) => {
      const revoke = h("button", { type: "button", class: "danger small", disabled: t.revoked, "aria-label": `Revoke ${t.name} (${t.prefix}…)` }, "Revoke");
      revoke.addEventListener("click", busy(revoke, message, async () => {
        if (!(await confirmAction(`Revoke ${t.name}?`, "Scripts that use it are refused from now on.", "Revoke"))) return;
        await api.del(`/tokens/${t.id}`);
        toast(`${t.name} revoked`);
        await load();
      }));
      const expired = t.expires_at && t.expires_at <= Date.now() / 1000;
      return h("tr", {},
        h("th", { scope: "row", "data-label": "Name" }, t.name),
        h("td", { "data-label": "Owner" }, t.owner),
        h("td", { "data-label": "Scopes" }, t.scopes.join(", ")),
        h("td", { "data-label": "Starts with" }, h("code", {}, `${t.prefix}…`)),
        h("td", { "data-label": "Created" }, time(t.created_at)),
        h("td", { "data-label": "Expires" }, time(t.expires_at)),
        h("td", { "data-label": "Last used" }, time(t.last_used_at), t.last_used_from ? ` from ${t.last_used_from}` : ""),
        h("td", { "data-label": "State" }, h("span", { class: ["badge", t.revoked || expired ? "off" : "on"] }, t.revoked ? "revoked" : expired ? "expired" : "active")),
        h("td", { "data-label": "Actions" }, revoke));
    }));
    if (!list.tokens.length) tbody.append(h("tr", {}, h("td", { colspan: "9", class: "empty" }, "No tokens yet.")));
  }
  await load();
}

function createForm(admin, reload) {
  const name = h("input", { required: true, spellcheck: "false", placeholder: "CI" });
  const expires = h("input", { spellcheck: "false", placeholder: "never", value: "30d" });
  const owner = h("input", { spellcheck: "false", autocapitalize: "none", placeholder: "you" });
  const boxes = SCOPES.filter(([scope]) => admin || scope !== "admin").map(([scope, label]) => [scope, checkbox(label, { value: scope, checked: scope === "read" })]);
  const button = h("button", { type: "submit" }, "Create token");
  const message = h("div", { class: "messages" });
  const made = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "stack" },
    h("div", { class: "grid" }, field("Name", name), field("Expires", expires, "30d, 12h, a date, or empty for never"),
      admin ? field("Owner", owner, "A user name; empty: yourself") : null),
    h("fieldset", {}, h("legend", {}, "Scopes"), boxes.map(([, box]) => box)),
    message, h("div", { class: "row" }, button), made);
  form.addEventListener("submit", busy(button, message, async () => {
    const scopes = boxes.filter(([, box]) => box.querySelector("input").checked).map(([scope]) => scope);
    if (!scopes.length) throw new Error("Choose at least one scope.");
    const body = { name: name.value.trim(), scopes };
    if (expires.value.trim()) body.expires = expires.value.trim();
    if (admin && owner.value.trim()) body.owner = owner.value.trim();
    const token = await api.post("/tokens", body);
    replace(made, h("div", { class: "note" }, secretBox(`Token ${token.name}`, token.token, "Shown only now: copy it into the script's secret store.")));
    made.querySelector("input").focus();
    name.value = "";
    await reload();
  }));
  return form;
}
