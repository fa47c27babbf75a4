// Bulwark's pages: a small single-page app over the HTTP API. This module routes paths to pages, keeps the
// session (user, role, CSRF token) and the navigation, and stops a page's polling when another page opens.

import * as api from "./api.js";
import { h, replace, toast } from "./dom.js";
import { accountPage } from "./pages/account.js";
import { auditPage } from "./pages/audit.js";
import { dashboardPage } from "./pages/dashboard.js";
import { peerPage } from "./pages/peer.js";
import { peersPage } from "./pages/peers.js";
import { settingsPage } from "./pages/settings.js";
import { setupPage, sharePage } from "./pages/links.js";
import { signInPage } from "./pages/signin.js";
import { tokensPage } from "./pages/tokens.js";
import { usersPage } from "./pages/users.js";

// access: anonymous pages work without a session; admin pages are only linked for admins (the API decides).
const ROUTES = [
  { pattern: /^\/$/, page: dashboardPage, access: "session" },
  { pattern: /^\/sign-in$/, page: signInPage, access: "anonymous" },
  { pattern: /^\/account$/, page: accountPage, access: "session" },
  { pattern: /^\/peers$/, page: peersPage, access: "session" },
  { pattern: /^\/peers\/([^/]+)$/, page: peerPage, access: "session" },
  { pattern: /^\/users$/, page: usersPage, access: "admin" },
  { pattern: /^\/tokens$/, page: tokensPage, access: "session" },
  { pattern: /^\/audit$/, page: auditPage, access: "admin" },
  { pattern: /^\/settings$/, page: settingsPage, access: "admin" },
  { pattern: /^\/setup$/, page: setupPage, access: "anonymous" },
  { pattern: /^\/share$/, page: sharePage, access: "anonymous" },
];

const NAV = [
  ["/", "Dashboard", "admin"],
  ["/peers", "Peers", "session"],
  ["/users", "Users", "admin"],
  ["/tokens", "API tokens", "session"],
  ["/audit", "Audit log", "admin"],
  ["/settings", "Settings", "admin"],
  ["/account", "Account", "session"],
];

const app = { session: null, cleanups: [], generation: 0, notice: null };

function main() {
  return document.getElementById("main");
}

export function navigate(path, { replaceState = false, notice = null } = {}) {
  app.notice = notice;
  if (replaceState) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  route();
}

function stopPage() {
  app.generation += 1;
  for (const cleanup of app.cleanups.splice(0)) cleanup();
}

// Polling that pauses while the tab is hidden and stops when the page changes.
function poller(generation) {
  return (action, ms) => {
    const tick = () => {
      if (generation === app.generation && !document.hidden) action();
    };
    const timer = setInterval(tick, ms);
    const onVisible = () => {
      if (!document.hidden) tick();
    };
    document.addEventListener("visibilitychange", onVisible);
    app.cleanups.push(() => {
      clearInterval(timer);
      document.removeEventListener("visibilitychange", onVisible);
    });
  };
}

function drawNav() {
  const nav = document.getElementById("nav");
  const session = app.session;
  if (!session || session.enrol_required) {
    nav.hidden = true;
    nav.replaceChildren();
    return;
  }
  const here = location.pathname;
  const links = NAV.filter(([, , access]) => access !== "admin" || session.role === "admin").map(([href, text]) => {
    const current = href === here || (href === "/peers" && here.startsWith("/peers/")) ||
      (href === "/peers" && here === "/" && session.role !== "admin");
    return h("li", {}, h("a", { href, "aria-current": current ? "page" : null }, text));
  });
  const signOut = h("button", { type: "button", class: "link", onclick: signOutNow }, "Sign out");
  replace(nav, h("ul", {}, links, h("li", { class: "who" }, h("span", { class: "muted" }, session.user), signOut)));
  nav.hidden = false;
}

async function signOutNow() {
  try {
    await api.del("/session", { quiet401: true });
  } catch (error) {
    // Already ended: nothing more to do.
  }
  app.session = null;
  api.setCsrf("");
  navigate("/sign-in", { notice: "You are signed out." });
}

export function signedIn(session, next) {
  app.session = session;
  api.setCsrf(session.csrf);
  navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/", { replaceState: true });
}

export async function route() {
  stopPage();
  const generation = app.generation;
  const path = location.pathname;
  const found = ROUTES.map((r) => [r, path.match(r.pattern)]).find(([, m]) => m);
  const target = main();
  if (!found) {
    replace(target, h("h1", {}, "Page not found"), h("p", {}, h("a", { href: "/" }, "Back to the start")));
    return;
  }
  const [routeInfo, match] = found;
  if (routeInfo.access !== "anonymous" && !app.session) {
    try {
      const session = await api.get("/session", null, { quiet401: true });
      app.session = session;
      api.setCsrf(session.csrf);
    } catch (error) {
      if (generation !== app.generation) return;
      const next = path + location.search;
      history.replaceState(null, "", `/sign-in${path === "/" ? "" : `?next=${encodeURIComponent(next)}`}`);
      if (error.status !== 401) app.notice = error.text;
      return route();
    }
  }
  if (generation !== app.generation) return;
  if (app.session && app.session.enrol_required && path !== "/account" && routeInfo.access !== "anonymous") {
    history.replaceState(null, "", "/account");
    return route();
  }
  if (path === "/" && app.session && app.session.role !== "admin") {
    history.replaceState(null, "", "/peers");
    return route();
  }
  drawNav();
  if (routeInfo.access === "admin" && app.session.role !== "admin") {
    // The API refuses it anyway (403); say so plainly instead of showing its error.
    document.title = "Admins only · Bulwark";
    replace(target, h("h1", {}, "Admins only"), h("p", {}, "This page is for the gateway's admins."),
      h("p", {}, h("a", { href: "/peers" }, "Back to your peers")));
    return;
  }
  const notice = app.notice;
  app.notice = null;
  const ctx = {
    main: target,
    session: app.session,
    params: match.slice(1).map(decodeURIComponent),
    query: new URLSearchParams(location.search),
    notice,
    poll: poller(generation),
    onLeave: (fn) => app.cleanups.push(fn),
    alive: () => generation === app.generation,
    navigate,
    signedIn,
    setTitle: (title) => {
      document.title = `${title} · Bulwark`;
    },
    refreshSession: async () => {
      app.session = await api.get("/session");
      api.setCsrf(app.session.csrf);
      drawNav();
      return app.session;
    },
    signedOut: (message) => {
      app.session = null;
      api.setCsrf("");
      navigate("/sign-in", { notice: message });
    },
  };
  replace(target);
  try {
    await routeInfo.page(ctx);
  } catch (error) {
    if (generation !== app.generation) return;
    replace(target, h("h1", {}, "Something went wrong"), h("p", { class: "alert", role: "alert" }, error.text || error.message));
  }
  if (generation === app.generation && document.activeElement === document.body) target.focus({ preventScroll: true });
}

api.onSignedOut(() => {
  if (!app.session) return;
  app.session = null;
  api.setCsrf("");
  const next = location.pathname + location.search;
  navigate(`/sign-in?next=${encodeURIComponent(next)}`, { replaceState: true, notice: "Your session ended: sign in again." });
});

// Same-origin links move within the app without reloading; downloads and new tabs behave as usual.
document.addEventListener("click", (event) => {
  const link = event.target.closest && event.target.closest("a[href]");
  if (!link || link.hasAttribute("download") || link.target || event.defaultPrevented) return;
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/") || url.pathname.startsWith("/static/")) return;
  if (url.pathname === "/setup" || url.pathname === "/share") return; // their token lives in the fragment
  event.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) navigate(url.pathname + url.search);
});

window.addEventListener("popstate", () => route());
window.addEventListener("unhandledrejection", (event) => {
  const error = event.reason || {};
  toast(error.text || error.message || "Something went wrong", "error");
});

route();
