// The idflow admin console: a page over the admin API (/admin/v1), no build step and nothing
// fetched from elsewhere. It signs the administrator in as the public client `idflow-console`
// (authorization code with PKCE, scope `admin`) and keeps the access token in this tab's
// sessionStorage. Every value from the server is put in the page as text, never as markup
// (the flow graph is an SVG the server renders and escapes).
"use strict";

const CLIENT = "idflow-console";
const HERE = location.origin + "/console/";
const main = () => document.getElementById("main");
const statusBox = () => document.getElementById("status");

// ---- signing in ----

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomText() {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

let signingIn = false;

async function signIn() {
  // Several requests may find the token refused at once: one sign-in, not one each.
  if (signingIn) return;
  signingIn = true;
  const verifier = randomText();
  const state = randomText();
  sessionStorage.setItem("pkce", JSON.stringify({ verifier, state, back: location.hash }));
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  // A sign-in older than 15 minutes is asked again: a session left open elsewhere is not
  // enough to administer the server.
  const query = new URLSearchParams({
    client_id: CLIENT, response_type: "code", redirect_uri: HERE, scope: "openid admin",
    state, code_challenge: challenge, code_challenge_method: "S256", max_age: "900",
  });
  location.assign("/authorize?" + query);
}

async function finishSignIn(params) {
  const saved = JSON.parse(sessionStorage.getItem("pkce") || "null");
  sessionStorage.removeItem("pkce");
  if (!saved || saved.state !== params.get("state")) {
    throw new Error("The sign-in answer does not belong to this tab; sign in again.");
  }
  const answer = await fetch("/token", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code", code: params.get("code"), redirect_uri: HERE,
      client_id: CLIENT, code_verifier: saved.verifier,
    }),
  });
  const tokens = await answer.json();
  if (!answer.ok) throw new Error(tokens.error_description || tokens.error || "sign-in failed");
  sessionStorage.setItem("token", tokens.access_token);
  history.replaceState(null, "", HERE + (saved.back || "#/users"));
}

function signOut() {
  sessionStorage.removeItem("token");
  location.assign("/logout");
}

// ---- the API ----

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem("token") };
  const init = { method, headers };
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body || {});
  }
  const answer = await fetch("/admin/v1" + path, init);
  if (answer.status === 401) {
    sessionStorage.removeItem("token");
    await signIn();
    throw new Error("signing in again");
  }
  const type = answer.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await answer.json() : await answer.text();
  if (!answer.ok) throw new Error(data.detail || data.error || answer.statusText);
  return data;
}

// ---- building the page (text only) ----

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(caption, headings, rows) {
  return el("table", {},
    el("caption", { class: "muted" }, caption),
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))));
}

function field(label, name, attributes) {
  return el("label", {}, label, el("input", Object.assign({ name }, attributes || {})));
}

function say(text, error) {
  const box = statusBox();
  box.className = "status" + (error ? " error" : "");
  box.textContent = text;
  if (!error) setTimeout(() => { if (box.textContent === text) box.textContent = ""; }, 5000);
}

function show(title, ...content) {
  const page = main();
  page.replaceChildren(el("h1", {}, title), ...content);
  document.title = title + " — idflow console";
  page.focus();
}

function count(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function when(date) {
  return date ? new Date(date * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—";
}

function act(work, done) {
  return async (event) => {
    if (event) event.preventDefault();
    try {
      const message = await work(event);
      if (message) say(message);
      if (done) await done();
    } catch (error) {
      say(error.message, true);
    }
  };
}

// ---- sections ----

async function users() {
  const query = new URLSearchParams(location.hash.split("?")[1] || "");
  const found = await api("GET", "/users?" + new URLSearchParams({ q: query.get("q") || "", limit: "200" }));
  const search = el("form", { role: "search", onsubmit: (e) => { e.preventDefault(); location.hash = "#/users?q=" + encodeURIComponent(e.target.q.value); } },
    field("Find users", "q", { value: query.get("q") || "", type: "search" }), el("button", { type: "submit" }, "Search"));
  const create = el("form", { "aria-labelledby": "new-user" , onsubmit: act(async (e) => {
    const f = e.target;
    const made = await api("POST", "/users", { username: f.username.value, email: f.email.value, name: f.name.value, password: f.password.value || undefined });
    location.hash = "#/users/" + made.id;
    return "Created " + made.username;
  }) },
  field("Username", "username", { required: true, autocomplete: "off" }), field("Email", "email", { type: "email" }),
  field("Display name", "name"), field("Password", "password", { type: "password", autocomplete: "new-password" }),
  el("button", { type: "submit" }, "Create user"));
  show("Users", search,
    table(count(found.total, "user", "users"), ["Username", "Email", "Roles", "State"],
      found.users.map((u) => [el("a", { href: "#/users/" + u.id }, u.username), u.email, u.roles.join(", "), u.disabled ? "disabled" : (u.locked_until * 1000 > Date.now() ? "locked" : "active")])),
    el("h2", { id: "new-user" }, "New user"), create);
}

async function user(rawId) {
  const id = encodeURIComponent(rawId);
  const [u, roles, factors, sessions] = await Promise.all([
    api("GET", "/users/" + id), api("GET", "/roles"), api("GET", "/users/" + id + "/factors"), api("GET", "/users/" + id + "/sessions"),
  ]);
  const reload = () => user(id);
  const grant = el("form", { "aria-label": "Assign a role", onsubmit: act(async (e) => {
    const role = e.target.role.value;
    await api("PUT", `/users/${id}/roles/${encodeURIComponent(role)}`);
    return `${u.username} now has the role ${role}`;
  }, reload) },
  el("label", {}, "Role", el("select", { name: "role" }, roles.roles.filter((r) => !u.roles.includes(r.name)).map((r) => el("option", { value: r.name }, r.name)))),
  el("button", { type: "submit" }, "Assign role"));
  const password = el("form", { "aria-label": "Set a password", onsubmit: act(async (e) => {
    await api("POST", `/users/${id}/password`, { password: e.target.password.value });
    e.target.reset();
    return "Password set; the user's sessions ended";
  }, reload) }, field("New password", "password", { type: "password", required: true, autocomplete: "new-password" }), el("button", { type: "submit" }, "Set password"));
  show(u.username,
    table("Account", ["Field", "Value"], [
      ["id", el("code", {}, u.id)], ["email", u.email + (u.email && !u.email_verified ? " (not verified)" : "")], ["name", u.name],
      ["state", u.disabled ? "disabled" : "active"], ["locked until", u.locked_until ? when(u.locked_until) : "not locked"],
      ["created", when(u.created)],
    ]),
    el("p", {},
      el("button", { type: "button", class: "secondary", onclick: act(async () => { await api("PATCH", "/users/" + id, { disabled: !u.disabled }); return u.disabled ? "Enabled" : "Disabled"; }, reload) }, u.disabled ? "Enable" : "Disable"), " ",
      el("button", { type: "button", class: "secondary", onclick: act(async () => { await api("POST", `/users/${id}/unlock`); return "Unlocked"; }, reload) }, "Unlock"), " ",
      el("button", { type: "button", class: "danger", onclick: act(async () => { if (!confirm(`Delete ${u.username}?`)) return null; await api("DELETE", "/users/" + id); location.hash = "#/users"; return "Deleted"; }) }, "Delete user")),
    el("h2", {}, "Roles"),
    table("Roles held", ["Role", ""], u.roles.map((r) => [r, el("button", { type: "button", class: "secondary", "aria-label": "Remove the role " + r, onclick: act(async () => { await api("DELETE", `/users/${id}/roles/${encodeURIComponent(r)}`); return "Removed " + r; }, reload) }, "Remove")])),
    grant,
    el("h2", {}, "Password"), password,
    el("h2", {}, "Second factors"),
    table("Factors", ["Kind", "Label", "Added", "Last used", ""], factors.factors.map((f) => [f.kind, f.label, when(f.created), when(f.last_used),
      el("button", { type: "button", class: "secondary", "aria-label": "Remove factor " + f.label, onclick: act(async () => { await api("DELETE", `/users/${id}/factors/${encodeURIComponent(f.id)}`); return "Factor removed"; }, reload) }, "Remove")])),
    el("h2", {}, "Sessions"),
    table("Sessions", ["Signed in", "Methods", "Flow", "Expires", ""], sessions.sessions.map((s) => [when(s.auth_time), s.amr.join(", "), s.flow, when(s.expires),
      el("button", { type: "button", class: "secondary", "aria-label": "End session " + s.sid, onclick: act(async () => { await api("DELETE", "/sessions/" + encodeURIComponent(s.sid)); return "Session ended"; }, reload) }, "End")])),
    el("p", {}, el("button", { type: "button", class: "secondary", onclick: act(async () => { await api("DELETE", `/users/${id}/sessions`); return "Every session ended"; }, reload) }, "End every session")));
}

async function roles() {
  const found = await api("GET", "/roles");
  const form = el("form", { "aria-labelledby": "role-form", onsubmit: act(async (e) => {
    const f = e.target;
    const privileges = f.privileges.value.split(/[\s,]+/).filter(Boolean);
    await api("PUT", "/roles/" + encodeURIComponent(f.name.value), { description: f.description.value, privileges });
    return "Saved role " + f.name.value;
  }, roles) }, field("Name", "name", { required: true }), field("Description", "description"),
  field("Privileges (comma separated)", "privileges", { size: 40 }), el("button", { type: "submit" }, "Save role"));
  show("Roles",
    table(count(found.roles.length, "role", "roles"), ["Role", "Privileges", "Members", "Description"], found.roles.map((r) => [r.name, r.privileges.join(", ") || "—", String(r.members), r.description])),
    el("h2", { id: "role-form" }, "Create or change a role"), form);
}

async function applications() {
  const found = await api("GET", "/applications");
  show("Applications", el("p", { class: "muted" }, "Declared in idflow.toml; change the file and reload."),
    table(count(found.applications.length, "application", "applications"), ["Client id", "Name", "Kind", "Grants", "Redirect URIs", "Flow"],
      found.applications.map((a) => [el("code", {}, a.client_id), a.name, a.public ? "public" : "confidential", a.grant_types.join(", "), a.redirect_uris.join("\n"), a.flow || "—"])));
}

async function identityProviders() {
  const found = await api("GET", "/identity-providers");
  show("Identity providers", el("p", { class: "muted" }, "Declared in idflow.toml; change the file and reload."),
    table(count(found.identity_providers.length, "identity provider", "identity providers"), ["Name", "Label", "Type", "Detail"],
      found.identity_providers.map((p) => [p.name, p.label, p.type, p.detail ? JSON.stringify(p.detail) : ""])));
}

async function flows() {
  const found = await api("GET", "/flows");
  show("Flows", el("p", { class: "muted" }, `Generation ${found.generation}.`),
    table(count(found.flows.length, "live flow", "live flows"), ["Flow", "Version", "Applies to", "States"],
      found.flows.map((f) => [el("a", { href: "#/flows/" + encodeURIComponent(f.id) }, f.id + (f.default ? " (default)" : "")), el("code", {}, f.version), f.applies_to.join(", ") || "—", String(f.states)])));
}

async function flow(id) {
  const path = "/flows/" + encodeURIComponent(id);
  const [detail, report, svg] = await Promise.all([api("GET", path), api("GET", path + "/test"), api("GET", path + "/graph?format=svg&coverage=true")]);
  const picture = new DOMParser().parseFromString(svg, "image/svg+xml").documentElement;
  const graph = el("figure", { class: "graph" }, document.importNode(picture, true),
    el("figcaption", { class: "muted" }, "Dashed red transitions are not covered by the flow's scenarios."));
  const transitions = Object.entries(detail.ir.states).flatMap(([from, state]) =>
    Object.entries(state.transitions || {}).map(([label, to]) => [from, label, to]));
  const missing = new Set(report.coverage.missing_transitions.map(([from, label]) => from + "\u0000" + label));
  show("Flow " + id,
    el("p", {}, "Version ", el("code", {}, detail.version), `. Scenarios: ${report.passed} passed, ${report.failed} failed; coverage ${report.coverage.states[0]}/${report.coverage.states[1]} states, ${report.coverage.transitions[0]}/${report.coverage.transitions[1]} transitions.`),
    graph,
    el("h2", {}, "Transitions"),
    table("Every transition, for reading without the picture", ["From", "On", "To", "Covered"], transitions.map(([from, label, to]) => [from, label, to, label === "error" ? "not required (fails closed)" : (missing.has(from + "\u0000" + label) ? "no" : "yes")])),
    el("h2", {}, "Scenarios"),
    table("Scenario results", ["Scenario", "Result"], report.results.map((r) => [r.name, r.passed ? "passed" : "failed: " + r.failures.join("; ")])));
}

async function audit() {
  const query = new URLSearchParams(location.hash.split("?")[1] || "");
  const params = new URLSearchParams({ limit: "200" });
  for (const name of ["user", "event"]) if (query.get(name)) params.set(name, query.get(name));
  const found = await api("GET", "/audit?" + params);
  const form = el("form", { role: "search", onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (e.target.user.value) q.set("user", e.target.user.value);
    if (e.target.event.value) q.set("event", e.target.event.value);
    location.hash = "#/audit?" + q;
  } }, field("User id", "user", { value: query.get("user") || "" }), field("Event (or prefix ending in .)", "event", { value: query.get("event") || "" }), el("button", { type: "submit" }, "Filter"));
  show("Audit log", form,
    table(`${found.entries.length} entries, newest first`, ["Time", "Event", "Actor", "Subject", "Address", "Detail"],
      found.entries.map((e) => [when(e.time), e.event, e.actor, e.subject, e.ip, JSON.stringify(e.detail)])));
}

// ---- routing ----

const sections = [
  [/^#\/users\/([^/?]+)$/, (m) => user(decodeURIComponent(m[1]))],
  [/^#\/users/, users], [/^#\/roles/, roles], [/^#\/applications/, applications],
  [/^#\/identity-providers/, identityProviders], [/^#\/flows\/([^/?]+)$/, (m) => flow(decodeURIComponent(m[1]))],
  [/^#\/flows/, flows], [/^#\/audit/, audit],
];

async function route() {
  const hash = location.hash || "#/users";
  for (const link of document.querySelectorAll("nav a")) {
    const current = hash.startsWith(link.getAttribute("href"));
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  for (const [pattern, render] of sections) {
    const match = hash.match(pattern);
    if (match) {
      try { await render(match); } catch (error) { show("Something went wrong", el("p", {}, error.message)); }
      return;
    }
  }
  location.hash = "#/users";
}

async function start() {
  // The skip link only moves the focus: followed as a link it would set the hash, which is
  // the route here, and `#main` names no section (the router would open Users instead).
  document.querySelector("a.skip").addEventListener("click", (event) => {
    event.preventDefault();
    main().focus();
  });
  const params = new URLSearchParams(location.search);
  try {
    if (params.has("error")) throw new Error(params.get("error_description") || params.get("error"));
    if (params.has("code")) await finishSignIn(params);
  } catch (error) {
    show("Sign-in failed", el("p", {}, error.message), el("p", {}, el("button", { type: "button", onclick: signIn }, "Sign in again")));
    return;
  }
  if (!sessionStorage.getItem("token")) {
    await signIn();
    return;
  }
  document.getElementById("signout").hidden = false;
  document.getElementById("signout").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  await route();
}

start();
