// The dashboard's entry point: asks for a token when the server wants one, follows the event stream and
// the member stream, and shows one view at a time (hash routes: #/, #/task/ID, #/start, #/cron).
// Everything on screen is updated from the streams; the only timer that reads the server again is a slow
// resynchronisation (RESYNC_MS) for what no event reports, such as a finished task whose TTL ran out.

import { Api, enc } from "./api.js";
import { CronView } from "./cron_view.js";
import { Model } from "./model.js";
import { Overview, abortRefusal } from "./overview.js";
import { SseStream } from "./sse.js";
import { StartForm } from "./start_form.js";
import { TaskPage } from "./task_page.js";
import { setText } from "./dom.js";

const RESYNC_MS = 30000;
const FIRST_OPEN_WAIT_MS = 2000;
const INFO_MS = 6000;

class App {
  constructor() {
    this.api = new Api();
    this.model = new Model(this.api);
    this.view = null;
    this.streams = [];
    this.started = false;
    this.api.onUnauthorized = (err) => this.askToken(err);
    this.$ = (id) => document.getElementById(id);
    // For operators' consoles and the browser tests: how long the first render took, how long each
    // batch of events took from arrival to the DOM.
    window.taskward = { metrics: this.model.metrics, model: this.model };
  }

  async start() {
    this.$("token-form").addEventListener("submit", (e) => this.submitToken(e));
    this.$("token-dialog").addEventListener("cancel", (e) => e.preventDefault());
    this.$("signout").addEventListener("click", () => {
      this.api.saveToken("");
      location.reload();
    });
    window.addEventListener("hashchange", () => this.route());
    window.addEventListener("pagehide", () => this.stopStreams());
    this.$("signout").hidden = !this.api.token;
    try {
      this.model.modules = await this.api.get("/task_manager/list_modules");
    } catch (err) {
      if (err.status !== 401) this.notify(`The server did not answer: ${err.message}`);
      if (err.status === 401 || err.status === 403) return; // the token dialog takes over
    }
    await this.connect();
  }

  async connect() {
    if (this.started) return;
    this.started = true;
    let firstOpen;
    const opened = new Promise((resolve) => { firstOpen = resolve; });
    const events = new SseStream(this.api, "/events", {
      firstQuery: "?live=true",
      onFrames: (frames, receivedAt) => this.model.applyEvents(frames.map((f) => JSON.parse(f.data)), receivedAt),
      onState: (state, err) => {
        this.showLive(state, err);
        if (state !== "retrying") firstOpen();
      },
    });
    const nodes = new SseStream(this.api, "/cluster/nodes/stream", {
      resume: false,
      onFrames: (frames) => {
        const last = JSON.parse(frames[frames.length - 1].data);
        this.model.setNodes(last.nodes, last.stale);
      },
      onState: () => {},
    });
    this.streams = [events.start(), nodes.start()];
    this.route();
    // Read the lists once the live stream is subscribed (or after a short wait), so nothing that happens
    // between the read and the subscription is missed.
    await Promise.race([opened, new Promise((resolve) => setTimeout(resolve, FIRST_OPEN_WAIT_MS))]);
    await this.guard(this.model.loadTasks({ modulesKnown: this.model.modules.length > 0 }));
    setInterval(() => this.guard(this.model.loadTasks()), RESYNC_MS);
  }

  stopStreams() {
    for (const s of this.streams) s.close();
    this.streams = [];
  }

  showLive(state, err) {
    const live = this.$("live");
    live.dataset.state = state;
    setText(live, state === "open" ? "live" : state === "refused" ? "signed out"
      : `reconnecting…${err && err.message ? ` (${err.message})` : ""}`);
  }

  // ------------------------------------------------------------------ auth

  askToken(err) {
    const dialog = this.$("token-dialog");
    const error = this.$("token-error");
    if (this.api.token) {
      error.hidden = false;
      setText(error, `The token was not accepted (${err.status}: ${err.message}). Check it and try again.`);
    }
    this.stopStreams();
    this.started = false;
    if (!dialog.open) dialog.showModal();
    this.$("token-input").focus();
  }

  async submitToken(event) {
    event.preventDefault();
    const token = this.$("token-input").value.trim();
    const error = this.$("token-error");
    if (!token) return;
    this.api.token = token;
    try {
      await this.api.get("/task_manager/list_modules");
    } catch (err) {
      error.hidden = false;
      setText(error, err.status === 401
        ? `The token was not accepted (401: ${err.message}). Check it and try again.`
        : `The server did not answer: ${err.message}`);
      this.api.token = "";
      return;
    }
    this.api.saveToken(token);
    error.hidden = true;
    this.$("token-dialog").close();
    this.$("signout").hidden = false;
    await this.connect();
  }

  // ------------------------------------------------------------------ views

  route() {
    if (!this.started) return;
    const hash = location.hash || "#/";
    const task = hash.match(/^#\/task\/([0-9a-f-]{36})$/);
    const name = task ? "task" : hash === "#/start" ? "start" : hash === "#/cron" ? "cron" : "overview";
    if (this.view) this.view.destroy();
    this.view = task ? new TaskPage(this, task[1]) : name === "start" ? new StartForm(this)
      : name === "cron" ? new CronView(this) : new Overview(this);
    const main = this.$("main");
    main.replaceChildren(this.view.root);
    for (const a of document.querySelectorAll("[data-nav]")) {
      if (a.dataset.nav === (name === "task" ? "overview" : name)) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    if (document.activeElement && document.activeElement !== document.body) main.focus({ preventScroll: true });
  }

  confirmAbort(task, after = () => {}) {
    const reason = abortRefusal(task);
    if (reason) {
      this.notify(`Task ${task ? task.task_id : ""} cannot be aborted: ${reason.replace(/^not abortable: /, "")}.`);
      return;
    }
    const dialog = this.$("confirm-dialog");
    setText(this.$("confirm-title"), "Abort this task?");
    setText(this.$("confirm-text"), `Abort ${task.module}:${task.type} ${task.task_id}? Its children on every node are `
      + "aborted too; a batch in progress finishes first. This cannot be undone.");
    setText(this.$("confirm-ok"), "Abort task");
    dialog.returnValue = "";
    dialog.addEventListener("close", async () => {
      if (dialog.returnValue !== "ok") return;
      try {
        await this.api.post(`/task_manager/abort_task/${enc(task.task_id)}`);
        this.notify(`Abort of ${task.task_id} requested.`, "info");
      } catch (err) {
        this.notify(`The abort was refused: ${err.message}`);
      }
      after();
    }, { once: true });
    dialog.showModal();
  }

  notify(message, kind = "error") {
    const notice = this.$("notice");
    notice.dataset.kind = kind;
    notice.hidden = false;
    setText(notice, message);
    clearTimeout(this.noticeTimer);
    if (kind === "info") this.noticeTimer = setTimeout(() => { notice.hidden = true; }, INFO_MS);
  }

  // Runs a promise whose failure is worth telling (not a crash of the page).
  async guard(promise) {
    try {
      return await promise;
    } catch (err) {
      if (err.status !== 401) this.notify(err.message);
      return undefined;
    }
  }
}

new App().start();
