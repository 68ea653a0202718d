// The edgeplane console: one page, rendered from watch streams of the resource API.
//
// Everything shown comes from the API with the signed-in user's credential (a ServiceAccount
// token kept for this tab only, or the client certificate the browser presents), under the
// same RBAC as edgectl and kubectl. Lists stay current through watches (one stream per kind,
// resumed from the last resourceVersion after a drop); the Raft figures, which no watch
// carries, are read once every two seconds while the overview is shown.
"use strict";

const API = "/apis/edgeplane.io/v1alpha1";
const NODE_LABEL = "edgeplane.io/node";
const TOKEN_KEY = "edgeplane.token";

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  who: null,
  can: { patchNodes: false, evict: false },
  kinds: {
    edgenodes: new Map(),
    workloads: new Map(),
    assignments: new Map(),
    events: new Map(),
  },
  cluster: null,
  clusterError: null,
  watches: [],
  timers: [],
};

// ---- the API ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function headers(extra) {
  const h = Object.assign({ Accept: "application/json" }, extra || {});
  if (state.token) h.Authorization = "Bearer " + state.token;
  return h;
}

async function api(path, options) {
  const o = options || {};
  const init = { method: o.method || "GET", headers: headers(o.contentType ? { "Content-Type": o.contentType } : {}) };
  if (o.body !== undefined) init.body = typeof o.body === "string" ? o.body : JSON.stringify(o.body);
  const response = await fetch(path, init);
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, (body && body.message) || response.statusText);
  return body;
}

const keyOf = (o) => (o.metadata.namespace ? o.metadata.namespace + "/" : "") + o.metadata.name;

// Keeps `map` equal to the objects at `path`, as a watch stream reports them, until `signal`
// aborts. A dropped stream resumes from the last version seen; a version too old (410)
// starts over with the current objects.
async function watch(path, map, signal) {
  let version = null;
  while (!signal.aborted) {
    try {
      const query = "?watch=true" + (version ? "&resourceVersion=" + encodeURIComponent(version) : "");
      const response = await fetch(path + query, { headers: headers(), signal });
      if (response.status === 410) {
        version = null;
        map.clear();
        continue;
      }
      if (!response.ok) throw new ApiError(response.status, response.statusText);
      if (!version) map.clear();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      stream: for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, end).trim();
          buffer = buffer.slice(end + 1);
          if (!line) continue;
          const event = JSON.parse(line);
          if (event.type === "ERROR") {
            // The watch fell behind or the history was reset: list again.
            version = null;
            reader.cancel();
            break stream;
          }
          const object = event.object;
          version = object.metadata.resourceVersion || version;
          if (event.type === "ADDED" || event.type === "MODIFIED") map.set(keyOf(object), object);
          else if (event.type === "DELETED") map.delete(keyOf(object));
          scheduleRender();
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && (e.code === 401 || e.code === 403)) {
        notice("Cannot watch " + path + ": " + e.message);
        return;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function can(verb, resource) {
  const review = {
    apiVersion: "authorization.k8s.io/v1",
    kind: "SelfSubjectAccessReview",
    spec: { resourceAttributes: { verb, resource, group: "edgeplane.io" } },
  };
  try {
    const answer = await api("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", { method: "POST", body: review, contentType: "application/json" });
    return answer.status.allowed === true;
  } catch (e) {
    return false;
  }
}

// ---- sign-in ------------------------------------------------------------------------------

// Signs in with the token of this tab, or (when asked) the browser's client certificate.
// Without either nothing is requested: a request the server refuses would be logged as an
// error on every visit.
async function start(withCertificate) {
  stop();
  if (!state.token && !withCertificate) {
    showSignIn("");
    return;
  }
  try {
    state.who = await api("/v1/whoami");
  } catch (e) {
    state.who = null;
  }
  if (!state.who || state.who.authenticatedBy === "anonymous") {
    showSignIn(state.token ? "That token was not accepted." : "The browser presented no certificate the cluster accepts.");
    return;
  }
  document.getElementById("sign-in").hidden = true;
  document.getElementById("sign-out").hidden = state.token === null;
  document.getElementById("who").textContent = "Signed in as " + state.who.user;
  const [patchNodes, evict] = await Promise.all([can("patch", "edgenodes"), can("delete", "assignments")]);
  state.can = { patchNodes, evict };
  const controller = new AbortController();
  state.watches.push(controller);
  watch(API + "/edgenodes", state.kinds.edgenodes, controller.signal);
  watch(API + "/workloads", state.kinds.workloads, controller.signal);
  watch(API + "/assignments", state.kinds.assignments, controller.signal);
  watch("/api/v1/events", state.kinds.events, controller.signal);
  refreshCluster();
  state.timers.push(setInterval(refreshCluster, 2000));
  // Heartbeat ages move with the clock: only their cells change.
  state.timers.push(setInterval(updateAges, 1000));
  render();
}

function stop() {
  state.watches.forEach((c) => c.abort());
  state.watches = [];
  state.timers.forEach(clearInterval);
  state.timers = [];
  Object.values(state.kinds).forEach((m) => m.clear());
  resetData(null);
}

function showSignIn(error) {
  document.getElementById("sign-in").hidden = false;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("sign-in-error").textContent = error;
  document.getElementById("main").replaceChildren();
  document.getElementById("token").focus();
}

async function refreshCluster() {
  if (route().page !== "overview") return;
  try {
    state.cluster = await api("/v1/cluster");
    state.clusterError = null;
  } catch (e) {
    state.clusterError = e.message;
  }
  scheduleRender();
}

// ---- actions ------------------------------------------------------------------------------

function notice(text) {
  document.getElementById("notice").textContent = text;
}

async function setCordoned(node, cordoned) {
  await api(API + "/edgenodes/" + encodeURIComponent(node), {
    method: "PATCH",
    body: { spec: { cordoned } },
    contentType: "application/merge-patch+json",
  });
}

// As `edgectl node drain`: cordon, then evict the node's replicas except daemon ones; the
// scheduler places them elsewhere.
async function drain(node) {
  await setCordoned(node, true);
  const selector = encodeURIComponent(NODE_LABEL + "=" + node);
  const assignments = await api(API + "/assignments?labelSelector=" + selector);
  let evicted = 0;
  for (const a of assignments.items) {
    const workload = state.kinds.workloads.get(a.metadata.namespace + "/" + a.spec.workload);
    if (workload && workload.spec.mode === "daemon") continue;
    await api(API + "/namespaces/" + encodeURIComponent(a.metadata.namespace) + "/assignments/" + encodeURIComponent(a.metadata.name), { method: "DELETE" });
    evicted += 1;
  }
  return evicted;
}

async function act(what, action) {
  notice(what + "…");
  try {
    const result = await action();
    notice(what + ": done" + (typeof result === "number" ? " (" + result + " replica(s) evicted)" : ""));
  } catch (e) {
    notice(what + " failed: " + e.message);
  }
}

// ---- rendering ----------------------------------------------------------------------------

// An element with attributes and children (strings become text: nothing is parsed as HTML).
function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

function table(caption, columns, rows) {
  return h("table", {},
    h("caption", { class: "muted" }, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "None."))));
}

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "overview", args: parts.slice(1) };
}

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    render();
  });
}

function render() {
  if (!state.who) return;
  const { page, args } = route();
  for (const link of document.querySelectorAll("header nav a")) {
    if (link.getAttribute("href") === "#/" + page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const pages = { overview, nodes, workloads, data: dataPage, events };
  const content = (pages[page] || overview)(args);
  const main = document.getElementById("main");
  // Keep keyboard focus (and the caret) on the control that had it when the page is
  // re-rendered in place.
  const active = document.activeElement;
  const focused = active && main.contains(active) && active.id;
  const caret = focused && typeof active.selectionStart === "number" ? [active.selectionStart, active.selectionEnd] : null;
  main.replaceChildren(content);
  if (focused) {
    const again = document.getElementById(focused);
    if (again) {
      again.focus();
      if (caret && typeof again.setSelectionRange === "function") again.setSelectionRange(caret[0], caret[1]);
    }
  }
}

function nodeState(node) {
  const conditions = (node.status && node.status.conditions) || [];
  const ready = conditions.find((c) => c.type === "Ready");
  if (!ready) return "Unknown";
  if (ready.status === "True") return "Ready";
  if (ready.reason === "HeartbeatsMissed") return "Suspect";
  if (ready.reason === "NodeDown") return "Down";
  return "NotReady";
}

function workloadState(w) {
  const status = w.status || {};
  const desired = w.spec.mode === "daemon" ? status.replicas || 0 : w.spec.replicas === undefined ? 1 : w.spec.replicas;
  if (status.rollout && status.rollout.phase === "Progressing") return "Progressing";
  if ((status.readyReplicas || 0) >= desired && desired > 0) return "Running";
  return "Pending";
}

function age(rfc3339) {
  if (!rfc3339) return "—";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(rfc3339)) / 1000));
  return seconds < 120 ? seconds + "s" : Math.round(seconds / 60) + "m";
}

// When the node's Ready condition last changed, as an age that moves with the clock.
function readySince(node) {
  const ready = ((node.status && node.status.conditions) || []).find((c) => c.type === "Ready");
  const since = ready && ready.lastTransitionTime;
  return h("span", { "data-since": since || "" }, age(since));
}

function updateAges() {
  for (const cell of document.querySelectorAll("[data-since]")) cell.textContent = age(cell.getAttribute("data-since"));
}

function countBy(items, keyOf) {
  const counts = new Map();
  for (const item of items) counts.set(keyOf(item), (counts.get(keyOf(item)) || 0) + 1);
  return counts;
}

function pairs(entries) {
  return h("dl", { class: "pairs" }, entries.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function overview() {
  const c = state.cluster;
  const nodes = [...state.kinds.edgenodes.values()];
  const workloads = [...state.kinds.workloads.values()];
  const byState = countBy(nodes, nodeState);
  const byTier = countBy(nodes, (n) => n.spec.tier);
  const byPhase = countBy(workloads, workloadState);
  const raft = c
    ? pairs([
        ["Leader", c.leaderId ? "member " + c.leaderId : "none known"],
        ["Term", c.term],
        ["Commit index", c.commitIndex],
        ["Applied index", c.appliedIndex],
        ["Members", c.members.map((m) => m.id + (m.matchIndex !== undefined ? " (match " + m.matchIndex + ")" : "")).join(", ")],
        ["This member", c.nodeId + " (" + c.role + ")"],
      ])
    : h("p", { class: "muted" }, state.clusterError ? "Cannot read the cluster's state: " + state.clusterError : "Reading…");
  return h("section", { "aria-labelledby": "overview-title" },
    h("h1", { id: "overview-title" }, "Overview"),
    h("div", { class: "cards" },
      h("section", { class: "card", id: "raft" }, h("h2", {}, "Raft"), raft),
      h("section", { class: "card", id: "nodes-by-state" }, h("h2", {}, "Nodes"),
        h("p", { class: "figure" }, nodes.length),
        pairs([...byState].map(([s, n]) => [h("span", { class: "state-" + s }, s), n]).concat([...byTier].map(([t, n]) => ["tier " + t, n])))),
      h("section", { class: "card", id: "workloads-by-phase" }, h("h2", {}, "Workloads"),
        h("p", { class: "figure" }, workloads.length),
        pairs(["Running", "Progressing", "Pending"].map((p) => [h("span", { class: "state-" + p }, p), byPhase.get(p) || 0]))),
      h("section", { class: "card" }, h("h2", {}, "Replicas placed"),
        h("p", { class: "figure" }, state.kinds.assignments.size))));
}

function nodes() {
  const assignments = [...state.kinds.assignments.values()];
  const rows = [...state.kinds.edgenodes.values()]
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))
    .map((n) => {
      const name = n.metadata.name;
      const s = nodeState(n);
      const instances = assignments.filter((a) => a.spec.nodeName === name).length;
      const labels = Object.entries(n.metadata.labels || {}).map(([k, v]) => k + "=" + v).join(", ");
      const taints = (n.spec.taints || []).map((t) => t.key + (t.value ? "=" + t.value : "") + ":" + t.effect).join(", ");
      const why = state.can.patchNodes ? null : "Your role may not change nodes";
      return h("tr", { "data-node": name },
        h("th", { scope: "row" }, name),
        h("td", { class: "state-" + s, "data-field": "state" }, s + (n.spec.cordoned ? ", cordoned" : "")),
        h("td", {}, n.spec.tier),
        h("td", {}, (n.spec.capabilities || []).join(", ")),
        h("td", {}, labels),
        h("td", {}, taints),
        h("td", {}, n.spec.capacity.memoryMib + " MiB, " + n.spec.capacity.instanceSlots + " slots"),
        h("td", { "data-field": "instances" }, instances),
        h("td", {}, readySince(n)),
        h("td", { class: "actions" },
          n.spec.cordoned
            ? h("button", { type: "button", id: "uncordon-" + name, class: "secondary", disabled: !state.can.patchNodes, title: why, "data-action": "uncordon",
                onclick: () => act("Uncordon " + name, () => setCordoned(name, false)) }, "Uncordon")
            : h("button", { type: "button", id: "cordon-" + name, class: "secondary", disabled: !state.can.patchNodes, title: why, "data-action": "cordon",
                onclick: () => act("Cordon " + name, () => setCordoned(name, true)) }, "Cordon"),
          " ",
          h("button", { type: "button", id: "drain-" + name, disabled: !(state.can.patchNodes && state.can.evict), title: why, "data-action": "drain",
            onclick: () => act("Drain " + name, () => drain(name)) }, "Drain")));
    });
  return h("section", { "aria-labelledby": "nodes-title" },
    h("h1", { id: "nodes-title" }, "Nodes"),
    table("Edge nodes, live", ["Name", "State", "Tier", "Capabilities", "Labels", "Taints", "Capacity", "Replicas", "State since", "Actions"], rows));
}

function workloads() {
  const assignments = [...state.kinds.assignments.values()];
  const rows = [...state.kinds.workloads.values()]
    .sort((a, b) => keyOf(a).localeCompare(keyOf(b)))
    .map((w) => {
      const status = w.status || {};
      const placed = assignments
        .filter((a) => a.metadata.namespace === w.metadata.namespace && a.spec.workload === w.metadata.name)
        .sort((a, b) => a.spec.replica - b.spec.replica)
        .map((a) => "#" + a.spec.replica + " on " + a.spec.nodeName);
      const s = workloadState(w);
      const conditions = (status.conditions || []).map((c) => c.type + "=" + c.status + (c.reason ? " (" + c.reason + ")" : "")).join("; ");
      return h("tr", { "data-workload": keyOf(w) },
        h("td", {}, w.metadata.namespace),
        h("th", { scope: "row" }, w.metadata.name),
        h("td", {}, w.spec.module),
        h("td", { class: "state-" + s }, s),
        h("td", {}, (status.readyReplicas || 0) + "/" + (w.spec.mode === "daemon" ? "daemon" : w.spec.replicas === undefined ? 1 : w.spec.replicas)),
        h("td", { "data-field": "nodes" }, placed.join(", ")),
        h("td", {}, conditions));
    });
  return h("section", { "aria-labelledby": "workloads-title" },
    h("h1", { id: "workloads-title" }, "Workloads"),
    table("Workloads and where their replicas run, live", ["Namespace", "Name", "Module", "State", "Ready", "Replicas", "Conditions"], rows));
}

// ---- data ---------------------------------------------------------------------------------

// What the cloud sink holds for one workload, read from a cursor once a second while the data
// page is shown (the sink has no watch): a series of points per device and metric, each point
// with the version of the Model that produced it, and the newest records.
const MAX_POINTS = 2000;
const TAIL = 20;
const COLOURS = ["#0b5cad", "#a40e26", "#116329", "#7d4e00", "#6639ba"];
const data = { key: null, cursor: 0, series: new Map(), tail: [], charts: new Map(), following: false };

function resetData(key) {
  data.key = key;
  data.cursor = 0;
  data.series = new Map();
  data.tail = [];
  data.charts.forEach((c) => c.plot.destroy());
  data.charts = new Map();
}

async function followData() {
  if (data.following) return;
  data.following = true;
  try {
    while (state.who && route().page === "data") {
      let full = false;
      if (data.key) {
        const key = data.key;
        const [namespace, name] = key.split("/");
        const query = "?namespace=" + encodeURIComponent(namespace) + "&workload=" + encodeURIComponent(name) + "&after=" + data.cursor + "&limit=1000";
        try {
          const page = await api("/v1/data" + query);
          if (key === data.key) absorb(page);
          full = page.records.length === 1000;
        } catch (e) {
          notice("Cannot read the data of " + key + ": " + e.message);
        }
      }
      // Catch up without waiting; then once a second.
      if (!full) await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } finally {
    data.following = false;
  }
}

function absorb(page) {
  for (const record of page.records) {
    data.tail.push(record);
    const model = record.model || "none";
    for (const r of record.readings || []) {
      const name = r.device + " " + r.metric;
      let series = data.series.get(name);
      if (!series) data.series.set(name, (series = []));
      series.push({ t: r.ts / 1000, v: r.value, model });
      if (series.length > MAX_POINTS) series.splice(0, series.length - MAX_POINTS);
    }
  }
  if (data.tail.length > TAIL) data.tail.splice(0, data.tail.length - TAIL);
  data.cursor = page.next;
  if (page.records.length) scheduleRender();
}

// One series per Model version, aligned on the points' times: where a version's line starts
// is where the new model's answers start.
function aligned(points) {
  const models = [...new Set(points.map((p) => p.model))];
  const sorted = [...points].sort((a, b) => a.t - b.t);
  const xs = sorted.map((p) => p.t);
  const ys = models.map((m) => sorted.map((p) => (p.model === m ? p.v : null)));
  return { models, table: [xs, ...ys] };
}

function chart(name, points) {
  const { models, table } = aligned(points);
  let entry = data.charts.get(name);
  if (entry && entry.models !== models.join("|")) {
    entry.plot.destroy();
    entry = null;
  }
  if (!entry) {
    const holder = h("figure", { class: "chart" });
    const plot = new uPlot({
      width: 640,
      height: 220,
      title: name,
      scales: { x: { time: true } },
      series: [{ label: "time" }].concat(models.map((m, i) => ({
        label: "model " + m,
        stroke: COLOURS[i % COLOURS.length],
        points: { show: true, size: 4 },
        spanGaps: false,
      }))),
    }, table, holder);
    entry = { plot, holder, models: models.join("|") };
    data.charts.set(name, entry);
  } else {
    entry.plot.setData(table);
  }
  const last = points[points.length - 1];
  entry.holder.setAttribute("data-series", name);
  entry.holder.setAttribute("data-points", String(points.length));
  entry.holder.setAttribute("data-models", models.join(","));
  entry.holder.setAttribute("role", "img");
  entry.holder.setAttribute("aria-label", name + ": " + points.length + " points, the last " + last.v + " (model " + last.model + ")");
  return entry.holder;
}

function dataPage() {
  const keys = [...state.kinds.workloads.values()].map(keyOf).sort();
  if (!data.key && keys.length) resetData(keys[0]);
  followData();
  const charts = [...data.series].sort(([a], [b]) => a.localeCompare(b)).map(([name, points]) => chart(name, points));
  const tail = [...data.tail].reverse().map((r) => h("tr", {},
    h("td", {}, r.cursor),
    h("td", {}, new Date(r.producedMs).toISOString()),
    h("td", {}, r.node),
    h("td", {}, r.output),
    h("td", {}, r.model || "—"),
    h("td", {}, (r.readings || []).length)));
  return h("section", { "aria-labelledby": "data-title" },
    h("h1", { id: "data-title" }, "Data"),
    h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
      h("label", { for: "data-workload" }, "Workload "),
      h("select", { id: "data-workload", onchange: (e) => { resetData(e.target.value); scheduleRender(); } },
        keys.map((k) => h("option", { value: k, selected: k === data.key }, k)))),
    h("h2", {}, "Readings reaching the cloud, per device"),
    charts.length ? h("div", { class: "charts" }, charts) : h("p", { class: "muted" }, "No readings yet."),
    h("h2", {}, "The newest records"),
    table("The last " + TAIL + " records the cloud sink stored, newest first", ["Cursor", "Produced", "Node", "Output", "Model", "Readings"], tail));
}

const eventFilters = { namespace: "", object: "", reason: "" };

function events() {
  const matches = (e) =>
    (!eventFilters.namespace || (e.metadata.namespace || "") === eventFilters.namespace) &&
    (!eventFilters.object || (e.involvedObject.name || "").includes(eventFilters.object)) &&
    (!eventFilters.reason || e.reason === eventFilters.reason);
  const all = [...state.kinds.events.values()];
  const when = (e) => e.lastTimestamp || e.eventTime || e.firstTimestamp || "";
  const rows = all
    .filter(matches)
    .sort((a, b) => when(b).localeCompare(when(a)))
    .slice(0, 500)
    .map((e) => h("tr", {},
      h("td", {}, age(when(e))),
      h("td", { class: "state-" + e.type }, e.type),
      h("td", {}, e.reason),
      h("td", {}, (e.involvedObject.kind || "") + "/" + (e.involvedObject.name || "")),
      h("td", {}, e.metadata.namespace || ""),
      h("td", {}, e.count || 1),
      h("td", {}, e.message || "")));
  const reasons = [...new Set(all.map((e) => e.reason))].sort();
  const namespaces = [...new Set(all.map((e) => e.metadata.namespace || ""))].sort();
  const filter = (name, input) => h("label", {}, name + " ", input);
  const update = (field) => (event) => {
    eventFilters[field] = event.target.value;
    scheduleRender();
  };
  const select = (id, field, values) =>
    h("select", { id, onchange: update(field) }, h("option", { value: "" }, "any"),
      values.map((v) => h("option", { value: v, selected: eventFilters[field] === v }, v || "(cluster)")));
  return h("section", { "aria-labelledby": "events-title" },
    h("h1", { id: "events-title" }, "Events"),
    h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
      filter("Namespace", select("filter-namespace", "namespace", namespaces)),
      filter("Object", h("input", { id: "filter-object", type: "search", value: eventFilters.object, oninput: update("object") })),
      filter("Reason", select("filter-reason", "reason", reasons))),
    table("The scheduler's and the health checks' decisions, newest first", ["Last seen", "Type", "Reason", "Object", "Namespace", "Count", "Message"], rows));
}

// ---- wiring -------------------------------------------------------------------------------

document.getElementById("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = document.getElementById("token").value.trim();
  if (!token) return;
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  document.getElementById("token").value = "";
  start();
});

document.getElementById("use-certificate").addEventListener("click", () => start(true));

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.who = null;
  stop();
  showSignIn("");
});

window.addEventListener("hashchange", () => {
  render();
  refreshCluster();
  document.getElementById("main").focus();
});

start();
