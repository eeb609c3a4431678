// What the page knows: the tasks of the listed modules (with what a list shows of their status), the
// cluster's members, the recent events; and how an event changes them. Views subscribe with on() and
// redraw only what an update names. Reads never unregister a task: lists come from
// GET /tasks/{module}?brief=true and single statuses from task_status?keep=true.

import { enc, q } from "./api.js";
import { parseTime } from "./dom.js";

const EVENT_LOG_SIZE = 2000;
const FETCH_BATCH_MS = 50;
const CLUSTER_REFRESH_MS = 300;
const RATE_SAMPLES = 10; // as the node's own ETA: the last ten progress reports
const FINISHED = new Set(["done", "failed"]);
const MAX_CLUSTER_TREES = 50;

export class Model {
  constructor(api) {
    this.api = api;
    this.modules = [];
    this.tasks = new Map();
    this.unreachable = [];
    this.truncated = false;
    this.showInternal = false;
    this.nodes = new Map(); // id -> member, plus alive=false for members that went away while watched
    this.nodesStale = false;
    this.events = [];
    this.listeners = new Set();
    this.toFetch = new Set();
    this.fetching = new Set();
    this.notListed = new Set(); // ids fetched once and found not to belong in the list (internal)
    this.fetchTimer = 0;
    this.clusterTimers = new Map();
    this.children = new Map(); // cluster task id -> [child status] from task_status_recursive
    this.loaded = false;
    this.early = []; // [events, receivedAt]: the batches that arrived before the lists were first read
    this.metrics = { firstRenderMs: null, listRenderMs: null, latencies: [], eventsApplied: 0 };
  }

  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(change) {
    for (const fn of this.listeners) fn(change);
  }

  // ------------------------------------------------------------------ tasks

  // sent: lists already asked for (module -> answer on its way), used when they are the ones wanted.
  async loadTasks({ modulesKnown = false, sent = null } = {}) {
    if (!modulesKnown) this.modules = await this.api.get("/task_manager/list_modules");
    const lists = await Promise.all(this.modules.map((m) =>
      (sent && sent.has(m) && !this.showInternal ? this.api.read(sent.get(m))
        : this.api.get(`/tasks/${enc(m)}${q({ internal: this.showInternal ? "true" : "", brief: "true" })}`))
        .catch((err) => ({ tasks: [], unreachable: [], truncated: false, error: err }))));
    const tasks = new Map();
    const unreachable = new Set();
    let truncated = false;
    const now = performance.now();
    for (const list of lists) {
      for (const t of list.tasks) {
        const known = this.tasks.get(t.task_id);
        prepare(t, now);
        if (known) {
          t.samples = known.samples; // keep the rate the ETA is computed from
          t.node = known.node;
        }
        tasks.set(t.task_id, t);
      }
      for (const a of list.unreachable) unreachable.add(a);
      truncated ||= list.truncated;
    }
    this.tasks = tasks;
    this.unreachable = [...unreachable];
    this.truncated = truncated;
    this.notListed.clear();
    const first = !this.loaded;
    this.loaded = true;
    // Events that came while the lists were first read change them now, before they are shown: progress
    // only moves forward and finished is final, so one the lists already include changes nothing, and a
    // task they name is never read on its own while its list is on the way.
    const early = this.early;
    this.early = [];
    for (const [events, receivedAt] of early) for (const ev of events) this.apply(ev, receivedAt);
    this.emit({ type: "tasks" });
    if (first) this.measure(early);
    // Children per node of the cluster tasks (unfinished first; a bounded number, each one request).
    const clusters = [...tasks.values()].filter((t) => t.kind === "cluster")
      .sort((a, b) => FINISHED.has(a.state) - FINISHED.has(b.state));
    for (const t of clusters.slice(0, MAX_CLUSTER_TREES)) this.refreshCluster(t.task_id);
  }

  setShowInternal(show) {
    this.showInternal = show;
    return this.loadTasks();
  }

  async fetchStatus(id) {
    return prepare(await this.api.get(`/task_manager/task_status/${enc(id)}?keep=true`), performance.now());
  }

  // An event named a task the page does not list: read it (batched) and add it if it belongs in the list.
  want(id) {
    if (this.tasks.has(id) || this.fetching.has(id) || this.notListed.has(id)) return;
    this.toFetch.add(id);
    if (!this.fetchTimer) this.fetchTimer = setTimeout(() => this.fetchWanted(), FETCH_BATCH_MS);
  }

  async fetchWanted() {
    this.fetchTimer = 0;
    const ids = [...this.toFetch];
    this.toFetch.clear();
    for (const id of ids) this.fetching.add(id);
    await Promise.all(ids.map(async (id) => {
      try {
        const t = await this.fetchStatus(id);
        const internal = t.parent_id && t.parent_id !== "none";
        if ((internal && !this.showInternal) || !this.modules.includes(t.module)) {
          this.notListed.add(id);
          return;
        }
        const known = this.tasks.get(id);
        this.tasks.set(id, known ? Object.assign(known, t) : t);
        this.emit({ type: known ? "task" : "added", id });
        if (t.kind === "cluster") this.refreshCluster(id);
      } catch {
        this.notListed.add(id); // gone already (or unreadable): nothing to show
      } finally {
        this.fetching.delete(id);
      }
    }));
  }

  // A cluster task's record and its children (state per node) are read again shortly after a child's event.
  refreshCluster(id) {
    if (this.clusterTimers.has(id)) return;
    this.clusterTimers.set(id, setTimeout(async () => {
      this.clusterTimers.delete(id);
      try {
        const tree = await this.api.get(`/task_manager/task_status_recursive/${enc(id)}?keep=true`);
        const [root, ...rest] = tree;
        this.children.set(id, rest.filter((c) => c.parent_id === id));
        const known = this.tasks.get(id);
        if (known) Object.assign(known, prepare(root, performance.now()));
        this.emit({ type: "task", id });
      } catch {
        // the next event or the periodic reload tries again
      }
    }, CLUSTER_REFRESH_MS));
  }

  // ------------------------------------------------------------------ events

  applyEvents(events, receivedAt) {
    if (!this.loaded && this.early.length < EVENT_LOG_SIZE) this.early.push([events, receivedAt]);
    for (const ev of events) {
      this.events.push(ev);
      if (this.loaded) {
        const changed = this.apply(ev, receivedAt);
        if (changed) this.emit({ type: "task", id: changed });
      }
      this.emit({ type: "event", event: ev });
    }
    if (this.events.length > EVENT_LOG_SIZE) this.events.splice(0, this.events.length - EVENT_LOG_SIZE);
    if (this.loaded) this.measure([[events, receivedAt]]);
  }

  // Counts events as applied, and how long after its arrival each batch reached the page.
  measure(batches) {
    const now = performance.now();
    for (const [events, receivedAt] of batches) {
      this.metrics.eventsApplied += events.length;
      this.metrics.latencies.push(now - receivedAt);
    }
    if (this.metrics.latencies.length > 10000) this.metrics.latencies.splice(0, 5000);
  }

  // Changes one listed task from one event; returns its id when something changed. Finished is final,
  // and progress only moves forward within an attempt, so a late or repeated event never undoes news.
  apply(ev, receivedAt) {
    if (ev.cluster_parent_id) {
      // A child's news: its cluster task (which has no events of its own) is read again, or read at all.
      if (this.tasks.has(ev.cluster_parent_id)) this.refreshCluster(ev.cluster_parent_id);
      else this.want(ev.cluster_parent_id);
    }
    if (!ev.task_id || ev.type === "cron.fired") return null;
    const t = this.tasks.get(ev.task_id);
    if (!t) {
      if (ev.type !== "task.progress" || !this.notListed.has(ev.task_id)) this.want(ev.task_id);
      return null;
    }
    if (ev.node) t.node = ev.node;
    const finished = FINISHED.has(t.state);
    switch (ev.type) {
      case "task.started":
        if (finished) return null;
        t.state = "running";
        if (!parseTime(t.start_time)) t.start_time = ev.time;
        return t.task_id;
      case "task.retrying":
        if (finished || (ev.attempt || 0) <= (t.attempt || 1)) return null;
        t.attempt = ev.attempt;
        t.next_attempt_at = ev.next_attempt_at;
        t.samples = [];
        t.progress_completed = 0;
        t.progress_fraction = 0;
        return t.task_id;
      case "task.progress":
        if (finished || ev.progress_completed < t.progress_completed) return null;
        t.state = "running";
        t.progress_completed = ev.progress_completed;
        t.progress_total = ev.progress_total;
        t.progress_fraction = ev.progress_total > 0 ? Math.min(1, ev.progress_completed / ev.progress_total) : 0;
        if (ev.message) t.progress_message = ev.message;
        t.samples.push([receivedAt, ev.progress_completed]);
        if (t.samples.length > RATE_SAMPLES + 1) t.samples.shift();
        return t.task_id;
      case "task.completed":
      case "task.failed":
      case "task.aborted":
        if (finished) return null;
        t.state = ev.type === "task.completed" ? "done" : "failed";
        t.aborted = ev.type === "task.aborted";
        t.error = ev.type === "task.completed" ? "" : ev.error || (t.aborted ? "aborted" : "");
        t.end_time = ev.time;
        t.is_abortable = false;
        if (ev.type === "task.completed" && t.progress_total > 0) {
          t.progress_completed = Math.max(t.progress_completed, ev.progress_completed || 0);
          t.progress_fraction = Math.min(1, t.progress_completed / t.progress_total);
        }
        return t.task_id;
      default:
        return null;
    }
  }

  // ------------------------------------------------------------------ members

  setNodes(list, stale) {
    const now = Date.now();
    const present = new Set();
    for (const n of list) {
      present.add(n.id);
      this.nodes.set(n.id, { ...n, goneAt: null });
    }
    for (const [id, n] of this.nodes) {
      if (!present.has(id) && n.alive) this.nodes.set(id, { ...n, alive: false, leader: false, goneAt: now });
    }
    this.nodesStale = stale;
    this.emit({ type: "nodes" });
  }

  nodeOfAddress(address) {
    for (const n of this.nodes.values()) if (n.address === address) return n.id;
    return address || "";
  }

  nodeAlive(id) {
    const n = this.nodes.get(id);
    return n ? n.alive : true;
  }
}

function prepare(t, fetchedAt) {
  t.samples = [];
  t.etaAt = typeof t.eta_ms === "number" ? fetchedAt + t.eta_ms : null;
  return t;
}

// Milliseconds left: the rate of the last progress reports seen here, else the node's own estimate.
export function etaMs(t, now) {
  if (t.state !== "running") return null;
  const s = t.samples;
  if (s.length >= 2 && t.progress_total > 0) {
    const [t0, c0] = s[0];
    const [t1, c1] = s[s.length - 1];
    if (c1 > c0 && t1 > t0) return Math.max(0, ((t.progress_total - c1) * (t1 - t0)) / (c1 - c0) - (now - t1));
  }
  return t.etaAt === null ? null : Math.max(0, t.etaAt - now);
}

export function elapsedMs(t) {
  const start = parseTime(t.start_time);
  if (start === null) return null;
  const end = FINISHED.has(t.state) ? parseTime(t.end_time) : Date.now();
  return end === null ? null : end - start;
}

export { FINISHED };
