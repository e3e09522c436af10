// SPDX-License-Identifier: Apache-2.0
// The Tether web console: a small page over the REST API (/api/v1/...).
// Everything the server sends is shown with textContent, never as markup,
// and the strict Content-Security-Policy allows only this script.
"use strict";

const state = { me: null, csrf: null, events: null, devices: new Map(), watchPush: null };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  if (method !== "GET" && state.csrf) opts.headers["X-CSRF-Token"] = state.csrf;
  const r = await fetch("/api/v1/" + path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401 && path !== "login") { showLogin(); }
  return { status: r.status, data };
}

function view(...children) {
  const v = document.getElementById("view");
  v.replaceChildren(...children);
}

function showLogin(message) {
  state.me = null;
  if (state.events) { state.events.close(); state.events = null; }
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("whoami").textContent = "";
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  view();
}

async function login(ev) {
  ev.preventDefault();
  const user = document.getElementById("login-user").value;
  const password = document.getElementById("login-password").value;
  const r = await api("POST", "login", { user, password });
  if (r.status !== 200) {
    document.getElementById("login-error").textContent = (r.data && r.data.error) || "login failed";
    return;
  }
  state.csrf = r.data.csrf_token;
  document.getElementById("login-password").value = "";
  await start();
}

async function start() {
  const r = await api("GET", "me");
  if (r.status !== 200) { showLogin(); return; }
  state.me = r.data;
  if (r.data.csrf_token) state.csrf = r.data.csrf_token;
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("whoami").textContent = state.me.name + " (" +
    state.me.grants.map(g => g.role + " on " + g.collection).join(", ") + ")";
  openEvents();
  route();
}

function can(perm) { return state.me && state.me.permissions.includes(perm); }

function openEvents() {
  if (state.events) state.events.close();
  const es = new EventSource("/api/v1/events");
  const live = document.getElementById("live");
  es.onopen = () => { live.textContent = "live"; };
  es.onerror = () => { live.textContent = "reconnecting"; };
  es.addEventListener("device", (e) => {
    const d = JSON.parse(e.data);
    state.devices.set(d.client_id, d);
    updateDeviceRow(d);
    updateDevicePage(d);
  });
  es.addEventListener("push", (e) => {
    const p = JSON.parse(e.data);
    if (state.watchPush === p.push_id) renderPushStatus(p.push_id);
  });
  state.events = es;
}

function onlineCell(d) {
  const td = el("td", { class: d.online ? "online" : "offline", "data-field": "online" },
    d.online ? "online" : "offline");
  if (!d.online && d.offline_reason) td.append(el("div", { class: "reason" }, d.offline_reason));
  return td;
}

function deviceRow(d) {
  return el("tr", { "data-client-id": d.client_id },
    el("td", {}, el("a", { href: "#/device/" + encodeURIComponent(d.client_id) }, d.hostname || "?")),
    el("td", {}, d.client_id), el("td", {}, d.status), onlineCell(d),
    el("td", {}, d.version || ""), el("td", {}, d.last_seen || ""));
}

function updateDeviceRow(d) {
  for (const tr of document.querySelectorAll("tr[data-client-id]")) {
    if (tr.getAttribute("data-client-id") === d.client_id) tr.replaceWith(deviceRow(d));
  }
}

const listState = { offset: 0, limit: 50, sort: "hostname", order: "asc", q: "" };

async function renderDevices() {
  const qs = new URLSearchParams({ offset: listState.offset, limit: listState.limit, sort: listState.sort,
    order: listState.order });
  if (listState.q) qs.set("q", listState.q);
  const r = await api("GET", "devices?" + qs.toString());
  if (r.status !== 200) { view(el("p", { class: "error" }, r.data ? r.data.error : "error")); return; }
  const header = (key, label) => el("th", { onclick: () => {
    listState.order = listState.sort === key && listState.order === "asc" ? "desc" : "asc";
    listState.sort = key; renderDevices();
  } }, label);
  const search = el("input", { id: "device-search", placeholder: "hostname or ClientID", value: listState.q });
  search.addEventListener("change", () => { listState.q = search.value; listState.offset = 0; renderDevices(); });
  const rows = r.data.devices.map(d => { state.devices.set(d.client_id, d); return deviceRow(d); });
  const pages = el("span", {}, ` ${r.data.total} devices, showing ${r.data.offset + 1}-` +
    `${Math.min(r.data.offset + r.data.limit, r.data.total)} `);
  view(el("h1", {}, "Devices"), el("div", { class: "toolbar" }, search,
    el("button", { type: "button", disabled: listState.offset === 0,
      onclick: () => { listState.offset = Math.max(0, listState.offset - listState.limit); renderDevices(); } },
    "Previous"), pages,
    el("button", { type: "button", disabled: r.data.offset + r.data.limit >= r.data.total,
      onclick: () => { listState.offset += listState.limit; renderDevices(); } }, "Next")),
  el("table", { id: "devices" }, el("thead", {}, el("tr", {}, header("hostname", "Hostname"),
    header("client_id", "ClientID"), header("status", "Status"), header("online", "Online"),
    header("version", "Agent"), header("last_seen", "Last seen"))), el("tbody", {}, ...rows)));
}

let currentDevice = null;

function updateDevicePage(d) {
  if (!currentDevice || currentDevice.client_id !== d.client_id) return;
  const cell = document.getElementById("device-online");
  if (cell) cell.replaceWith(el("dd", { id: "device-online", class: d.online ? "online" : "offline" },
    d.online ? "online" : "offline" + (d.offline_reason ? ": " + d.offline_reason : "")));
}

async function renderDevice(id) {
  const r = await api("GET", "devices/" + encodeURIComponent(id));
  if (r.status !== 200) { view(el("p", { class: "error" }, r.data ? r.data.error : "error")); return; }
  const d = r.data;
  currentDevice = d;
  const result = el("div", { id: "action-result" });
  const buttons = d.actions.map(a => el("button", { type: "button", "data-action": a.action,
    disabled: !a.allowed, title: a.allowed ? "" : a.reason,
    onclick: async () => {
      const res = await api("POST", "devices/" + encodeURIComponent(d.client_id) + "/actions", { action: a.action });
      if (res.status !== 202) { result.replaceChildren(el("p", { class: "error" }, res.data ? res.data.error : "error")); return; }
      result.replaceChildren(el("p", {}, `${a.label}: TaskGUID ${res.data.task_guid}`), el("div", { id: "push-status" }));
      watchPush(res.data.push_id);
    } }, a.label));
  const reasons = d.actions.filter(a => !a.allowed).map(a => el("p", { class: "reason", "data-reason-for": a.action },
    `${a.label}: ${a.reason}`));
  view(el("h1", {}, d.hostname || d.client_id),
    el("dl", {}, el("dt", {}, "ClientID"), el("dd", {}, d.client_id), el("dt", {}, "Status"), el("dd", {}, d.status),
      el("dt", {}, "Online"), el("dd", { id: "device-online", class: d.online ? "online" : "offline" },
        d.online ? "online" : "offline" + (d.offline_reason ? ": " + d.offline_reason : "")),
      el("dt", {}, "Agent"), el("dd", {}, d.version || ""), el("dt", {}, "Address"), el("dd", {}, d.address || ""),
      el("dt", {}, "Last seen"), el("dd", {}, d.last_seen || "")),
    el("div", { class: "actions" }, ...buttons), ...reasons, result);
}

let pollTimer = null;

function watchPush(pushId) {
  state.watchPush = pushId;
  if (pollTimer) clearInterval(pollTimer);
  renderPushStatus(pushId);
  // the push events say when an answer arrives; delivery and
  // acknowledgement are polled while the push is open
  pollTimer = setInterval(() => renderPushStatus(pushId), 2000);
}

async function renderPushStatus(pushId) {
  const box = document.getElementById("push-status");
  if (!box) return;
  const r = await api("GET", "pushes/" + pushId);
  if (r.status !== 200) { box.replaceChildren(el("p", { class: "error" }, r.data ? r.data.error : "error")); return; }
  if (r.data.done && pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  box.replaceChildren(el("table", { id: "push-targets" }, el("thead", {}, el("tr", {}, el("th", {}, "Device"),
    el("th", {}, "State"), el("th", {}, "Result"), el("th", {}, "Detail"))),
  el("tbody", {}, ...r.data.targets.map(t => el("tr", { "data-client-id": t.client_id },
    el("td", {}, t.hostname || t.client_id), el("td", { "data-field": "state" }, t.state),
    el("td", { "data-field": "result" }, t.return_code_name || ""), el("td", {}, t.detail || ""))))));
}

async function renderActivity(pushId) {
  const input = el("input", { id: "push-id", placeholder: "PushID", value: pushId || "" });
  view(el("h1", {}, "Activity"), el("div", { class: "toolbar" }, input,
    el("button", { type: "button", onclick: () => { location.hash = "#/activity/" + encodeURIComponent(input.value); } },
      "Show")), el("div", { id: "push-status" }));
  if (pushId) watchPush(Number(pushId));
}

async function renderApprovals() {
  const r = await api("GET", "approvals");
  if (r.status !== 200) { view(el("h1", {}, "Approvals"), el("p", { class: "error" }, r.data ? r.data.error : "error")); return; }
  const decide = async (id, decision) => { await api("POST", "approvals/" + encodeURIComponent(id), { decision }); renderApprovals(); };
  view(el("h1", {}, "Approvals"), r.data.pending.length === 0 ? el("p", {}, "No device waits for approval.") :
    el("table", {}, el("tbody", {}, ...r.data.pending.map(d => el("tr", {}, el("td", {}, d.hostname),
      el("td", {}, d.client_id), el("td", {}, el("button", { type: "button", onclick: () => decide(d.client_id, "approve") }, "Approve"),
        el("button", { type: "button", onclick: () => decide(d.client_id, "reject") }, "Reject")))))));
}

async function renderAudit() {
  const r = await api("GET", "audit?limit=500");
  if (r.status !== 200) { view(el("h1", {}, "Audit"), el("p", { class: "error" }, r.data ? r.data.error : "error")); return; }
  view(el("h1", {}, "Audit"), el("p", {}, el("a", { href: "/api/v1/audit?format=jsonl" }, "Export (JSON lines)")),
    el("table", {}, el("thead", {}, el("tr", {}, ...["#", "Time", "User", "Address", "Action", "Target", "Outcome", "Detail"]
      .map(h => el("th", {}, h)))), el("tbody", {}, ...r.data.records.slice().reverse().map(a => el("tr", {},
      el("td", {}, a.seq), el("td", {}, new Date(a.time * 1000).toISOString()), el("td", {}, a.actor),
      el("td", {}, a.address), el("td", {}, a.action), el("td", {}, a.target), el("td", {}, a.outcome),
      el("td", {}, a.detail))))));
}

async function renderUsers() {
  const r = await api("GET", "users");
  if (r.status !== 200) { view(el("h1", {}, "Users"), el("p", { class: "error" }, r.data ? r.data.error : "error")); return; }
  const roles = ["operator", "read-only-analyst", "approver", "full-administrator"];
  const custom = await api("GET", "roles");
  if (custom.status === 200) for (const x of custom.data.roles) roles.push(x.name);
  const name = el("input", { id: "new-user-name", placeholder: "name", required: true });
  const role = el("select", { id: "new-user-role" }, ...roles.map(x => el("option", { value: x }, x)));
  const coll = el("input", { id: "new-user-collection", value: "All devices" });
  const out = el("p", { id: "new-user-result" });
  const form = el("form", { id: "new-user" }, name, role, coll, el("button", { type: "submit" }, "Add user"), out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const res = await api("POST", "users", { name: name.value, role: role.value, collection: coll.value });
    if (res.status !== 201) { out.replaceChildren(el("span", { class: "error" }, res.data ? res.data.error : "error")); return; }
    out.replaceChildren(`User ${res.data.name} added. One-time password (shown only now): `,
      el("code", {}, res.data.password));
  });
  view(el("h1", {}, "Users"), form,
    el("table", {}, el("tbody", {}, ...r.data.users.map(u => el("tr", {}, el("td", {}, u.name),
      el("td", {}, (u.grants || []).map(g => g.role + " on " + g.collection).join(", ")))))));
}

function route() {
  if (!state.me) return;
  const h = location.hash || "#/devices";
  const parts = h.slice(2).split("/");
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.id === "nav-" + parts[0]);
  currentDevice = null;
  state.watchPush = null;
  if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  if (parts[0] === "device" && parts[1]) return renderDevice(decodeURIComponent(parts[1]));
  if (parts[0] === "activity") return renderActivity(parts[1]);
  if (parts[0] === "approvals") return renderApprovals();
  if (parts[0] === "audit") return renderAudit();
  if (parts[0] === "users") return renderUsers();
  return renderDevices();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login").addEventListener("submit", login);
  document.getElementById("logout").addEventListener("click", async () => {
    await api("POST", "logout", {});
    showLogin();
  });
  window.addEventListener("hashchange", route);
  start();
});
