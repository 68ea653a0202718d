// The edgeplane console: one page, rendered from watch streams of the resource API.
//
// Everything shown comes from the API with the signed-in user's credential (a ServiceAccount
// token kept for this tab only, or the client certificate the browser presents), under the
// same RBAC as edgectl and kubectl. Lists stay current through watches (one stream per kind,
// resumed from the last resourceVersion after a drop). What no watch carries, the Raft figures
// and the figures of the nodes' heartbeats (held in the leader's memory only), is read once
// every two seconds while a page that shows it is open.
"use strict";

const API = "/apis/edgeplane.io/v1alpha1";
const NODE_LABEL = "edgeplane.io/node";
const TOKEN_KEY = "edgeplane.token";

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  who: null,
  kinds: {
    edgenodes: new Map(),
    workloads: new Map(),
    assignments: new Map(),
    events: new Map(),
  },
  cluster: null,
  clusterError: null,
  // The nodes' last heartbeats, by name, each with the rates since the one before.
  figures: new Map(),
  figuresFrom: null,
  figuresError: null,
  // Access reviews answered so far: "verb resource namespace" -> true, false, or null (asking).
  permissions: new Map(),
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

async function can(verb, resource, namespace) {
  const attributes = { verb, resource, group: "edgeplane.io" };
  if (namespace) attributes.namespace = namespace;
  const review = {
    apiVersion: "authorization.k8s.io/v1",
    kind: "SelfSubjectAccessReview",
    spec: { resourceAttributes: attributes },
  };
  try {
    const answer = await api("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", { method: "POST", body: review, contentType: "application/json" });
    return answer.status.allowed === true;
  } catch (e) {
    return false;
  }
}

// Whether the user may `verb` `resource` in `namespace`, as far as is known: the first call
// asks the API (once) and answers false until the review comes back and the page is rendered
// again. Buttons are enabled from this; the API decides anyway.
function may(verb, resource, namespace) {
  const key = verb + " " + resource + " " + (namespace || "");
  const known = state.permissions.get(key);
  if (known === undefined) {
    state.permissions.set(key, null);
    can(verb, resource, namespace).then((allowed) => {
      state.permissions.set(key, allowed);
      scheduleRender();
    });
  }
  return known === true;
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
  const controller = new AbortController();
  state.watches.push(controller);
  watch(API + "/edgenodes", state.kinds.edgenodes, controller.signal);
  watch(API + "/workloads", state.kinds.workloads, controller.signal);
  watch(API + "/assignments", state.kinds.assignments, controller.signal);
  watch("/api/v1/events", state.kinds.events, controller.signal);
  refreshLive();
  state.timers.push(setInterval(refreshLive, 2000));
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
  state.permissions.clear();
  state.figures = new Map();
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

// The Raft figures (overview) and the heartbeats' figures (overview, nodes, a node's page).
async function refreshLive() {
  const page = route().page;
  if (page === "overview") {
    try {
      state.cluster = await api("/v1/cluster");
      state.clusterError = null;
    } catch (e) {
      state.clusterError = e.message;
    }
  }
  if (page === "overview" || page === "nodes" || page === "node") {
    try {
      absorbFigures(await api("/v1/heartbeats"));
      state.figuresError = null;
    } catch (e) {
      state.figuresError = e.message;
    }
  }
  scheduleRender();
}

// Keeps each node's newest heartbeat, and its rates against the heartbeat before it. The
// counters run from the runtime's start: one that went down means a restart, not a rate.
function absorbFigures(fleet) {
  const now = Date.now();
  const next = new Map();
  for (const node of fleet.nodes) {
    const heardAt = now - node.ageMs;
    const before = state.figures.get(node.name);
    const figures = Object.assign({}, node, { heardAt, rates: null });
    if (before && Math.abs(heardAt - before.heardAt) < 250) {
      // The same heartbeat as at the last look.
      figures.heardAt = before.heardAt;
      figures.rates = before.rates;
    } else if (before) {
      const seconds = (heardAt - before.heardAt) / 1000;
      const rate = (key) => (node.data[key] >= before.data[key] && seconds > 0 ? (node.data[key] - before.data[key]) / seconds : null);
      figures.rates = { readingsIn: rate("readingsIn"), bytesIn: rate("bytesIn"), bytesUp: rate("bytesUp") };
    }
    next.set(node.name, figures);
  }
  state.figures = next;
  state.figuresFrom = fleet.leaderId;
}

// ---- actions ------------------------------------------------------------------------------

function notice(text) {
  document.getElementById("notice").textContent = text;
}

async function patchWorkload(namespace, name, patch, contentType) {
  await api(API + "/namespaces/" + encodeURIComponent(namespace) + "/workloads/" + encodeURIComponent(name), {
    method: "PATCH",
    body: patch,
    contentType,
  });
}

async function scale(namespace, name, replicas) {
  await patchWorkload(namespace, name, { spec: { replicas } }, "application/merge-patch+json");
}

// As `edgectl rollout undo`: the module and configuration go back to the revision before,
// on the condition that it is still the one the page showed.
async function undoRollout(workload) {
  const previous = workload.status.rollout.previous;
  const patch = [
    { op: "test", path: "/status/rollout/previous/module", value: previous.module },
    { op: "replace", path: "/spec/module", value: previous.module },
  ];
  if (previous.config) patch.push({ op: "add", path: "/spec/config", value: previous.config });
  else if (workload.spec.config) patch.push({ op: "remove", path: "/spec/config" });
  await patchWorkload(workload.metadata.namespace, workload.metadata.name, patch, "application/json-patch+json");
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
  const section = { node: "nodes", workload: "workloads" }[page] || page;
  for (const link of document.querySelectorAll("header nav a")) {
    if (link.getAttribute("href") === "#/" + section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const pages = { overview, nodes, node: nodePage, workloads, workload: workloadPage, data: dataPage, events };
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

const nodeHref = (name) => "#/node/" + encodeURIComponent(name);
const workloadHref = (namespace, name) => "#/workload/" + encodeURIComponent(namespace) + "/" + encodeURIComponent(name);

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function perSecond(n) {
  if (n === null || n === undefined) return "—";
  return (n >= 100 ? Math.round(n) : n.toFixed(1)) + "/s";
}

// The fleet's totals from the heartbeats: rates where each node has two heartbeats to compare.
function fleetFigures() {
  const totals = { readingsIn: 0, bytesIn: 0, bytesUp: 0, pendingRecords: 0, pendingBytes: 0, nodes: 0 };
  for (const f of state.figures.values()) {
    totals.nodes += 1;
    if (f.rates) {
      totals.readingsIn += f.rates.readingsIn || 0;
      totals.bytesIn += f.rates.bytesIn || 0;
      totals.bytesUp += f.rates.bytesUp || 0;
    }
    totals.pendingRecords += f.data.outboxPendingRecords;
    totals.pendingBytes += f.data.outboxPendingBytes;
  }
  return totals;
}

function heartbeatAge(figures) {
  if (!figures) return h("span", { class: "muted" }, "none heard");
  const at = new Date(figures.heardAt).toISOString();
  return h("span", { "data-since": at }, age(at));
}

function nodeActions(n) {
  const name = n.metadata.name;
  const [patch, evict] = [may("patch", "edgenodes"), may("delete", "assignments")];
  const why = patch ? null : "Your role may not change nodes";
  return [
    n.spec.cordoned
      ? h("button", { type: "button", id: "uncordon-" + name, class: "secondary", disabled: !patch, title: why, "data-action": "uncordon",
          onclick: () => act("Uncordon " + name, () => setCordoned(name, false)) }, "Uncordon")
      : h("button", { type: "button", id: "cordon-" + name, class: "secondary", disabled: !patch, title: why, "data-action": "cordon",
          onclick: () => act("Cordon " + name, () => setCordoned(name, true)) }, "Cordon"),
    " ",
    h("button", { type: "button", id: "drain-" + name, disabled: !(patch && evict), title: why, "data-action": "drain",
      onclick: () => act("Drain " + name, () => drain(name)) }, "Drain"),
  ];
}

const eventTime = (e) => e.lastTimestamp || e.eventTime || e.firstTimestamp || "";

function eventRows(list) {
  return list
    .sort((a, b) => eventTime(b).localeCompare(eventTime(a)))
    .slice(0, 500)
    .map((e) => h("tr", {},
      h("td", {}, age(eventTime(e))),
      h("td", { class: "state-" + e.type }, e.type),
      h("td", {}, e.reason),
      h("td", {}, (e.involvedObject.kind || "") + "/" + (e.involvedObject.name || "")),
      h("td", {}, e.metadata.namespace || ""),
      h("td", {}, e.count || 1),
      h("td", {}, e.message || "")));
}

const EVENT_COLUMNS = ["Last seen", "Type", "Reason", "Object", "Namespace", "Count", "Message"];

function eventsOf(kind, namespace, name) {
  const all = [...state.kinds.events.values()].filter((e) =>
    e.involvedObject.kind === kind && e.involvedObject.name === name && (namespace === null || e.involvedObject.namespace === namespace));
  return table("Events of this " + kind + ", newest first", EVENT_COLUMNS, eventRows(all));
}

function conditionsTable(conditions) {
  return table("Conditions", ["Type", "Status", "Reason", "Message", "Since"], (conditions || []).map((c) => h("tr", {},
    h("td", {}, c.type),
    h("td", { class: "state-" + c.status }, c.status),
    h("td", {}, c.reason || ""),
    h("td", {}, c.message || ""),
    h("td", {}, h("span", { "data-since": c.lastTransitionTime || "" }, age(c.lastTransitionTime))))));
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
        h("p", { class: "figure" }, state.kinds.assignments.size)),
      h("section", { class: "card", id: "fleet-rates" }, h("h2", {}, "Data plane"), fleetCard())));
}

function fleetCard() {
  if (state.figuresError) return h("p", { class: "muted" }, "Cannot read the heartbeats: " + state.figuresError);
  const f = fleetFigures();
  return [
    h("p", { class: "figure", "data-field": "readings-per-second" }, perSecond(f.readingsIn)),
    pairs([
      ["Readings in", perSecond(f.readingsIn)],
      ["Bytes in", bytes(f.bytesIn) + "/s"],
      ["Bytes up", bytes(f.bytesUp) + "/s"],
      ["Waiting in outboxes", h("span", { "data-field": "outbox-records" }, f.pendingRecords + " records, " + bytes(f.pendingBytes))],
      ["Heartbeats from", f.nodes + " nodes" + (state.figuresFrom ? ", as member " + state.figuresFrom + " holds them" : "")],
    ]),
  ];
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
      const f = state.figures.get(name);
      return h("tr", { "data-node": name },
        h("th", { scope: "row" }, h("a", { href: nodeHref(name) }, name)),
        h("td", { class: "state-" + s, "data-field": "state" }, s + (n.spec.cordoned ? ", cordoned" : "")),
        h("td", {}, n.spec.tier),
        h("td", {}, (n.spec.capabilities || []).join(", ")),
        h("td", {}, labels),
        h("td", {}, taints),
        h("td", {}, n.spec.capacity.memoryMib + " MiB, " + n.spec.capacity.instanceSlots + " slots"),
        h("td", { "data-field": "instances" }, instances),
        h("td", { "data-field": "load" }, f ? f.load.cpuMillis + " m CPU, " + f.load.memoryMib + " MiB, queue " + f.load.queueDepth : "—"),
        h("td", { "data-field": "heartbeat" }, heartbeatAge(f)),
        h("td", { "data-field": "in-up" }, f && f.rates ? bytes(f.rates.bytesIn) + "/s in, " + bytes(f.rates.bytesUp) + "/s up" : "—"),
        h("td", { "data-field": "outbox" }, f ? f.data.outboxPendingRecords + " records" : "—"),
        h("td", {}, readySince(n)),
        h("td", { class: "actions" }, nodeActions(n)));
    });
  return h("section", { "aria-labelledby": "nodes-title" },
    h("h1", { id: "nodes-title" }, "Nodes"),
    table("Edge nodes, live",
      ["Name", "State", "Tier", "Capabilities", "Labels", "Taints", "Capacity", "Replicas", "Load", "Heartbeat", "In / up", "Outbox", "State since", "Actions"],
      rows));
}

// One node: what it is, what its heartbeats say, what runs on it and why, and its Events.
function nodePage(args) {
  const name = args[0] || "";
  const n = state.kinds.edgenodes.get(name);
  if (!n) return h("section", {}, h("h1", {}, "Node " + name), h("p", { class: "muted" }, "No such node (yet)."));
  const s = nodeState(n);
  const f = state.figures.get(name);
  const d = f && f.data;
  const total = (key, rate) => h("span", { "data-field": key, "data-total": d ? String(d[key]) : "" },
    d ? d[key] + (f.rates && rate !== undefined ? " (" + perSecond(f.rates[rate]) + ")" : "") : "—");
  const replicas = [...state.kinds.assignments.values()]
    .filter((a) => a.spec.nodeName === name)
    .sort((a, b) => keyOf(a).localeCompare(keyOf(b)))
    .map((a) => h("tr", {},
      h("th", { scope: "row" }, h("a", { href: workloadHref(a.metadata.namespace, a.spec.workload) }, a.metadata.namespace + "/" + a.spec.workload)),
      h("td", {}, "#" + a.spec.replica),
      h("td", {}, a.spec.moduleRef),
      h("td", {}, a.spec.generation),
      h("td", { "data-field": "because" }, placedBecause(a))));
  return h("section", { "aria-labelledby": "node-title", "data-node-page": name },
    h("h1", { id: "node-title" }, "Node " + name),
    h("p", { class: "actions" }, nodeActions(n)),
    h("div", { class: "cards" },
      h("section", { class: "card" }, h("h2", {}, "State"), pairs([
        ["State", h("span", { class: "state-" + s, "data-field": "state" }, s + (n.spec.cordoned ? ", cordoned" : ""))],
        ["Since", readySince(n)],
        ["Tier", n.spec.tier],
        ["Capabilities", (n.spec.capabilities || []).join(", ") || "—"],
        ["Labels", Object.entries(n.metadata.labels || {}).map(([k, v]) => k + "=" + v).join(", ") || "—"],
        ["Taints", (n.spec.taints || []).map((t) => t.key + (t.value ? "=" + t.value : "") + ":" + t.effect).join(", ") || "—"],
        ["Capacity", n.spec.capacity.memoryMib + " MiB, " + n.spec.capacity.instanceSlots + " slots"],
      ])),
      h("section", { class: "card", id: "node-heartbeat" }, h("h2", {}, "Last heartbeat"), pairs([
        ["Heard", heartbeatAge(f)],
        ["CPU", f ? f.load.cpuMillis + " m" : "—"],
        ["Memory", f ? f.load.memoryMib + " MiB" : "—"],
        ["Instances", f ? f.load.instances : "—"],
        ["Queued batches", d ? d.queueDepth : "—"],
      ])),
      h("section", { class: "card", id: "node-data" }, h("h2", {}, "Data since the runtime started"), pairs([
        ["Readings in", total("readingsIn", "readingsIn")],
        ["Bytes in", total("bytesIn", "bytesIn")],
        ["Bytes up", total("bytesUp", "bytesUp")],
        ["Refused at the door", total("readingsRefused")],
        ["Dropped", total("readingsDropped")],
        ["Outbox", d ? d.outboxPendingRecords + " records, " + bytes(d.outboxPendingBytes) + " waiting; " + d.outboxDroppedRecords + " dropped" : "—"],
        ["Fenced records", total("recordsFenced")],
      ]))),
    h("h2", {}, "Replicas on this node"),
    table("What runs here and why the scheduler put it here", ["Workload", "Replica", "Module", "Generation", "Placed because"], replicas),
    h("h2", {}, "Conditions"),
    conditionsTable(n.status && n.status.conditions),
    h("h2", {}, "Events"),
    eventsOf("EdgeNode", null, name));
}

function placedBecause(assignment) {
  return ((assignment.metadata.annotations || {})["edgeplane.io/placed-because"]) || "—";
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
        h("th", { scope: "row" }, h("a", { href: workloadHref(w.metadata.namespace, w.metadata.name) }, w.metadata.name)),
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

// What the scale field holds while the user edits it: the page is rendered again on every
// watch event, and the number typed must survive that.
const scaleDrafts = new Map();

// One workload: its replicas and why each is where it is, its conditions, its rollout and the
// revision before, its Events; scale and rollout undo.
function workloadPage(args) {
  const [namespace, name] = [args[0] || "", args[1] || ""];
  const w = state.kinds.workloads.get(namespace + "/" + name);
  if (!w) return h("section", {}, h("h1", {}, "Workload " + namespace + "/" + name), h("p", { class: "muted" }, "No such workload (yet)."));
  const key = keyOf(w);
  const status = w.status || {};
  const daemon = w.spec.mode === "daemon";
  const desired = daemon ? "one per matching node" : w.spec.replicas === undefined ? 1 : w.spec.replicas;
  const mayPatch = may("patch", "workloads", namespace);
  const why = mayPatch ? null : "Your role may not change workloads in " + namespace;
  const replicas = [...state.kinds.assignments.values()]
    .filter((a) => a.metadata.namespace === namespace && a.spec.workload === name)
    .sort((a, b) => a.spec.replica - b.spec.replica)
    .map((a) => h("tr", { "data-replica": a.spec.replica },
      h("th", { scope: "row" }, "#" + a.spec.replica),
      h("td", { "data-field": "node" }, h("a", { href: nodeHref(a.spec.nodeName) }, a.spec.nodeName)),
      h("td", {}, a.spec.moduleRef),
      h("td", {}, a.spec.generation),
      h("td", {}, h("span", { "data-since": a.spec.placedAtMs ? new Date(a.spec.placedAtMs).toISOString() : "" }, a.spec.placedAtMs ? age(new Date(a.spec.placedAtMs).toISOString()) : "—")),
      h("td", { "data-field": "because" }, placedBecause(a))));
  const draft = scaleDrafts.has(key) ? scaleDrafts.get(key) : String(w.spec.replicas === undefined ? 1 : w.spec.replicas);
  const scaling = daemon ? h("p", { class: "muted" }, "A daemon runs on every matching node; it has no replica count.") :
    h("form", { class: "filters", onsubmit: (e) => {
      e.preventDefault();
      const replicas = Number(document.getElementById("scale-replicas").value);
      act("Scale " + key + " to " + replicas, async () => {
        await scale(namespace, name, replicas);
        scaleDrafts.delete(key);
      });
    } },
      h("label", { for: "scale-replicas" }, "Replicas "),
      h("input", { id: "scale-replicas", type: "number", min: 0, max: 10000, value: draft, disabled: !mayPatch, title: why,
        oninput: (e) => scaleDrafts.set(key, e.target.value) }),
      h("button", { type: "submit", id: "scale", disabled: !mayPatch, title: why }, "Scale"));
  const rollout = status.rollout;
  const previous = rollout && rollout.previous;
  const config = (c) => (c ? JSON.stringify(c) : "none");
  return h("section", { "aria-labelledby": "workload-title", "data-workload-page": key },
    h("h1", { id: "workload-title" }, "Workload " + key),
    h("div", { class: "cards" },
      h("section", { class: "card" }, h("h2", {}, "Spec"), pairs([
        ["State", h("span", { class: "state-" + workloadState(w) }, workloadState(w))],
        ["Module", w.spec.module],
        ["Model", w.spec.modelRef || "—"],
        ["Replicas", h("span", { "data-field": "ready" }, (status.readyReplicas || 0) + " ready of " + desired)],
        ["Node selector", Object.entries((w.spec.placement && w.spec.placement.nodeSelector) || {}).map(([k, v]) => k + "=" + v).join(", ") || "any node"],
        ["Configuration", h("code", { "data-field": "config" }, config(w.spec.config))],
      ])),
      h("section", { class: "card", id: "rollout" }, h("h2", {}, "Rollout"), rollout ? pairs([
        ["Revision", rollout.revision],
        ["Phase", h("span", { class: "state-" + rollout.phase, "data-field": "rollout-phase" }, rollout.phase)],
        ["Updated", rollout.updated + " of " + rollout.replicas],
        ["Message", rollout.message || "—"],
        ["Revision before", previous ? h("span", { "data-field": "previous" }, previous.module + ", configuration " + config(previous.config)) : "none"],
      ]) : h("p", { class: "muted" }, "No rollout yet: the first revision runs."),
        h("p", {}, h("button", { type: "button", id: "rollout-undo", class: "secondary", disabled: !(previous && mayPatch),
          title: !previous ? "There is no revision before this one" : why,
          onclick: () => act("Undo the rollout of " + key, () => undoRollout(w)) }, "Undo rollout")))),
    h("h2", {}, "Scale"),
    scaling,
    h("h2", {}, "Replicas"),
    table("Where each replica runs and why the scheduler put it there", ["Replica", "Node", "Module", "Generation", "Placed", "Placed because"], replicas),
    h("h2", {}, "Conditions"),
    conditionsTable(status.conditions),
    h("h2", {}, "Events"),
    eventsOf("Workload", namespace, name));
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
  const rows = eventRows(all.filter(matches));
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
    table("The scheduler's and the health checks' decisions, newest first", EVENT_COLUMNS, rows));
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
  refreshLive();
  document.getElementById("main").focus();
});

start();
