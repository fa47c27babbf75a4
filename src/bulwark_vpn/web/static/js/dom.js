// Small DOM helpers. Text always goes in as text (textContent, attributes), never as HTML: a peer or user name
// cannot become markup. No inline styles: the Content-Security-Policy forbids them; classes and the hidden
// attribute do the work.

let nextId = 0;
export const uid = (prefix = "f") => `${prefix}-${++nextId}`;

export function h(tag, attrs, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "value" && !svg) el.value = value;
    else if (key === "checked" || key === "selected") el[key] = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// -- formatting -------------------------------------------------------------------------------------------

export function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let value = n;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i += 1;
  }
  return `${value >= 100 || i === 0 ? Math.round(value) : value.toFixed(1)} ${units[i]}`;
}

export function ago(seconds) {
  if (!seconds) return "never";
  const delta = Math.max(0, Date.now() / 1000 - seconds);
  if (delta < 5) return "just now";
  if (delta < 90) return `${Math.round(delta)} s ago`;
  if (delta < 5400) return `${Math.round(delta / 60)} min ago`;
  if (delta < 129600) return `${Math.round(delta / 3600)} h ago`;
  return `${Math.round(delta / 86400)} days ago`;
}

export function moment(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function time(seconds, text) {
  if (!seconds) return h("span", { class: "muted", text: text || "never" });
  return h("time", { datetime: new Date(seconds * 1000).toISOString(), title: moment(seconds) }, text || moment(seconds));
}

// -- feedback ---------------------------------------------------------------------------------------------

export function toast(message, kind = "ok") {
  const box = document.getElementById("toasts");
  const item = h("p", { class: ["toast", kind] }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 9000 : 4000);
}

export function alertBox(error) {
  const text = typeof error === "string" ? error : error.text || error.message;
  return h("p", { class: "alert", role: "alert" }, text);
}

// Show an error in a form's message area, or clear it.
export function say(area, error, kind = "error") {
  replace(area);
  if (!error) return;
  area.append(kind === "error" ? alertBox(error) : h("p", { class: "note", role: "status" }, error));
}

export function confirmAction(title, text, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "cancel";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

// -- forms ------------------------------------------------------------------------------------------------

// A labelled control: the label names it, the hint describes it (aria-describedby).
export function field(label, control, hint) {
  const id = control.id || uid("field");
  control.id = id;
  const parts = [h("label", { for: id }, label), control];
  if (hint) {
    const hintId = `${id}-hint`;
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("small", { id: hintId, class: "hint" }, hint));
  }
  return h("div", { class: "field" }, parts);
}

export function checkbox(label, attrs, hint) {
  const id = uid("check");
  const input = h("input", { type: "checkbox", id, ...attrs });
  const hintEl = hint ? h("small", { id: `${id}-hint`, class: "hint" }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field check" }, input, h("label", { for: id }, label), hintEl);
}

export function select(options, attrs) {
  return h("select", attrs, options.map(([value, text]) => h("option", { value }, text)));
}

// Run a form's async action with its button disabled and its errors shown in `area`.
export function busy(button, area, action) {
  return async (event) => {
    if (event) event.preventDefault();
    if (button.disabled) return;
    button.disabled = true;
    if (area) say(area, null);
    try {
      await action();
    } catch (error) {
      if (area) say(area, error);
      else toast(error.text || error.message, "error");
    } finally {
      if (button.isConnected) button.disabled = false;
    }
  };
}

// A read-only secret shown once, with a copy button (clipboard API where the page is a secure context, else
// the selection and execCommand, which plain-HTTP pages on the tunnel address still have).
export function secretBox(label, value, note) {
  const input = h("input", { type: "text", readonly: true, value, class: "secret", spellcheck: "false" });
  const button = h("button", { type: "button", class: "secondary" }, "Copy");
  button.addEventListener("click", async () => {
    let ok = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(value);
        ok = true;
      }
    } catch (exc) {
      ok = false;
    }
    if (!ok) {
      input.select();
      ok = document.execCommand("copy");
    }
    toast(ok ? `${label} copied` : "Select the text and copy it", ok ? "ok" : "error");
  });
  return h("div", { class: "once" }, field(label, input, note), h("div", { class: "row" }, button));
}

// -- files and images -------------------------------------------------------------------------------------

export function svgImage(svgText, alt) {
  const utf8 = new TextEncoder().encode(svgText);
  let binary = "";
  utf8.forEach((b) => {
    binary += String.fromCharCode(b);
  });
  return h("img", { src: `data:image/svg+xml;base64,${btoa(binary)}`, alt, class: "qr" });
}

export function downloadText(filename, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  const link = h("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function heading(text, ...extra) {
  return h("div", { class: "page-head" }, h("h1", { id: "page-title" }, text), ...extra);
}

export function section(title, ...children) {
  const id = uid("section");
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}
