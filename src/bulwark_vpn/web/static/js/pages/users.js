// Users (admins): add one (the answer's setup link is shown once), change role, peer limit and required 2FA,
// reset 2FA, make a new setup link, remove.

import * as api from "../api.js";
import {
  busy, checkbox, confirmAction, field, h, heading, replace, say, secretBox, section, select, time, toast,
} from "../dom.js";

export async function usersPage(ctx) {
  ctx.setTitle("Users");
  const tbody = h("tbody");
  const linkSlot = h("div", { "aria-live": "polite" });
  const message = h("div", { class: "messages" });
  replace(ctx.main, heading("Users"),
    section("Add a user", addForm(linkSlot, () => load())),
    h("section", { class: "card", "aria-labelledby": "users-title" }, h("h2", { id: "users-title" }, "All users"), message,
      h("div", { class: "table-wrap" }, h("table", { class: "responsive" },
        h("caption", { class: "visually-hidden" }, "Users"),
        h("thead", {}, h("tr", {}, ["Name", "Role", "Peers", "Peer limit", "Two-factor", "Created", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
        tbody))));

  async function load() {
    const list = await api.get("/users");
    if (!ctx.alive()) return;
    replace(tbody, list.users.map((u) => userRow(ctx, u, linkSlot, load, message)));
  }
  await load();
}

function userRow(ctx, user, linkSlot, reload, message) {
  const twoFactor = user.totp_enabled ? "on" : user.require_2fa ? "required, not set up" : "off";
  const edit = h("button", { type: "button", class: "secondary small", "aria-label": `Change ${user.name}` }, "Change");
  const reset = h("button", { type: "button", class: "secondary small", disabled: !user.totp_enabled, "aria-label": `Reset 2FA of ${user.name}` }, "Reset 2FA");
  const link = h("button", { type: "button", class: "secondary small", "aria-label": `New setup link for ${user.name}` }, "Setup link");
  const remove = h("button", { type: "button", class: "danger small", "aria-label": `Remove ${user.name}` }, "Remove");
  const editor = h("tr", { class: "editor", hidden: true }, h("td", { colspan: "7" }, editForm(user, reload)));
  edit.addEventListener("click", () => {
    editor.hidden = !editor.hidden;
    edit.setAttribute("aria-expanded", String(!editor.hidden));
    if (!editor.hidden) editor.querySelector("select").focus();
  });
  reset.addEventListener("click", busy(reset, message, async () => {
    if (!(await confirmAction(`Reset two-factor of ${user.name}?`, "Their authenticator app and recovery codes stop working and their sessions end; they set it up again at the next sign-in.", "Reset"))) return;
    await api.post(`/users/${encodeURIComponent(user.name)}/reset-2fa`);
    toast(`Two-factor of ${user.name} reset`);
    await reload();
  }));
  link.addEventListener("click", busy(link, message, async () => {
    const made = await api.post(`/users/${encodeURIComponent(user.name)}/setup-link`);
    showSetupLink(linkSlot, made);
  }));
  remove.addEventListener("click", busy(remove, message, async () => {
    if (!(await confirmAction(`Remove ${user.name}?`, "Their sessions end and their tokens stop working. Their peers stay, owned by nobody.", "Remove"))) return;
    await api.del(`/users/${encodeURIComponent(user.name)}`);
    toast(`${user.name} removed`);
    await reload();
  }));
  const row = h("tr", {},
    h("th", { scope: "row", "data-label": "Name" }, user.name),
    h("td", { "data-label": "Role" }, user.role),
    h("td", { "data-label": "Peers", class: "num" }, String(user.peers)),
    h("td", { "data-label": "Peer limit", class: "num" }, user.peer_limit === null ? "none" : String(user.peer_limit)),
    h("td", { "data-label": "Two-factor" }, twoFactor, user.has_password ? null : h("span", { class: "muted" }, " (no password yet)")),
    h("td", { "data-label": "Created" }, time(user.created_at)),
    h("td", { "data-label": "Actions" }, h("div", { class: "row tight" }, edit, reset, link, remove)));
  return [row, editor];
}

function editForm(user, reload) {
  const role = select([["user", "user"], ["admin", "admin"]], {});
  role.value = user.role;
  const limit = h("input", { inputmode: "numeric", value: user.peer_limit === null ? "" : String(user.peer_limit), placeholder: "none" });
  const require = checkbox("Require two-factor sign-in", { checked: user.require_2fa });
  const button = h("button", { type: "submit" }, "Save");
  const message = h("div", { class: "messages" });
  const form = h("form", { class: "stack", "aria-label": `Change ${user.name}` },
    h("div", { class: "grid" }, field("Role", role), field("Peer limit", limit, "Peers this user may add; empty: no limit.")),
    require, message, h("div", { class: "row" }, button));
  form.addEventListener("submit", busy(button, message, async () => {
    const body = {};
    if (role.value !== user.role) body.role = role.value;
    const text = limit.value.trim();
    if (text === "" && user.peer_limit !== null) body.clear_peer_limit = true;
    else if (text !== "" && Number(text) !== user.peer_limit) {
      if (!/^\d+$/.test(text)) throw new Error("The peer limit is a whole number.");
      body.peer_limit = Number(text);
    }
    const required = require.querySelector("input").checked;
    if (required !== user.require_2fa) body.require_2fa = required;
    if (!Object.keys(body).length) {
      say(message, "Nothing changed.", "note");
      return;
    }
    await api.patch(`/users/${encodeURIComponent(user.name)}`, body);
    toast(`${user.name} saved`);
    await reload();
  }));
  return form;
}

function showSetupLink(slot, made) {
  const link = made.url; // on the gateway's web address (the api_url setting), as the API makes it
  replace(slot, h("div", { class: "note" },
    h("p", {}, `Send this link to ${made.user}: they choose their password with it. It works once, until ${new Date(made.expires_at * 1000).toLocaleString()}, and is shown only now.`),
    secretBox(`Setup link for ${made.user}`, link)));
  slot.querySelector("input").focus();
}

function addForm(linkSlot, reload) {
  const name = h("input", { required: true, spellcheck: "false", autocapitalize: "none" });
  const role = select([["user", "user"], ["admin", "admin"]], {});
  const limit = h("input", { inputmode: "numeric", placeholder: "none" });
  const button = h("button", { type: "submit" }, "Add user");
  const message = h("div", { class: "messages" });
  const form = h("form", { class: "stack" },
    h("div", { class: "grid" }, field("User name", name), field("Role", role),
      field("Peer limit", limit, "Peers this user may add themselves; empty: no limit.")),
    message, h("div", { class: "row" }, button), linkSlot);
  form.addEventListener("submit", busy(button, message, async () => {
    const body = { name: name.value.trim(), role: role.value };
    if (limit.value.trim()) {
      if (!/^\d+$/.test(limit.value.trim())) throw new Error("The peer limit is a whole number.");
      body.peer_limit = Number(limit.value.trim());
    }
    const added = await api.post("/users", body);
    name.value = "";
    limit.value = "";
    if (added.setup) showSetupLink(linkSlot, added.setup);
    await reload();
  }));
  return form;
}
