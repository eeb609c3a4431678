// Cluster-wide cron: every schedule with its next fire time, last slot and task, and recent history;
// enable/disable and run now. Read again when a cron.fired event arrives and after each action; a slow
// reload (every 30 s) catches what no event reports (a schedule written by someone else).

import { enc } from "./api.js";
import { badge, h, localTime, setText } from "./dom.js";

const RELOAD_MS = 30000;
const EVENT_RELOAD_MS = 300;

export class CronView {
  constructor(app) {
    this.app = app;
    this.root = this.build();
    this.timer = 0;
    this.unsubscribe = app.model.on((change) => {
      if (change.type === "event" && change.event.type === "cron.fired") this.reloadSoon();
    });
    this.interval = setInterval(() => this.load(), RELOAD_MS);
    this.load();
  }

  destroy() {
    this.unsubscribe();
    clearInterval(this.interval);
    clearTimeout(this.timer);
  }

  build() {
    this.body = h("tbody");
    this.error = h("p", { class: "error", role: "alert", hidden: true });
    return h("section", { "aria-labelledby": "cron-h" },
      h("h2", { id: "cron-h", text: "Cron schedules" }), this.error,
      h("div", { class: "table-wrap" },
        h("table", { id: "cron", class: "grid" },
          h("thead", {}, h("tr", {},
            h("th", { scope: "col", text: "Schedule" }), h("th", { scope: "col", text: "Task" }),
            h("th", { scope: "col", text: "When" }), h("th", { scope: "col", text: "Next fire" }),
            h("th", { scope: "col", class: "wide", text: "Last" }), h("th", { scope: "col", text: "Actions" }))),
          this.body)));
  }

  reloadSoon() {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = 0;
      this.load();
    }, EVENT_RELOAD_MS);
  }

  async load() {
    let doc;
    try {
      doc = await this.app.api.get("/cron");
      this.error.hidden = true;
    } catch (err) {
      this.error.hidden = false;
      setText(this.error, `Cannot read the schedules: ${err.message}`);
      return;
    }
    const rows = doc.schedules.flatMap((s) => this.rows(s));
    if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 6, class: "hint", text: "No schedules." })));
    this.body.replaceChildren(...rows);
  }

  rows(s) {
    const toggle = h("button", { type: "button", class: "small", text: s.enabled ? "Disable" : "Enable",
      onclick: () => this.act(`/cron/${enc(s.id)}/${s.enabled ? "disable" : "enable"}`) });
    const runNow = h("button", { type: "button", class: "small", text: "Run now",
      onclick: () => this.act(`/cron/${enc(s.id)}/run-now`, (r) => r && r.task_id && `started task ${r.task_id}`) });
    const last = s.last_task_id
      ? h("span", {}, localTime(s.last_slot), " → ", h("a", { href: `#/task/${s.last_task_id}`, class: "mono",
        text: s.last_task_id.slice(0, 8) }), " ", s.last_task_state ? badge(s.last_task_state) : "")
      : h("span", { class: "hint", text: "never fired" });
    const history = h("details", {}, h("summary", { text: `history (${s.history.length})` }),
      h("ol", { class: "history" }, ...s.history.map((e) => h("li", {},
        `${localTime(e.slot)}: ${e.outcome}${e.count > 1 ? ` ×${e.count}` : ""}`,
        e.task_id ? " → " : "", e.task_id ? h("a", { href: `#/task/${e.task_id}`, class: "mono", text: e.task_id.slice(0, 8) }) : "",
        e.reason ? ` (${e.reason})` : ""))));
    return [h("tr", { dataset: { schedule: s.id } },
      h("th", { scope: "row" }, s.id, " ", s.enabled ? "" : badge("disabled")),
      h("td", { text: `${s.module ? `${s.module}:` : ""}${s.task_type}${s.cluster ? " (cluster)" : ""}` }),
      h("td", { class: "mono", text: `${s.schedule}${s.timezone && s.timezone !== "UTC" ? ` ${s.timezone}` : ""}` }),
      h("td", { text: s.enabled ? localTime(s.next_fire_time) : "—" }),
      h("td", { class: "wide" }, last, history),
      h("td", { class: "actions" }, toggle, runNow))];
  }

  async act(path, describe = () => "") {
    try {
      const result = await this.app.api.post(path);
      const note = describe(result);
      if (note) this.app.notify(note, "info");
    } catch (err) {
      this.app.notify(err.message);
    }
    this.load();
  }
}
