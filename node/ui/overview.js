// The overview: the cluster's members, and the tasks of every module with filters. Rows are built once
// and then changed in place as events arrive (a progress event touches one row's bar and labels), so a
// thousand running tasks stay cheap to follow.

import { FINISHED, elapsedMs, etaMs } from "./model.js";
import { badge, duration, h, localTime, percent, setText, stateLabel } from "./dom.js";

const MAX_ROWS = 2000;
// Rows drawn before the first paint: a screenful (rows are at least MIN_ROW_PX tall), never fewer than
// FIRST_ROWS; the rest follow in the next task after that paint, or after REST_AFTER_MS when no frame
// comes (a hidden tab draws none).
const FIRST_ROWS = 50;
const MIN_ROW_PX = 16;
const REST_AFTER_MS = 200;
const STATES = ["created", "running", "done", "failed", "aborted"];

export class Overview {
  constructor(app) {
    this.app = app;
    this.model = app.model;
    this.rows = new Map();
    this.filters = { module: "", state: "", type: "", keyspace: "", table: "" };
    this.renderQueued = false;
    this.renders = 0;
    this.root = this.build();
    this.unsubscribe = this.model.on((change) => this.onChange(change));
    this.ticker = setInterval(() => this.tick(), 1000);
    this.renderNodes();
    this.renderTasks();
  }

  destroy() {
    this.unsubscribe();
    clearInterval(this.ticker);
  }

  build() {
    this.nodesBody = h("tbody");
    this.staleNote = h("p", { class: "warn", hidden: true, role: "status" },
      "The answering node has lost the cluster store: this member list may be out of date.");
    const cluster = h("section", { "aria-labelledby": "cluster-h" },
      h("h2", { id: "cluster-h", text: "Cluster" }),
      this.staleNote,
      h("div", { class: "table-wrap" },
        h("table", { id: "nodes", class: "grid" },
          h("caption", { class: "sr-only", text: "Cluster members" }),
          h("thead", {}, h("tr", {},
            h("th", { scope: "col", text: "Node" }), h("th", { scope: "col", text: "Address" }),
            h("th", { scope: "col", text: "State" }), h("th", { scope: "col", text: "Leader" }),
            h("th", { scope: "col", class: "wide", text: "Version" }),
            h("th", { scope: "col", class: "wide", text: "Started" }))),
          this.nodesBody)));

    this.moduleSelect = h("select", { id: "f-module", onchange: (e) => this.setFilter("module", e.target.value) });
    this.typeSelect = h("select", { id: "f-type", onchange: (e) => this.setFilter("type", e.target.value) });
    const stateSelect = h("select", { id: "f-state", onchange: (e) => this.setFilter("state", e.target.value) },
      h("option", { value: "", text: "any state" }), ...STATES.map((s) => h("option", { value: s, text: s })));
    const text = (key, label) => h("span", { class: "field" },
      h("label", { for: `f-${key}`, text: label }),
      h("input", { id: `f-${key}`, type: "search", autocomplete: "off", spellcheck: "false",
        oninput: (e) => this.setFilter(key, e.target.value.trim()) }));
    const internal = h("input", { id: "f-internal", type: "checkbox",
      onchange: (e) => this.app.guard(this.model.setShowInternal(e.target.checked)) });
    const filters = h("form", { class: "filters", "aria-label": "Task filters", onsubmit: (e) => e.preventDefault() },
      h("span", { class: "field" }, h("label", { for: "f-module", text: "Module" }), this.moduleSelect),
      h("span", { class: "field" }, h("label", { for: "f-state", text: "State" }), stateSelect),
      h("span", { class: "field" }, h("label", { for: "f-type", text: "Type" }), this.typeSelect),
      text("keyspace", "Keyspace"), text("table", "Table"),
      h("span", { class: "field check" }, internal, h("label", { for: "f-internal", text: "internal tasks" })));
    this.summary = h("p", { id: "tasks-summary", class: "hint", role: "status" });
    this.tasksBody = h("tbody", { onclick: (e) => {
      const button = e.target.closest("button[data-abort]");
      if (button) this.app.confirmAbort(this.model.tasks.get(button.dataset.abort));
    } });
    const tasks = h("section", { "aria-labelledby": "tasks-h" },
      h("h2", { id: "tasks-h", text: "Tasks" }), filters, this.summary,
      h("div", { class: "table-wrap" },
        h("table", { id: "tasks", class: "grid" },
          h("caption", { class: "sr-only", text: "Tasks" }),
          h("thead", {}, h("tr", {},
            h("th", { scope: "col", text: "Task" }), h("th", { scope: "col", class: "wide", text: "Module" }),
            h("th", { scope: "col", class: "wide", text: "Kind" }), h("th", { scope: "col", text: "State" }),
            h("th", { scope: "col", class: "progress-col", text: "Progress" }), h("th", { scope: "col", class: "mid", text: "ETA" }),
            h("th", { scope: "col", class: "mid", text: "Elapsed" }),
            h("th", { scope: "col", class: "wide", text: "Keyspace / table" }),
            h("th", { scope: "col", class: "wide", text: "Node" }), h("th", { scope: "col", text: "Actions" }))),
          this.tasksBody)));
    return h("div", { class: "overview" }, cluster, tasks);
  }

  // ------------------------------------------------------------------ members

  renderNodes() {
    const rows = [...this.model.nodes.values()].sort((a, b) => a.id.localeCompare(b.id)).map((n) => {
      const started = n.started_at ? `${localTime(n.started_at)}` : "";
      const state = n.alive ? badge("alive") : badge(n.goneAt ? `dead (${duration(Date.now() - n.goneAt)} ago)` : "dead", "dead");
      return h("tr", { dataset: { node: n.id, alive: String(n.alive) } },
        h("th", { scope: "row", text: n.id }), h("td", { text: n.address }), h("td", {}, state),
        h("td", {}, n.leader ? badge("leader") : ""), h("td", { class: "wide", text: n.version }),
        h("td", { class: "wide", text: started }));
    });
    this.nodesBody.replaceChildren(...rows);
    if (!rows.length) this.nodesBody.append(h("tr", {}, h("td", { colspan: 6, class: "hint", text: "waiting for the member list…" })));
    this.staleNote.hidden = !this.model.nodesStale;
  }

  // ------------------------------------------------------------------ tasks

  onChange(change) {
    if (change.type === "nodes") {
      this.renderNodes();
      for (const [id, row] of this.rows) {
        const t = this.model.tasks.get(id);
        if (t) this.updateRow(row, t);
      }
    } else if (change.type === "tasks") {
      this.renderTasks();
    } else if (change.type === "added") {
      this.queueRender();
    } else if (change.type === "task") {
      const row = this.rows.get(change.id);
      const t = this.model.tasks.get(change.id);
      if (row && t) {
        this.updateRow(row, t);
        const hide = !this.matches(t);
        if (row.tr.hidden !== hide) {
          row.tr.hidden = hide;
          if (row.children) row.children.closest("tr").hidden = hide;
        }
      }
    }
  }

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.renderTasks();
    });
  }

  setFilter(key, value) {
    this.filters[key] = value;
    this.renderTasks();
  }

  matches(t) {
    const f = this.filters;
    return (!f.module || t.module === f.module) && (!f.state || stateLabel(t) === f.state)
      && (!f.type || t.type === f.type) && (!f.keyspace || t.keyspace.includes(f.keyspace))
      && (!f.table || t.table.includes(f.table));
  }

  fillSelect(select, values, anyLabel, current) {
    const options = [h("option", { value: "", text: anyLabel }), ...values.map((v) => h("option", { value: v, text: v }))];
    select.replaceChildren(...options);
    select.value = values.includes(current) ? current : "";
  }

  renderTasks() {
    const all = [...this.model.tasks.values()];
    this.fillSelect(this.moduleSelect, this.model.modules, "all modules", this.filters.module);
    this.fillSelect(this.typeSelect, [...new Set(all.map((t) => t.type))].sort(), "any type", this.filters.type);
    const shown = all.filter((t) => this.matches(t)).sort(order);
    // Rows are written as one HTML string (each value escaped) that the browser parses in one go: building
    // a thousand rows node by node costs several times more. Rows are then changed in place. What is on
    // screen is drawn first, and painted, before the rest of a long list is added below it.
    const listed = shown.slice(0, MAX_ROWS);
    const first = listed.slice(0, Math.max(FIRST_ROWS, Math.ceil(window.innerHeight / MIN_ROW_PX)));
    const rest = listed.slice(first.length);
    this.rows = new Map();
    if (shown.length) {
      this.tasksBody.innerHTML = this.rowsHtml(first);
    } else {
      const empty = all.length ? "No task matches the filters." : this.model.loaded ? "No tasks yet." : "Reading the tasks…";
      this.tasksBody.innerHTML = `<tr><td colspan="10" class="hint">${empty}</td></tr>`;
    }
    this.index(first, this.tasksBody.firstElementChild);
    const notes = [`${shown.length} of ${all.length} tasks`];
    if (shown.length > MAX_ROWS) notes.push(`showing the first ${MAX_ROWS}: narrow the filters to see the rest`);
    if (this.model.truncated) notes.push("a node listed more tasks than can be shown");
    if (this.model.unreachable.length) notes.push(`not shown: tasks of unreachable ${this.model.unreachable.join(", ")}`);
    setText(this.summary, notes.join(" · "));
    // First render: the listed tasks on screen (firstRenderMs). The page says so (data-first-render) once
    // the whole list is there too (listRenderMs), so whoever reads it finds every row.
    const metrics = this.model.metrics;
    if (this.model.loaded && metrics.firstRenderMs === null) metrics.firstRenderMs = performance.now();
    const render = ++this.renders;
    const complete = () => {
      if (metrics.firstRenderMs === null || metrics.listRenderMs !== null) return;
      metrics.listRenderMs = performance.now();
      document.body.dataset.firstRender = metrics.firstRenderMs.toFixed(1);
    };
    if (!rest.length) {
      complete();
      return;
    }
    let added = false;
    const addRest = () => {
      if (added || render !== this.renders) return; // done, or replaced by a newer render
      added = true;
      const last = this.tasksBody.lastElementChild;
      this.tasksBody.insertAdjacentHTML("beforeend", this.rowsHtml(rest));
      this.index(rest, last.nextElementSibling);
      complete();
    };
    requestAnimationFrame(() => setTimeout(addRest, 0)); // the task after the next frame's paint
    setTimeout(addRest, REST_AFTER_MS);
  }

  rowsHtml(tasks) {
    const now = performance.now();
    return tasks.map((t) => this.rowHtml(t, now)).join("");
  }

  // Rows for `tasks` from `tr` on, in their order (a cluster task's row is followed by its children's).
  index(tasks, tr) {
    for (const t of tasks) {
      this.rows.set(t.task_id, { tr });
      tr = tr.nextElementSibling;
      if (t.kind === "cluster") tr = tr.nextElementSibling;
    }
  }

  rowHtml(t, now) {
    const v = this.rowValues(t, now);
    const id = esc(t.task_id);
    const row = `<tr data-task-id="${id}" data-kind="${esc(t.kind)}" data-state="${v.label}" data-progress="${v.pct}">`
      + `<th scope="row"><a href="#/task/${id}" class="mono" title="${id}" aria-label="task ${id}">${id.slice(0, 8)}</a> `
      + `<span class="type">${esc(t.type)}</span></th>`
      + `<td class="wide">${esc(t.module)}</td><td class="wide">${esc(t.kind)}</td>`
      + `<td class="state-cell"><span class="badge badge-${v.label}">${v.label}</span>`
      + `<span class="row-error" title="${esc(t.error)}">${esc(v.error)}</span></td>`
      + `<td class="progress-col"><progress max="1" value="${v.fraction}" aria-label="progress of ${id}" `
      + `aria-valuetext="${v.percent}"></progress><span class="plabel">${esc(v.plabel)}</span></td>`
      + `<td class="num mid">${v.eta}</td><td class="num mid">${v.elapsed}</td>`
      + `<td class="wide">${esc([t.keyspace, t.table].filter(Boolean).join(" / "))}</td>`
      + `<td class="wide">${esc(v.node)}</td>`
      + `<td><button type="button" class="small" data-abort="${id}" aria-disabled="${v.reason ? "true" : "false"}" `
      + `title="${esc(v.reason || `Abort ${t.task_id}`)}">Abort</button></td></tr>`;
    if (t.kind !== "cluster") return row;
    return `${row}<tr class="child-row" data-children-of="${id}"><td colspan="10">`
      + `<div class="children" aria-label="children of ${id}">${this.chipsHtml(t)}</div></td></tr>`;
  }

  rowValues(t, now = performance.now()) {
    const label = stateLabel(t);
    const fraction = t.progress_fraction || 0;
    const counts = t.progress_total > 0 ? ` · ${fmt(t.progress_completed)}/${fmt(t.progress_total)}` : "";
    const shown = percent(fraction);
    return {
      label, fraction, pct: Math.floor(fraction * 100), percent: shown,
      plabel: `${shown}${counts}`, error: t.state === "failed" && !t.aborted ? t.error : "",
      eta: fmtDuration(etaMs(t, now)), elapsed: fmtDuration(elapsedMs(t)),
      node: t.kind === "cluster" ? "all" : t.node || this.model.nodeOfAddress(t.served_by), reason: abortRefusal(t),
    };
  }

  chipsHtml(t) {
    const statuses = new Map((this.model.children.get(t.task_id) || []).map((c) => [c.task_id, c]));
    if (!t.children_ids.length) return `<span class="hint">no children yet</span>`;
    return t.children_ids.map((ref) => {
      const c = statuses.get(ref.task_id);
      const unreachable = (c && c.state === "unknown") || !this.model.nodeAlive(ref.node);
      const state = unreachable ? "unreachable" : c ? stateLabel(c) : "created";
      const text = unreachable ? `${ref.node}: unreachable` : `${ref.node}: ${state} ${percent(c ? c.progress_fraction : 0)}`;
      return `<a href="#/task/${esc(t.task_id)}" class="chip chip-${state}" data-node="${esc(ref.node)}" `
        + `data-state="${state}" title="${esc(c && c.error ? c.error : ref.task_id)}">${esc(text)}</a>`;
    }).join("");
  }

  // The cells of a row, found once, then changed in place on every update.
  cells(r) {
    if (!r.state) {
      const tr = r.tr;
      r.state = tr.querySelector(".badge");
      r.error = tr.querySelector(".row-error");
      r.bar = tr.querySelector("progress");
      r.label = tr.querySelector(".plabel");
      [r.eta, r.elapsed] = tr.querySelectorAll("td.mid");
      r.node = tr.children[8];
      r.abort = tr.querySelector("button");
      const next = tr.nextElementSibling;
      r.children = next && next.dataset.childrenOf === tr.dataset.taskId ? next.querySelector(".children") : null;
    }
    return r;
  }

  updateRow(row, t) {
    const r = this.cells(row);
    const v = this.rowValues(t);
    setText(r.state, v.label);
    r.state.className = `badge badge-${v.label}`;
    r.tr.dataset.state = v.label;
    setText(r.error, v.error);
    r.error.title = t.error;
    if (r.bar.value !== v.fraction) r.bar.value = v.fraction;
    r.bar.setAttribute("aria-valuetext", v.percent);
    r.tr.dataset.progress = String(v.pct);
    setText(r.label, v.plabel);
    setText(r.eta, v.eta);
    setText(r.elapsed, v.elapsed);
    setText(r.node, v.node);
    r.abort.setAttribute("aria-disabled", v.reason ? "true" : "false");
    r.abort.title = v.reason || `Abort ${t.task_id}`;
    if (r.children) {
      const html = this.chipsHtml(t);
      if (r.childrenHtml !== html) {
        r.children.innerHTML = html;
        r.childrenHtml = html;
      }
    }
  }

  tick() {
    const now = performance.now();
    for (const [id, r] of this.rows) {
      const t = this.model.tasks.get(id);
      if (!t || t.state !== "running" || r.tr.hidden) continue;
      this.cells(r);
      setText(r.eta, fmtDuration(etaMs(t, now)));
      setText(r.elapsed, fmtDuration(elapsedMs(t)));
    }
    for (const n of this.model.nodes.values()) {
      if (!n.alive) {
        this.renderNodes();
        break;
      }
    }
  }
}

export function abortRefusal(t) {
  if (!t) return "this task is no longer listed";
  if (FINISHED.has(t.state)) return "not abortable: the task has finished";
  if (!t.is_abortable) return "not abortable: its type does not allow it";
  return "";
}

function order(a, b) {
  const fa = FINISHED.has(a.state) ? 1 : 0;
  const fb = FINISHED.has(b.state) ? 1 : 0;
  if (fa !== fb) return fa - fb;
  if (a.kind !== b.kind) return a.kind === "cluster" ? -1 : 1;
  return cmp(b.start_time || "", a.start_time || "") || cmp(a.task_id, b.task_id);
}

// ISO times and task ids are ASCII: comparing code units orders them as a collator would, for a fraction
// of the cost (a sort of a thousand rows makes some ten thousand comparisons).
function cmp(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

const SPECIAL = /[&<>"']/;

function esc(value) {
  const s = String(value ?? "");
  return SPECIAL.test(s) ? s.replace(/[&<>"']/g, (ch) => ESCAPES[ch]) : s;
}

function fmt(n) {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function fmtDuration(ms) {
  return ms === null ? "" : duration(ms);
}
