// The pages of single-use links, for people without a session: /setup#TOKEN (a new user chooses a password) and
// /share#TOKEN (one person gets one peer's config and QR code, once). The token is in the fragment, which the
// browser never sends; the page posts it in a request body, then drops it from the address bar and history.

import * as api from "../api.js";
import { busy, downloadText, field, h, replace, say, svgImage } from "../dom.js";

function takeToken() {
  const token = decodeURIComponent(location.hash.slice(1));
  if (token) history.replaceState(null, "", location.pathname);
  return token;
}

export async function setupPage(ctx) {
  ctx.setTitle("Choose a password");
  const token = takeToken();
  const box = h("section", { class: "card narrow", "aria-labelledby": "page-title" });
  replace(ctx.main, h("div", { class: "center" }, box));
  if (!token) {
    replace(box, h("h1", { id: "page-title" }, "Setup link"),
      h("p", { class: "alert", role: "alert" }, "This page needs the whole setup link, with the part after #. Open the link you were given again."));
    return;
  }
  const chosen = h("input", { type: "password", autocomplete: "new-password", required: true, minlength: "12" });
  const again = h("input", { type: "password", autocomplete: "new-password", required: true });
  const button = h("button", { type: "submit" }, "Set password");
  const message = h("div", { class: "messages" });
  const form = h("form", { class: "stack" },
    h("p", {}, "Welcome to the team's VPN. Choose the password you will sign in with."),
    field("Password", chosen, "At least 12 characters; common passwords are refused."),
    field("Password again", again), message, h("div", { class: "row" }, button));
  form.addEventListener("submit", busy(button, message, async () => {
    if (chosen.value !== again.value) {
      say(message, "The two passwords differ.");
      return;
    }
    let user;
    try {
      user = await api.post("/setup", { token, password: chosen.value }, { quiet401: true });
    } catch (error) {
      if (error.status === 404) {
        replace(box, h("h1", { id: "page-title" }, "Setup link"),
          h("p", { class: "alert", role: "alert" }, "This setup link is not valid: it was used, expired or replaced. Ask an admin for a new one."));
        return;
      }
      throw error;
    }
    replace(box, h("h1", { id: "page-title" }, "Password set"),
      h("p", { class: "note", role: "status" }, `Your password is set, ${user.name}.`),
      h("p", {}, h("a", { class: "button", href: "/sign-in" }, "Sign in")));
  }));
  replace(box, h("h1", { id: "page-title" }, "Choose a password"), form);
  chosen.focus();
}

export async function sharePage(ctx) {
  ctx.setTitle("Shared WireGuard config");
  const token = takeToken();
  const box = h("section", { class: "card narrow", "aria-labelledby": "page-title" });
  replace(ctx.main, h("div", { class: "center" }, box));
  const refused = (text) => replace(box, h("h1", { id: "page-title" }, "Shared WireGuard config"),
    h("p", { class: "alert", role: "alert", id: "share-refused" }, text));
  if (!token) {
    refused("This page needs the whole share link, with the part after #. Open the link you were given again.");
    return;
  }
  const button = h("button", { type: "button" }, "Show my config");
  const message = h("div", { class: "messages" });
  button.addEventListener("click", busy(button, message, async () => {
    let config;
    try {
      config = await api.post("/share/redeem", { token }, { quiet401: true });
    } catch (error) {
      if (error.status === 404) {
        refused("This link is not valid: it was used already, expired or was revoked. Ask for a new one.");
        return;
      }
      throw error;
    }
    replace(box, h("h1", { id: "page-title" }, `WireGuard config: ${config.name}`),
      h("p", { class: "note", role: "status" }, "This is shown only now: the link no longer works. Scan it or download it before leaving the page."),
      config.qr_svg ? h("div", { class: "qr-box" }, svgImage(config.qr_svg, `QR code of the WireGuard config of ${config.name}`)) : null,
      h("p", {}, "Scan the QR code with the WireGuard app on a phone, or download the file for ", h("code", {}, "wg-quick up"), " on a computer."),
      h("div", { class: "row" }, h("button", { type: "button", onclick: () => downloadText(config.filename, config.text) }, `Download ${config.filename}`)),
      h("h2", {}, "The config file"),
      h("pre", { class: "config", id: "share-config", tabindex: "0", "aria-label": `The WireGuard config of ${config.name}` }, config.text));
  }));
  replace(box, h("h1", { id: "page-title" }, "Shared WireGuard config"),
    h("p", {}, "Someone shared a WireGuard config with you. This link works once: open it on the device that will connect (or with that device at hand to scan a QR code)."),
    message, h("div", { class: "row" }, button));
}
