// celeriac dashboard, shared part: the state every view reads, the DOM and
// API helpers, formatting and dialogs. Loaded before app.js, which holds
// the routing and the views.
"use strict";

const REFRESH_MS = 2000;
const STATES = ["created", "queued", "started", "retrying", "succeeded", "failed", "skipped", "revoked"];
let config = { read_only: true, revoke: false, namespace: "" };
let timer = null;
let generation = 0;

// ---- helpers ---------------------------------------------------------------

/** Builds an element; strings become text nodes (never HTML). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the page's CSP
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}
/** Replaces an element's children (null and false are skipped). */
function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}
function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}
const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin", headers: { Accept: "application/json" } }, options || {}));
  if (response.status === 401 && config.login === "token") {
    window.location.href = "/login";
    throw new Error("log in first");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error || ("HTTP " + response.status));
    error.status = response.status;
    throw error;
  }
  return body;
}
function post(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(body || {}) });
}

function badge(state, text) { return h("span", { class: "badge " + (state || "") }, text || state || "—"); }
function countBadge(n, badWhenPositive) {
  return h("span", { class: "count-badge" + (badWhenPositive && n > 0 ? " bad" : "") }, fmtNum(n));
}
function fmtNum(n) { return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"); }
function fmtRate(r) { return r === null || r === undefined ? "—" : (Math.abs(r) < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US")) + "/s"; }
function shortId(id) { return id ? id.slice(0, 8) + "…" + id.slice(-4) : "—"; }
function fmtTime(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  const pad = (n, w) => String(n).padStart(w || 2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}
function ago(ms) {
  if (!ms) return "—";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return Math.floor(s) + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}
function when(ms) { return h("span", { title: fmtTime(ms) }, ago(ms)); }
function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(2) + " s";
  return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
}
function field(k, v) { return h("div", { class: "field" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v === null || v === undefined || v === "" ? "—" : v)); }
function json(value) { return h("pre", { class: "json" }, JSON.stringify(value, null, 2)); }
function emptyRow(cols, title, text) {
  return h("tr", {}, h("td", { colspan: cols, class: "empty" }, h("strong", {}, title), text || ""));
}
/** A table; `rows` is an array of rows or a tbody the caller refreshes. */
function table(head, rows, id) {
  const body = rows instanceof Element && rows.tagName === "TBODY" ? rows : h("tbody", {}, rows);
  return h("div", { class: "table-wrap" }, h("table", { id: id || null },
    h("thead", {}, h("tr", {}, head.map((c) => typeof c === "string" ? h("th", {}, c) : c))), body));
}
function pageHead(title, sub, right) {
  return h("div", { class: "page-head" }, h("div", {}, h("h1", {}, title), sub ? h("div", { class: "sub" }, sub) : null), right || null);
}
function toast(text, isError) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.className = "toast" + (isError ? " error" : "");
  el.hidden = false;
  clearTimeout(toast.t);
  toast.t = setTimeout(() => { el.hidden = true; }, 6000);
}
function setLive(ok) {
  document.getElementById("live").className = "live" + (ok ? "" : " stale");
}
function readOnlyTitle() { return config.read_only ? (config.read_only_reason || "read-only") : null; }

/** A confirmation dialog; resolves true when confirmed. */
function confirmDialog(title, text, items, confirmLabel, danger) {
  return choiceDialog(title, text, items, [{ id: "confirm-ok", label: confirmLabel, value: true, danger }]).then((v) => v === true);
}
/**
 * A dialog with several ways to confirm (`choices`: id, label, value,
 * danger, hint); resolves to the chosen value, or null when cancelled.
 */
function choiceDialog(title, text, items, choices) {
  return new Promise((resolve) => {
    const modal = document.getElementById("modal");
    const close = (answer) => { modal.hidden = true; fill(modal); resolve(answer); };
    const buttons = choices.map((c) => h("button", { class: "btn " + (c.danger ? "danger solid" : "primary"), id: c.id, title: c.hint || null, onclick: () => close(c.value) }, c.label));
    const hints = choices.filter((c) => c.hint);
    fill(modal, h("div", { class: "dialog", role: "dialog", "aria-modal": "true" },
      h("h3", {}, title), h("p", {}, text),
      items && items.length ? h("ul", {}, items.slice(0, 50).map((i) => h("li", {}, i)), items.length > 50 ? h("li", {}, `… and ${items.length - 50} more`) : null) : null,
      hints.length ? h("dl", { class: "choices" }, hints.flatMap((c) => [h("dt", {}, c.label), h("dd", {}, c.hint)])) : null,
      h("div", { class: "actions" }, h("button", { class: "btn", id: "confirm-cancel", onclick: () => close(null) }, "Cancel"), buttons)));
    modal.hidden = false;
    buttons[0].focus();
  });
}
