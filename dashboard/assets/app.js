// celeriac dashboard: a thin client of the JSON API under /api/.
// Every view renders once per route and refreshes its data every 2 s; the
// helpers it uses are in ui.js, loaded first.
"use strict";

// ---- routing ---------------------------------------------------------------

function route() {
  const hash = window.location.hash.replace(/^#\/?/, "") || "queues";
  const [path, query] = hash.split("?");
  const parts = path.split("/").map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query || "") };
}

async function render() {
  clearTimeout(timer);
  const my = ++generation;
  const { parts, params } = route();
  const view = VIEWS[parts[0]] || VIEWS.queues;
  for (const a of document.querySelectorAll("#nav a")) {
    const active = a.dataset.view === parts[0] || (a.dataset.view === "tasks" && parts[0] === "task") ||
      (a.dataset.view === "workflows" && parts[0] === "workflow") || (a.dataset.view === "dead-letters" && parts[0] === "dead-letter");
    a.classList.toggle("active", active);
  }
  const main = document.getElementById("main");
  const refresh = await view(main, parts.slice(1), params);
  if (typeof refresh !== "function") return;
  const tick = async () => {
    if (my !== generation) return;
    if (document.getElementById("modal").hidden) {
      try { await refresh(); setLive(true); } catch (e) { setLive(false); }
    }
    if (my === generation) timer = setTimeout(tick, refresh.every || REFRESH_MS);
  };
  await tick();
}

function errorBanner(e) { return h("div", { class: "banner error" }, e.message); }

// ---- Queues ----------------------------------------------------------------

const UNACKED_UNKNOWN = "Not reported yet: the management API reports a new queue's unacknowledged count after some seconds (and never without the management plugin).";

function laneLabel(l) {
  return l.kind === "tolerance" ? `tolerance class ${l.index}` : `fair shard ${l.index}`;
}
/** "6 tolerance classes · 2 fair shards" */
function laneSummary(lanes) {
  const n = (kind) => lanes.filter((l) => l.kind === kind).length;
  const part = (k, one, many) => (n(k) ? `${n(k)} ${n(k) === 1 ? one : many}` : null);
  return [part("tolerance", "tolerance class", "tolerance classes"), part("fair", "fair shard", "fair shards")].filter(Boolean).join(" · ");
}
function figureCells(q) {
  return [
    h("td", { class: "num" }, fmtNum(q.messages)), h("td", { class: "num" }, fmtNum(q.ready)),
    h("td", { class: "num", title: q.unacked === null ? UNACKED_UNKNOWN : null }, fmtNum(q.unacked)),
    h("td", { class: "num", title: q.lanes && q.lanes.length ? `workers: each consumes the queue and its ${q.lanes.length} lanes (the most on any one of them)` : null }, fmtNum(q.consumers)),
    h("td", { class: "num" }, fmtRate(q.publish_rate)), h("td", { class: "num" }, fmtRate(q.ack_rate)),
    h("td", { class: "num" }, fmtRate(q.depth_rate)),
  ];
}

async function viewQueues(main) {
  const stats = h("div", { class: "stats" });
  const note = h("div");
  const body = h("tbody");
  const open = new Set();
  let last = null;
  fill(main, pageHead("Queues", "Every logical queue of the namespace with its dead-letter queue; its tolerance classes and fair shards are summed into it."), note, stats,
    h("div", { class: "card flush" }, h("div", { class: "table-wrap" }, h("table", { id: "queues" },
      h("thead", {}, h("tr", {}, h("th", {}, "Queue"), h("th", { class: "num" }, "Messages"), h("th", { class: "num" }, "Ready"),
        h("th", { class: "num" }, "Unacked"), h("th", { class: "num" }, "Consumers"), h("th", { class: "num" }, "In"),
        h("th", { class: "num" }, "Out"), h("th", { class: "num" }, "Depth change"), h("th", { class: "num" }, "Dead letters"))), body))));
  const paint = () => {
    const data = last;
    fill(body, ...(data.queues.length ? data.queues.flatMap((q) => {
      const expanded = open.has(q.queue);
      const toggle = q.lanes.length ? h("button", {
        class: "lanes-toggle", type: "button", "aria-expanded": expanded ? "true" : "false",
        title: expanded ? "Hide the lanes" : "Show each lane",
        onclick: () => { expanded ? open.delete(q.queue) : open.add(q.queue); paint(); },
      }, (expanded ? "▾ " : "▸ ") + laneSummary(q.lanes)) : null;
      const row = h("tr", { "data-queue": q.queue, class: expanded ? "open" : null },
        h("td", {}, h("strong", {}, q.queue), h("div", { class: "muted mono" }, q.broker_queue), toggle,
          q.exists ? null : h("span", { class: "badge warn" }, "no work queue"),
          q.exists && q.messages > 0 && q.consumers === 0 ? h("span", { class: "badge warn" }, "no consumers") : null),
        figureCells(q),
        h("td", { class: "num" }, q.dead_letters === null ? "—" : h("a", { href: "#/dead-letters?queue=" + encodeURIComponent(q.queue) }, countBadge(q.dead_letters, true))));
      const lanes = expanded ? q.lanes.map((l) => h("tr", { class: "lane", "data-lane": l.lane },
        h("td", {}, h("span", { class: "lane-name" }, laneLabel(l)), h("div", { class: "muted mono" }, l.broker_queue)),
        figureCells(l), h("td", { class: "num muted", title: "A lane dead-letters into its logical queue's dead-letter queue" }, "—"))) : [];
      return [row, ...lanes];
    }) : [emptyRow(9, "No queues yet", "Queues appear once a worker or producer declared them.")]));
  };
  return async () => {
    const data = await api("/api/queues");
    last = data;
    const total = (k) => data.queues.reduce((a, q) => a + (q[k] || 0), 0);
    const lanes = data.queues.reduce((a, q) => a + q.lanes.length, 0);
    const idle = data.queues.filter((q) => q.exists && q.messages > 0 && q.consumers === 0).length;
    fill(stats,
      h("div", { class: "stat", id: "stat-queues" }, h("div", { class: "label" }, "Queues"), h("div", { class: "value" }, fmtNum(data.queues.length)),
        lanes ? h("div", { class: "hint" }, `plus ${fmtNum(lanes)} lane${lanes === 1 ? "" : "s"} inside them`) : null),
      h("div", { class: "stat" }, h("div", { class: "label" }, "Messages waiting"), h("div", { class: "value" }, fmtNum(total("messages")))),
      h("div", { class: "stat" }, h("div", { class: "label" }, "Consumers"), h("div", { class: "value" }, fmtNum(total("consumers")))),
      h("div", { class: "stat" + (total("dead_letters") > 0 ? " bad" : "") }, h("div", { class: "label" }, "Dead letters"), h("div", { class: "value" }, fmtNum(total("dead_letters")))));
    fill(note,
      data.source === "amqp" ? h("div", { class: "banner info" }, "Read with passive declares of the known queues (no management API" + (data.note ? ": " + data.note : "") + "); unacked counts and message rates need the management plugin.") : null,
      idle ? h("div", { class: "banner warn" }, `${idle} queue${idle > 1 ? "s have" : " has"} messages and no consumers.`) : null);
    paint();
  };
}

// ---- Tasks -----------------------------------------------------------------

const RANGES = [["", "Any time"], ["900", "Last 15 min"], ["3600", "Last hour"], ["86400", "Last 24 h"]];

/**
 * Unix ms of a datetime-local value (local time), or null. The end of a
 * range takes in the whole minute or second it names.
 */
function localMs(value, end) {
  if (!value) return null;
  const ms = new Date(value).getTime();
  if (Number.isNaN(ms)) return null;
  if (!end) return ms;
  return ms + (value.length > 16 ? 999 : 59999);
}

async function viewTasks(main, _rest, params) {
  const state = h("select", { id: "f-state" }, h("option", { value: "" }, "Any state"), STATES.map((st) => h("option", { value: st }, st)));
  const task = h("input", { id: "f-task", type: "search", placeholder: "name contains…" });
  const queue = h("input", { id: "f-queue", type: "search", placeholder: "queue" });
  const range = h("select", { id: "f-range" }, RANGES.map(([v, t]) => h("option", { value: v }, t)));
  const from = h("input", { id: "f-from", type: "datetime-local", title: "Latest state at or after this minute (local time)" });
  const until = h("input", { id: "f-until", type: "datetime-local", title: "Latest state at or before the end of this minute (local time)" });
  state.value = params.get("state") || "";
  task.value = params.get("task") || "";
  queue.value = params.get("queue") || "";
  range.value = params.get("range") || "";
  from.value = params.get("from") || "";
  until.value = params.get("until") || "";
  const apply = () => {
    const p = new URLSearchParams();
    if (state.value) p.set("state", state.value);
    if (task.value.trim()) p.set("task", task.value.trim());
    if (queue.value.trim()) p.set("queue", queue.value.trim());
    if (range.value) p.set("range", range.value);
    if (from.value) p.set("from", from.value);
    if (until.value) p.set("until", until.value);
    window.location.hash = "#/tasks" + (p.toString() ? "?" + p : "");
  };
  state.addEventListener("change", apply);
  range.addEventListener("change", apply);
  from.addEventListener("change", apply);
  until.addEventListener("change", apply);
  const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); apply(); } },
    h("label", {}, "State", state), h("label", {}, "Task", task), h("label", {}, "Queue", queue), h("label", {}, "Last updated", range),
    h("label", {}, "From", from), h("label", {}, "Until", until),
    h("button", { class: "btn primary", type: "submit" }, "Filter"),
    h("button", { class: "btn", type: "button", onclick: () => { window.location.hash = "#/tasks"; } }, "Clear"));
  const body = h("tbody");
  const foot = h("div", { class: "muted", style: null });
  fill(main, pageHead("Tasks", "The most recently updated tasks, newest first."), h("div", { class: "card" }, form),
    h("div", { class: "card flush" }, table(["State", "Task", "Id", "Queue", "Worker", h("th", { class: "num" }, "Attempt"), "Updated", h("th", { class: "num" }, "Run time"), "Error"], body, "tasks")),
    foot);
  return async () => {
    const q = new URLSearchParams();
    for (const k of ["state", "task", "queue"]) if (params.get(k)) q.set(k, params.get(k));
    // The relative range and the absolute one both hold: the later start.
    const since = [params.get("range") ? Date.now() - Number(params.get("range")) * 1000 : null, localMs(params.get("from"), false)]
      .filter((v) => v !== null);
    const end = localMs(params.get("until"), true);
    if (since.length) q.set("since", String(Math.max(...since)));
    if (end !== null) q.set("until", String(end));
    q.set("limit", "100");
    const data = await api("/api/tasks?" + q);
    fill(body, ...(data.tasks.length ? data.tasks.map((t) => h("tr", { "data-id": t.id },
      h("td", {}, badge(t.state)), h("td", {}, h("strong", {}, t.task)),
      h("td", { class: "nowrap" }, h("a", { class: "mono", href: "#/task/" + t.id }, t.id)),
      h("td", {}, t.queue), h("td", { class: "mono nowrap" }, t.worker || "—"), h("td", { class: "num" }, t.attempt),
      h("td", { class: "nowrap" }, when(t.updated_at)), h("td", { class: "num nowrap" }, duration(t.runtime_ms)),
      h("td", { class: "err", title: t.error ? t.error.type + ": " + t.error.message : null }, t.error ? t.error.type + ": " + t.error.message : "")))
      : [emptyRow(9, "No tasks match", "Tasks appear here once they are sent or run.")]));
    foot.textContent = `${data.tasks.length} task${data.tasks.length === 1 ? "" : "s"} shown · ${data.scanned} recent entries looked at` + (data.truncated ? " · more are older or past the limit" : "")
      + (since.length && end !== null && Math.max(...since) > end ? " · the range starts after it ends" : "");
  };
}

async function viewTask(main, rest) {
  const id = rest[0] || "";
  const box = h("div");
  fill(main, box);
  return async () => {
    let t;
    try { t = await api("/api/tasks/" + encodeURIComponent(id)); } catch (e) {
      fill(box, pageHead("Task"), e.status === 404 ? h("div", { class: "card empty" }, h("strong", {}, "Unknown task"), e.message) : errorBanner(e));
      return;
    }
    const revoke = h("button", {
      class: "btn danger", id: "revoke", disabled: !config.revoke || config.read_only || ["succeeded", "failed", "skipped", "revoked"].includes(t.state),
      title: !config.revoke ? "Revoke needs the control plane" : readOnlyTitle(),
      onclick: async () => {
        const running = t.state === "started";
        const terminate = await choiceDialog("Revoke this task?",
          running ? "It is running now. A plain revoke lets this run finish and only keeps a later copy (a retry, a redelivery) from running."
            : "Workers will not run a queued or delayed copy of it.",
          [`${t.id} · ${t.task}`], [
            { id: "confirm-ok", label: "Revoke", value: "revoke", danger: true, hint: "Queued or delayed copies never run; a run in progress finishes." },
            { id: "confirm-terminate", label: "Revoke and terminate if running", value: "terminate", danger: true,
              hint: "Also stops a run in progress with SIGTERM: a program may clean up, a handler is cancelled after a short grace." },
          ]);
        if (!terminate) return;
        try {
          const r = await post(`/api/tasks/${t.id}/revoke`, { terminate: terminate === "terminate" });
          toast(r.message || "revoked");
        } catch (e) { toast(e.message, true); }
      },
    }, "Revoke");
    const dead = t.state === "failed" ? h("a", { class: "btn primary", id: "to-dead-letter", href: `#/dead-letter/${encodeURIComponent(t.queue)}/${t.id}` }, "Open its dead letter to replay") : null;
    fill(box, 
      pageHead(h("span", {}, t.task, " ", badge(t.state)), h("span", { class: "id-line" }, t.id), h("div", { class: "actions" }, dead, revoke)),
      t.error ? h("div", { class: "error-box", id: "task-error" }, h("div", { class: "type" }, t.error.type), h("pre", {}, t.error.message)) : null,
      h("div", { class: "card" }, h("div", { class: "grid" },
        field("Queue", t.queue), field("Worker", t.worker ? h("span", { class: "mono" }, t.worker) : null),
        field("Attempt", String(t.attempt)), field("Runs", String(t.runs)),
        field("Created", t.created_at && t.created_at_inferred
          ? h("span", { id: "created", title: "No creation time was recorded: the earliest time the record knows" }, fmtTime(t.created_at), h("span", { class: "muted" }, " (first seen)"))
          : h("span", { id: "created" }, fmtTime(t.created_at))), field("Queued", fmtTime(t.queued_at)),
        field("Started", fmtTime(t.started_at)), field("Finished", fmtTime(t.finished_at)),
        field("Run time", duration(t.runtime_ms)), field("Idempotency key", t.idempotency_key ? h("span", { class: "mono" }, t.idempotency_key) : null),
        field("Workflow", t.workflow_id ? h("a", { class: "mono", href: "#/workflow/" + t.workflow_id }, t.workflow_id) : null))),
      h("div", { class: "card flush" }, h("h2", {}, "History"), table(["Time", "State", h("th", { class: "num" }, "Attempt"), "Worker", "Error"],
        t.history.length ? t.history.map((x) => h("tr", {}, h("td", { class: "nowrap mono" }, fmtTime(x.at)), h("td", {}, badge(x.state)),
          h("td", { class: "num" }, x.attempt), h("td", { class: "mono nowrap" }, x.worker || "—"),
          h("td", { class: "err", title: x.error ? x.error.message : null }, x.error ? x.error.type + ": " + x.error.message : "")))
          : [emptyRow(5, "No history", "Only the producer has written so far.")], "history")),
      h("div", { class: "card" }, h("h2", {}, "Result"), t.result === null ? h("p", { class: "muted" }, t.state === "succeeded" ? "No stored result (the task opted out)." : ["failed", "skipped", "revoked"].includes(t.state) ? "No result: the task did not succeed." : "No result yet.") : json(t.result)));
  };
}

// ---- Workflows -------------------------------------------------------------

function progressBar(w) {
  const pct = (n) => (w.nodes ? (100 * n) / w.nodes : 0) + "%";
  const skipped = Math.max(0, w.nodes - w.remaining - w.succeeded - w.failed);
  return h("div", { class: "bar", title: `${w.succeeded} succeeded, ${w.failed} failed, ${skipped} skipped, ${w.remaining} remaining` },
    h("span", { class: "ok", style: "width:" + pct(w.succeeded) }), h("span", { class: "bad", style: "width:" + pct(w.failed) }), h("span", { class: "skip", style: "width:" + pct(skipped) }));
}

async function viewWorkflows(main) {
  const body = h("tbody");
  fill(main, pageHead("Workflows", "The most recently submitted workflows."),
    h("div", { class: "card flush" }, table(["State", "Id", h("th", { class: "num" }, "Nodes"), h("th", { class: "num" }, "Succeeded"), h("th", { class: "num" }, "Failed"), h("th", { class: "num" }, "Remaining"), "Progress", "Submitted", "Finished"], body, "workflows")));
  return async () => {
    const data = await api("/api/workflows?limit=50");
    fill(body, ...(data.workflows.length ? data.workflows.map((w) => h("tr", { "data-id": w.id },
      h("td", {}, badge(w.state === "running" ? "running" : w.state)), h("td", {}, h("a", { class: "mono", href: "#/workflow/" + w.id }, w.id)),
      h("td", { class: "num" }, w.nodes), h("td", { class: "num" }, w.succeeded), h("td", { class: "num" }, w.failed), h("td", { class: "num" }, w.remaining),
      h("td", {}, progressBar(w)), h("td", { class: "nowrap" }, when(w.created_at)), h("td", { class: "nowrap" }, w.finished_at ? when(w.finished_at) : "—")))
      : [emptyRow(9, "No workflows yet", "Submitted workflows and canvases appear here.")]));
  };
}

const NODE_COLORS = {
  succeeded: ["#dcfce7", "#16a34a"], failed: ["#fee2e2", "#dc2626"], retrying: ["#fef3c7", "#d97706"],
  started: ["#dbeafe", "#2563eb"], released: ["#e0f2fe", "#0284c7"], queued: ["#e0f2fe", "#0284c7"],
  waiting: ["#f1f5f9", "#94a3b8"], skipped: ["#f8fafc", "#cbd5e1"], revoked: ["#f3e8ff", "#9333ea"], created: ["#f1f5f9", "#94a3b8"],
};
function nodeState(n) {
  if (n.progress === "skipped" || n.progress === "waiting") return n.progress;
  return n.state || n.progress;
}

function drawDag(nodes) {
  const W = 190, H = 58, GX = 70, GY = 22, PAD = 16;
  const columns = [];
  for (const n of nodes) (columns[n.depth] = columns[n.depth] || []).push(n);
  const pos = {};
  let maxRows = 0;
  columns.forEach((col, d) => {
    (col || []).sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
    maxRows = Math.max(maxRows, (col || []).length);
  });
  const height = PAD * 2 + maxRows * H + (maxRows - 1) * GY;
  columns.forEach((col, d) => {
    const colHeight = col.length * H + (col.length - 1) * GY;
    const top = (height - colHeight) / 2;
    col.forEach((n, i) => { pos[n.id] = { x: PAD + d * (W + GX), y: top + i * (H + GY) }; });
  });
  const width = PAD * 2 + columns.length * W + (columns.length - 1) * GX;
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "dag", role: "img", "aria-label": "workflow graph" },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#94a3b8" }))));
  for (const n of nodes) for (const dep of n.dependencies) {
    const a = pos[dep], b = pos[n.id];
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x - 2, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    svg.append(s("path", { d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`, fill: "none", stroke: "#94a3b8", "stroke-width": "1.6", "marker-end": "url(#arrow)" }));
  }
  for (const n of nodes) {
    const p = pos[n.id];
    const st = nodeState(n);
    const [fill, stroke] = NODE_COLORS[st] || NODE_COLORS.waiting;
    const clip = (t, max) => (t && t.length > max ? t.slice(0, max - 1) + "…" : t || "");
    const g = s("g", { class: "node", "data-node": n.id, "data-state": st, transform: `translate(${p.x},${p.y})`, onclick: () => { window.location.hash = "#/task/" + n.task_id; } },
      s("title", {}, `${n.id} · ${n.task || ""} · ${st}${n.error ? "\n" + n.error.type + ": " + n.error.message : ""}`),
      s("rect", { width: W, height: H, rx: 9, fill, stroke, "stroke-width": "1.8", "stroke-dasharray": st === "skipped" ? "5 4" : null }),
      s("rect", { width: 6, height: H, rx: 3, fill: stroke }),
      s("text", { x: 16, y: 23, "font-size": "13", "font-weight": "650", fill: "#0f172a" }, clip(n.id, 22)),
      s("text", { x: 16, y: 42, "font-size": "11.5", fill: "#475569" }, clip(n.task, 17) + " · " + st));
    svg.append(g);
  }
  return svg;
}

async function viewWorkflow(main, rest) {
  const id = rest[0] || "";
  const head = h("div"), dag = h("div", { class: "dag" }), body = h("tbody");
  const legend = h("div", { class: "legend" }, ["waiting", "released", "started", "retrying", "succeeded", "failed", "skipped"].map((st) => badge(st)));
  fill(main, head, h("div", { class: "card" }, h("h2", {}, "Graph"), dag, legend),
    h("div", { class: "card flush" }, h("h2", {}, "Nodes"), table(["Node", "Task", "State", h("th", { class: "num" }, "Attempt"), "Worker", "Error"], body, "nodes")));
  return async () => {
    let data;
    try { data = await api("/api/workflows/" + encodeURIComponent(id)); } catch (e) {
      fill(head, pageHead("Workflow"), e.status === 404 ? h("div", { class: "card empty" }, h("strong", {}, "Unknown workflow"), e.message) : errorBanner(e));
      return;
    }
    const w = data.workflow;
    fill(head, pageHead(h("span", {}, "Workflow ", badge(w.state)), h("span", { class: "id-line" }, w.id)),
      h("div", { class: "stats" },
        h("div", { class: "stat" }, h("div", { class: "label" }, "Nodes"), h("div", { class: "value" }, fmtNum(w.nodes))),
        h("div", { class: "stat" }, h("div", { class: "label" }, "Succeeded"), h("div", { class: "value" }, fmtNum(w.succeeded))),
        h("div", { class: "stat" + (w.failed ? " bad" : "") }, h("div", { class: "label" }, "Failed"), h("div", { class: "value" }, fmtNum(w.failed))),
        h("div", { class: "stat" }, h("div", { class: "label" }, "Remaining"), h("div", { class: "value" }, fmtNum(w.remaining)))));
    fill(dag, data.nodes.length > 400 ? h("p", { class: "muted" }, `${data.nodes.length} nodes: too many to draw; see the table.`) : drawDag(data.nodes));
    fill(body, ...data.nodes.slice().sort((a, b) => a.depth - b.depth || a.id.localeCompare(b.id, undefined, { numeric: true })).map((n) => h("tr", { "data-node": n.id },
      h("td", {}, h("a", { href: "#/task/" + n.task_id }, h("strong", {}, n.id))), h("td", {}, n.task || "—"), h("td", {}, badge(nodeState(n))),
      h("td", { class: "num" }, n.attempt === null ? "—" : n.attempt), h("td", { class: "mono nowrap" }, n.worker || "—"),
      h("td", { class: "err", title: n.error ? n.error.message : null }, n.error ? n.error.type + ": " + n.error.message : ""))));
  };
}

// ---- Dead letters ----------------------------------------------------------

async function viewDeadLetters(main, _rest, params) {
  const queue = params.get("queue") || "";
  const selected = new Set();
  let letters = [];
  const tabs = h("div", { class: "tabs" });
  const body = h("tbody");
  const note = h("div");
  const all = h("input", { type: "checkbox", id: "select-all", title: "Select all", onchange: () => { letters.forEach((l) => (all.checked ? selected.add(key(l)) : selected.delete(key(l)))); paint(); } });
  const replayBtn = h("button", { class: "btn primary", id: "replay-selected", onclick: () => act("replay") });
  const deleteBtn = h("button", { class: "btn danger", id: "delete-selected", onclick: () => act("delete") });
  const key = (l) => l.dlq_queue + "\u0000" + l.task_id;
  const paint = () => {
    const n = selected.size;
    replayBtn.textContent = n ? `Replay ${n} selected` : "Replay selected";
    deleteBtn.textContent = n ? `Delete ${n} selected` : "Delete selected";
    replayBtn.disabled = deleteBtn.disabled = !n || config.read_only;
    replayBtn.title = deleteBtn.title = readOnlyTitle();
    for (const box of body.querySelectorAll("input[type=checkbox]")) box.checked = selected.has(box.value);
    all.checked = letters.length > 0 && letters.every((l) => selected.has(key(l)));
  };
  async function act(action) {
    const chosen = letters.filter((l) => selected.has(key(l)));
    const byQueue = {};
    for (const l of chosen) (byQueue[l.dlq_queue] = byQueue[l.dlq_queue] || []).push(l.task_id);
    const verb = action === "replay" ? "Replay" : "Delete";
    const text = action === "replay"
      ? "Each copy goes back to its work queue with attempt 0; its dead letter is deleted only once the broker confirmed the copy."
      : "These dead letters are deleted for good.";
    if (!(await confirmDialog(`${verb} ${chosen.length} dead letter${chosen.length > 1 ? "s" : ""}?`, text, chosen.map((l) => `${l.task_id} · ${l.task || "?"}`), `${verb} ${chosen.length}`, action === "delete"))) return;
    const summary = [];
    for (const [q, ids] of Object.entries(byQueue)) {
      try {
        const r = await post(`/api/dead-letters/${action}`, { queue: q, ids });
        summary.push(`${r.action} ${r.done.length}` + (r.skipped.length ? `, skipped ${r.skipped.length} (${r.skipped[0].reason})` : "") + (r.not_found.length ? `, ${r.not_found.length} gone already` : ""));
        ids.forEach((id) => selected.delete(q + "\u0000" + id));
      } catch (e) { toast(e.message, true); return; }
    }
    toast(summary.join("; "));
    await refresh();
  }
  fill(main, pageHead("Dead letters", "Tasks that failed for good. Inspect them, replay them to their queue, or delete them."),
    note, tabs,
    h("div", { class: "card flush" }, h("div", { class: "toolbar" }, replayBtn, deleteBtn, h("span", { class: "spacer" }), h("span", { class: "muted", id: "dl-count" })),
      table([h("th", { class: "check" }, all), "Task id", "Task", "Queue", "Reason", "Error", "Failed", h("th", { class: "num" }, "Attempts"), h("th", { class: "num" }, "Replays")], body, "dead-letters")));
  const refresh = async () => {
    const data = await api("/api/dead-letters?limit=200" + (queue ? "&queue=" + encodeURIComponent(queue) : ""));
    letters = data.letters;
    const known = new Set(letters.map(key));
    for (const k of [...selected]) if (!known.has(k)) selected.delete(k);
    const total = data.queues.reduce((a, q) => a + q.depth, 0);
    fill(tabs, h("a", { href: "#/dead-letters", class: queue ? "" : "active" }, `All queues (${total})`),
      ...data.queues.map((q) => h("a", { href: "#/dead-letters?queue=" + encodeURIComponent(q.queue), class: queue === q.queue ? "active" : "" }, `${q.queue} (${q.depth})`)));
    fill(note, config.read_only ? h("div", { class: "banner warn" }, config.read_only_reason) : null);
    document.getElementById("dl-count").textContent = `${letters.length} shown` + (data.truncated ? ` (first ${data.limit} per queue)` : "");
    fill(body, ...(letters.length ? letters.map((l) => h("tr", { "data-id": l.task_id },
      h("td", { class: "check" }, h("input", { type: "checkbox", value: key(l), "aria-label": "select " + l.task_id, onchange: (e) => { e.target.checked ? selected.add(key(l)) : selected.delete(key(l)); paint(); } })),
      h("td", { class: "nowrap" }, h("a", { class: "mono", href: `#/dead-letter/${encodeURIComponent(l.dlq_queue)}/${l.task_id}` }, l.task_id)),
      h("td", {}, h("strong", {}, l.task || "—")), h("td", {}, l.queue), h("td", {}, badge(l.reason === "failed" || l.reason === "rejected" ? "failed" : "warn", l.reason || "—")),
      h("td", { class: "err", title: l.error_message || null }, l.error_type ? l.error_type + ": " + (l.error_message || "") : ""),
      h("td", { class: "nowrap" }, when(l.failed_at)), h("td", { class: "num" }, fmtNum(l.attempts)), h("td", { class: "num" }, fmtNum(l.replay_count))))
      : [emptyRow(9, "No dead letters", "Nothing failed for good" + (queue ? " in " + queue : "") + ".")]));
    paint();
  };
  refresh.every = 4000;
  return refresh;
}

async function viewDeadLetter(main, rest) {
  const [queue, id] = rest;
  const box = h("div", {}, h("p", { class: "muted" }, "Reading the dead-letter queue…"));
  fill(main, box);
  let d;
  try { d = await api(`/api/dead-letters/${encodeURIComponent(queue)}/${encodeURIComponent(id)}`); } catch (e) {
    fill(box, pageHead("Dead letter"), e.status === 404 ? h("div", { class: "card empty", id: "dl-gone" }, h("strong", {}, "Not in the dead-letter queue"), e.message, " ", h("a", { href: "#/task/" + id }, "See the task's record.")) : errorBanner(e));
    return null;
  }
  const run = async (action) => {
    const verb = action === "replay" ? "Replay" : "Delete";
    const text = action === "replay" ? "A copy goes back to " + d.queue + " with attempt 0; the dead letter is deleted once the broker confirmed the copy." : "The dead letter is deleted for good.";
    if (!(await confirmDialog(`${verb} this dead letter?`, text, [`${d.task_id} · ${d.task || "?"}`], verb, action === "delete"))) return;
    try {
      const r = await post(`/api/dead-letters/${action}`, { queue, ids: [id] });
      if (r.done.length) { toast(`${r.action} ${d.task_id}`); window.location.hash = "#/task/" + d.task_id; }
      else toast(r.skipped.length ? "not replayed: " + r.skipped[0].reason : "it is not in the dead-letter queue any more", true);
    } catch (e) { toast(e.message, true); }
  };
  const headers = Object.entries(d.headers || {});
  fill(box, 
    pageHead(h("span", {}, d.task || "Dead letter", " ", badge("failed", d.reason || "dead letter")), h("span", { class: "id-line" }, d.task_id),
      h("div", { class: "actions" },
        h("button", { class: "btn primary", id: "replay-one", disabled: config.read_only, title: readOnlyTitle(), onclick: () => run("replay") }, "Replay"),
        h("button", { class: "btn danger", id: "delete-one", disabled: config.read_only, title: readOnlyTitle(), onclick: () => run("delete") }, "Delete"))),
    config.read_only ? h("div", { class: "banner warn" }, config.read_only_reason) : null,
    d.error_type ? h("div", { class: "error-box" }, h("div", { class: "type" }, d.error_type), h("pre", {}, d.error_message || "")) : null,
    h("div", { class: "card" }, h("div", { class: "grid" },
      field("Queue", d.queue), field("Reason", d.reason), field("Failed at", fmtTime(d.failed_at)), field("Worker", d.worker),
      field("Attempts", d.attempts === null ? null : String(d.attempts)), field("Replays", String(d.replay_count)), field("Size", d.size + " bytes"),
      field("Task record", h("a", { href: "#/task/" + d.task_id }, "open")))),
    h("div", { class: "card" }, h("h2", {}, "Input"), d.decode_error ? h("p", { class: "error-text" }, "The body does not decode: " + d.decode_error) : json(d.input)),
    h("div", { class: "card flush" }, h("h2", {}, "Headers"), table(["Header", "Value"], headers.length ? headers.map(([k, v]) => h("tr", {}, h("td", { class: "mono nowrap" }, k), h("td", { class: "mono" }, JSON.stringify(Object.values(v)[0] !== undefined && Object.keys(v).length === 1 ? Object.values(v)[0] : v)))) : [emptyRow(2, "No headers")], "headers")),
    h("div", { class: "card" }, h("h2", {}, "Envelope"), json(d.envelope)));
  return null;
}

// ---- Workers ---------------------------------------------------------------

async function viewWorkers(main) {
  const beats = h("div"), body = h("tbody");
  fill(main, pageHead("Workers", "Live workers from their heartbeats, and the workers seen in recent tasks."), beats,
    h("div", { class: "card flush" }, h("h2", {}, "Seen in recent tasks"), table(["Worker", "Last seen", h("th", { class: "num" }, "Running"), h("th", { class: "num" }, "Succeeded"), h("th", { class: "num" }, "Failed"), h("th", { class: "num" }, "Retrying"), "Queues"], body, "seen")));
  return async () => {
    const data = await api("/api/workers");
    if (data.heartbeats === null) {
      fill(beats, h("div", { class: "banner info", id: "no-heartbeats" }, "No heartbeat data" + (data.heartbeat_error ? ": " + data.heartbeat_error : "") + ". Live status appears here once workers publish heartbeats; below are the workers seen in recent tasks."));
    } else {
      const now = Date.now();
      fill(beats, h("div", { class: "card flush" }, h("h2", {}, "Live"), table(["Worker", "Status", "Host", h("th", { class: "num" }, "PID"), "Queues", h("th", { class: "num" }, "Running"), h("th", { class: "num" }, "Processed"), "Up since", "Heartbeat", "Version"],
        data.heartbeats.length ? data.heartbeats.map((w) => {
          const late = now - w.at > 3 * (w.heartbeat_ms || 2000);
          return h("tr", { "data-worker": w.worker }, h("td", { class: "mono" }, w.worker), h("td", {}, badge(late ? "late" : "online", late ? "late" : "online")), h("td", {}, w.hostname),
            h("td", { class: "num" }, w.pid), h("td", {}, w.queues.join(", ")), h("td", { class: "num" }, `${w.in_flight} / ${w.concurrency}`),
            h("td", { class: "num" }, fmtNum(w.processed)), h("td", { class: "nowrap" }, when(w.started_at)), h("td", { class: "nowrap" }, when(w.at)), h("td", {}, w.version));
        }) : [emptyRow(10, "No live workers", "No heartbeat arrived recently.")], "heartbeats")));
    }
    fill(body, ...(data.seen.length ? data.seen.map((w) => h("tr", { "data-worker": w.worker }, h("td", { class: "mono" }, w.worker), h("td", { class: "nowrap" }, when(w.last_seen)),
      h("td", { class: "num" }, w.running), h("td", { class: "num" }, w.succeeded), h("td", { class: "num" }, countBadge(w.failed, true)), h("td", { class: "num" }, w.retrying), h("td", {}, w.queues.join(", "))))
      : [emptyRow(7, "No workers seen", "No recent task was run by a worker.")]));
  };
}

const VIEWS = {
  queues: viewQueues, tasks: viewTasks, task: viewTask, workflows: viewWorkflows, workflow: viewWorkflow,
  "dead-letters": viewDeadLetters, "dead-letter": viewDeadLetter, workers: viewWorkers,
};

// ---- start -----------------------------------------------------------------

document.getElementById("find").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("find-id");
  const id = input.value.trim();
  if (!id) return;
  try { await api("/api/tasks/" + encodeURIComponent(id)); input.value = ""; input.blur(); window.location.hash = "#/task/" + id; return; } catch (e) { if (e.status !== 404) { toast(e.message, true); return; } }
  try { await api("/api/workflows/" + encodeURIComponent(id)); input.value = ""; input.blur(); window.location.hash = "#/workflow/" + id; return; } catch (e) { /* neither */ }
  toast(`No task or workflow ${id} in the store (unknown, or expired).`, true);
});

(async () => {
  try { config = await api("/api/config"); } catch (e) {
    document.getElementById("main").replaceChildren(errorBanner(e));
    return;
  }
  document.getElementById("ns").textContent = "namespace " + config.namespace;
  const mode = document.getElementById("mode");
  mode.textContent = config.read_only ? "read-only" : "read-write";
  mode.className = "pill " + (config.read_only ? "warn" : "ok");
  mode.title = config.read_only_reason || "Replay, delete and revoke are enabled";
  window.addEventListener("hashchange", render);
  render();
})();
