// The signed-in person's account: two-factor enrolment (QR code, secret, first code, recovery codes shown once)
// and the password change (which ends every session: sign in again).

import * as api from "../api.js";
import { busy, field, h, heading, replace, say, secretBox, section, svgImage, toast } from "../dom.js";

export async function accountPage(ctx) {
  ctx.setTitle("Account");
  const me = ctx.session;
  const twoFactor = h("div");
  const intro = me.enrol_required
    ? h("p", { class: "alert", role: "alert" }, "Two-factor sign-in is required for this account: set it up to continue.")
    : null;
  replace(ctx.main, heading("Account"), intro,
    h("p", {}, `Signed in as `, h("strong", {}, me.user), ` (${me.role}).`),
    section("Two-factor sign-in", twoFactor),
    me.enrol_required ? null : section("Change password", passwordForm(ctx)));
  await drawTwoFactor(ctx, twoFactor);
}

async function drawTwoFactor(ctx, box) {
  let enabled = false;
  let left = 0;
  if (!ctx.session.enrol_required) {
    const user = await api.get(`/users/${encodeURIComponent(ctx.session.user)}`);
    enabled = user.totp_enabled;
    left = user.recovery_codes_left;
  }
  if (enabled) {
    replace(box, h("p", {}, "On: you sign in with your password and a code from your authenticator app."),
      h("p", { class: "muted" }, `${left} recovery codes left. An admin can reset two-factor if the phone is lost.`));
    return;
  }
  const message = h("div", { class: "messages" });
  const start = h("button", { type: "button" }, "Set up two-factor sign-in");
  start.addEventListener("click", busy(start, message, async () => {
    const enrolment = await api.post("/session/totp/enrol");
    showEnrolment(ctx, box, enrolment);
  }));
  replace(box, h("p", {}, "Off: add a code from an authenticator app (TOTP) to your password."), message,
    h("div", { class: "row" }, start));
}

function showEnrolment(ctx, box, enrolment) {
  const code = h("input", { inputmode: "numeric", autocomplete: "one-time-code", required: true, maxlength: "10", spellcheck: "false" });
  const button = h("button", { type: "submit" }, "Turn on");
  const message = h("div", { class: "messages" });
  const form = h("form", { class: "stack" },
    field("The 6-digit code the app shows", code), message, h("div", { class: "row" }, button));
  form.addEventListener("submit", busy(button, message, async () => {
    const answer = await api.post("/session/totp/confirm", { code: code.value.replace(/\s+/g, "") });
    showRecoveryCodes(ctx, box, answer.recovery_codes);
  }));
  replace(box,
    h("ol", { class: "steps" },
      h("li", {}, "Scan this QR code with an authenticator app (or type the secret below)."),
      h("li", {}, "Type the code the app shows to turn two-factor sign-in on.")),
    h("div", { class: "qr-box" }, svgImage(enrolment.qr_svg, "QR code of your two-factor secret")),
    field("Secret", h("input", { type: "text", readonly: true, value: enrolment.secret, class: "secret", id: "totp-secret", spellcheck: "false" })),
    form);
  code.focus();
}

function showRecoveryCodes(ctx, box, codes) {
  const done = h("button", { type: "button" }, "I have saved them");
  done.addEventListener("click", async () => {
    const session = await ctx.refreshSession();
    toast("Two-factor sign-in is on");
    if (session.enrol_required === false && location.pathname === "/account") ctx.navigate(session.role === "admin" ? "/" : "/peers");
  });
  replace(box,
    h("p", { class: "note", role: "status" }, "Two-factor sign-in is on."),
    h("p", {}, "Your recovery codes: each works once instead of a code from the app. They are shown only now: keep them somewhere safe."),
    h("ul", { class: "codes", id: "recovery-codes" }, codes.map((c) => h("li", {}, h("code", {}, c)))),
    secretBox("Recovery codes", codes.join(" ")),
    h("div", { class: "row" }, done));
  done.focus();
}

function passwordForm(ctx) {
  const old = h("input", { type: "password", autocomplete: "current-password", required: true });
  const chosen = h("input", { type: "password", autocomplete: "new-password", required: true, minlength: "12" });
  const again = h("input", { type: "password", autocomplete: "new-password", required: true });
  const button = h("button", { type: "submit" }, "Change password");
  const message = h("div", { class: "messages" });
  const form = h("form", { class: "stack" },
    field("Current password", old),
    field("New password", chosen, "At least 12 characters; common passwords are refused. Every session ends: you sign in again."),
    field("New password again", again), message, h("div", { class: "row" }, button));
  form.addEventListener("submit", busy(button, message, async () => {
    if (chosen.value !== again.value) {
      say(message, "The two new passwords differ.");
      again.focus();
      return;
    }
    try {
      await api.post("/session/password", { old_password: old.value, new_password: chosen.value }, { quiet401: true });
    } catch (error) {
      if (error.status === 401) throw Object.assign(error, { value: null, hint: null, message: "The current password is wrong" });
      throw error;
    }
    ctx.signedOut("Password changed: sign in with the new one.");
  }));
  return form;
}
