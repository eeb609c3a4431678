// One task's page: its tree in BFS order (root first) with states, progress and errors, its result once
// there is one, and a live log of the tree's events. Read with task_status_recursive?keep=true, which
// never unregisters the task; read again (debounced) when an event of the tree arrives.

import { enc } from "./api.js";
import { FINISHED, elapsedMs } from "./model.js";
import { abortRefusal } from "./overview.js";
import { badge, duration, h, localTime, percent, setText, stateLabel } from "./dom.js";

const REFRESH_MS = 250;
const LOG_LINES = 500;

export class TaskPage {
  constructor(app, taskId) {
    this.app = app;
    this.model = app.model;
    this.taskId = taskId;
    this.tree = [];
    this.ids = new Set([taskId]);
    this.timer = 0;
    this.root = this.build();
    for (const ev of this.model.events) if (this.concerns(ev)) this.log(ev);
    this.unsubscribe = this.model.on((change) => this.onChange(change));
    this.load();
  }

  destroy() {
    this.unsubscribe();
    clearTimeout(this.timer);
    clearTimeout(this.tick);
  }

  build() {
    this.title = h("h2", { id: "task-h", class: "mono", text: this.taskId });
    this.fields = h("dl", { class: "fields" });
    this.abort = h("button", { type: "button", class: "danger", text: "Abort task",
      onclick: () => this.app.confirmAbort(this.tree[0], () => this.refresh()) });
    this.abortReason = h("span", { class: "hint", id: "abort-reason" });
    this.treeBody = h("tbody");
    this.result = h("pre", { class: "result", tabindex: "0", "aria-label": "result" });
    this.resultSection = h("section", { "aria-labelledby": "result-h", hidden: true },
      h("h3", { id: "result-h", text: "Result" }), this.result);
    this.logList = h("ol", { class: "log", "aria-live": "polite", "aria-relevant": "additions" });
    this.error = h("p", { class: "error", role: "alert", hidden: true });
    return h("div", { class: "task-page" },
      h("p", {}, h("a", { href: "#/", text: "← all tasks" })),
      this.title, this.error,
      h("div", { class: "actions" }, this.abort, this.abortReason),
      this.fields,
      h("section", { "aria-labelledby": "tree-h" },
        h("h3", { id: "tree-h", text: "Tree (breadth first, root first)" }),
        h("div", { class: "table-wrap" },
          h("table", { id: "tree", class: "grid" },
            h("thead", {}, h("tr", {},
              h("th", { scope: "col", text: "Task" }), h("th", { scope: "col", text: "Node" }),
              h("th", { scope: "col", text: "State" }), h("th", { scope: "col", class: "progress-col", text: "Progress" }),
              h("th", { scope: "col", text: "Elapsed" }), h("th", { scope: "col", text: "Error" }))),
            this.treeBody))),
      this.resultSection,
      h("section", { "aria-labelledby": "log-h" },
        h("h3", { id: "log-h", text: "Events of this tree" }), this.logList));
  }

  async load() {
    try {
      this.tree = await this.app.api.get(`/task_manager/task_status_recursive/${enc(this.taskId)}?keep=true`);
      this.error.hidden = true;
      this.render();
    } catch (err) {
      this.error.hidden = false;
      setText(this.error, `Cannot read task ${this.taskId}: ${err.message}`);
    }
  }

  refresh() {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = 0;
      this.load();
    }, REFRESH_MS);
  }

  concerns(ev) {
    return this.ids.has(ev.task_id) || ev.cluster_parent_id === this.taskId;
  }

  onChange(change) {
    if (change.type === "event" && this.concerns(change.event)) {
      this.log(change.event);
      this.refresh();
    } else if (change.type === "nodes") {
      this.render();
    }
  }

  render() {
    const [root] = this.tree;
    if (!root) return;
    this.ids = new Set(this.tree.map((t) => t.task_id));
    const nodeOf = new Map();
    for (const t of this.tree) for (const c of t.children_ids) nodeOf.set(c.task_id, c.node);
    const depth = new Map([[root.task_id, 0]]);
    for (const t of this.tree) if (t !== root) depth.set(t.task_id, (depth.get(t.parent_id) ?? 0) + 1);

    const label = stateLabel(root);
    this.fields.replaceChildren(...[
      ["Type", `${root.module}:${root.type}`], ["Kind", `${root.kind} (scope ${root.scope})`], ["State", label],
      ["Progress", `${percent(root.progress_fraction)}${root.progress_total ? ` (${root.progress_completed}/${root.progress_total} ${root.progress_units})` : ""}`],
      ["Started", localTime(root.start_time)], ["Ended", localTime(root.end_time)],
      ["Elapsed", duration(elapsedMs(root))],
      ["Keyspace / table / entity", [root.keyspace, root.table, root.entity].filter(Boolean).join(" / ")],
      ["Attempt", `${root.attempt} of ${root.max_attempts}`], ["Error", root.error],
    ].filter(([, v]) => v !== "" && v !== undefined).flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]));

    const reason = abortRefusal(root);
    this.abort.setAttribute("aria-disabled", reason ? "true" : "false");
    this.abort.setAttribute("aria-describedby", "abort-reason");
    setText(this.abortReason, reason);

    this.treeBody.replaceChildren(...this.tree.map((t) => {
      const node = nodeOf.get(t.task_id) || "";
      const unreachable = t.state === "unknown" || (node && !this.model.nodeAlive(node));
      const state = unreachable ? "unreachable" : stateLabel(t);
      const link = t.task_id === root.task_id ? h("span", { class: "mono", text: t.task_id })
        : h("a", { href: `#/task/${t.task_id}`, class: "mono", text: t.task_id });
      return h("tr", { dataset: { taskId: t.task_id, state, node } },
        h("th", { scope: "row", class: `depth-${Math.min(depth.get(t.task_id) || 0, 6)}` }, link, " ",
          h("span", { class: "type", text: t.type })),
        h("td", { text: node }), h("td", {}, badge(state)),
        h("td", { class: "progress-col" }, h("progress", { max: 1, value: t.progress_fraction || 0,
          "aria-label": `progress of ${t.task_id}` }), h("span", { class: "plabel", text: percent(t.progress_fraction || 0) })),
        h("td", { class: "num", text: duration(elapsedMs(t)) }),
        h("td", { class: "error-cell", text: t.error }));
    }));

    const hasResult = root.state === "done" && root.result !== null && root.result !== undefined;
    this.resultSection.hidden = !hasResult;
    if (hasResult) setText(this.result, JSON.stringify(root.result, null, 2));
    if (!FINISHED.has(root.state)) this.refreshWhileRunning();
  }

  // Elapsed times of a running tree move on their own; the tree is re-read when its events arrive.
  refreshWhileRunning() {
    clearTimeout(this.tick);
    this.tick = setTimeout(() => {
      if (this.root.isConnected) this.render();
    }, 1000);
  }

  log(ev) {
    const time = ev.time ? new Date(Date.parse(ev.time)).toLocaleTimeString() : "";
    const detail = ev.type === "task.progress" ? `${ev.progress_completed}/${ev.progress_total}${ev.message ? ` ${ev.message}` : ""}`
      : ev.error || ev.message || "";
    this.logList.prepend(h("li", { dataset: { type: ev.type } },
      h("time", { text: time }), " ", h("span", { class: "evtype", text: ev.type }), " ",
      h("span", { class: "mono", text: ev.task_id.slice(0, 8) }), ev.node ? ` on ${ev.node}` : "", " ",
      h("span", { text: detail })));
    while (this.logList.childElementCount > LOG_LINES) this.logList.lastElementChild.remove();
  }
}
