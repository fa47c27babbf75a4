// Sign-in: the password, then the TOTP code (or a recovery code) when the account has one. A throttled attempt
// (429) says how long to wait and keeps the button off until then.

import * as api from "../api.js";
import { busy, field, h, replace, say } from "../dom.js";

export async function signInPage(ctx) {
  ctx.setTitle("Sign in");
  const next = ctx.query.get("next");
  const message = h("div", { class: "messages" });
  const box = h("section", { class: "card narrow", "aria-labelledby": "page-title" });
  replace(ctx.main, h("div", { class: "center" }, box));
  if (ctx.notice) say(message, ctx.notice, "note");

  function throttled(error, button) {
    if (error.status !== 429) return false;
    let left = error.retryAfter || 5;
    const line = h("p", { class: "alert", role: "alert" });
    const tick = () => {
      line.textContent = `Too many failed sign-ins. Wait ${left} s, then try again.`;
      if (left <= 0) {
        line.textContent = "You can try again now.";
        button.disabled = false;
        clearInterval(timer);
      }
      left -= 1;
    };
    const timer = setInterval(tick, 1000);
    ctx.onLeave(() => clearInterval(timer));
    tick();
    replace(message, line);
    setTimeout(() => {
      button.disabled = left > 0;
    });
    return true;
  }

  function passwordStep() {
    const user = h("input", { name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" });
    const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
    const button = h("button", { type: "submit" }, "Sign in");
    const form = h("form", { class: "stack" },
      field("User name", user), field("Password", password), message, h("div", { class: "row" }, button));
    form.addEventListener("submit", busy(button, null, async () => {
      say(message, null);
      try {
        const answer = await api.post("/session", { user: user.value.trim(), password: password.value }, { quiet401: true });
        api.setCsrf(answer.csrf);
        if (answer.mfa_required) codeStep(answer);
        else ctx.signedIn(answer, next);
      } catch (error) {
        password.value = "";
        if (!throttled(error, button)) say(message, error.status === 401 ? "Wrong user name or password." : error);
        password.focus();
      }
    }));
    replace(box, h("h1", { id: "page-title" }, "Sign in to Bulwark"), form);
    user.focus();
  }

  function codeStep(first) {
    const code = h("input", {
      name: "code", autocomplete: "one-time-code", inputmode: "numeric", required: true, spellcheck: "false",
      maxlength: "40",
    });
    const button = h("button", { type: "submit" }, "Verify");
    const form = h("form", { class: "stack" },
      h("p", {}, `Signed in as ${first.user}: now the 6-digit code from your authenticator app.`),
      field("Code", code, "Lost the phone? Type one of your recovery codes instead."), message,
      h("div", { class: "row" }, button,
        h("button", { type: "button", class: "secondary", onclick: () => { say(message, null); passwordStep(); } }, "Start again")));
    form.addEventListener("submit", busy(button, null, async () => {
      say(message, null);
      try {
        const answer = await api.post("/session/totp", { code: code.value.replace(/\s+/g, "") }, { quiet401: true });
        ctx.signedIn(answer, next);
      } catch (error) {
        code.value = "";
        if (error.status === 401 && error.hint === "sign in first") {
          say(message, "This sign-in timed out: start again.");
        } else if (!throttled(error, button)) {
          say(message, error.status === 401 ? "That code is not right (or was used already). Try the next one." : error);
        }
        code.focus();
      }
    }));
    replace(box, h("h1", { id: "page-title" }, "Two-factor check"), form);
    code.focus();
  }

  passwordStep();
}
