// The dashboard's entry point: asks for a token when the server wants one, follows the event stream and
// the member stream, and shows one view at a time (hash routes: #/, #/task/ID, #/start, #/cron).
// Everything on screen is updated from the streams; the only timer that reads the server again is a slow
// resynchronisation (RESYNC_MS) for what no event reports, such as a finished task whose TTL ran out.
//
// The first screen is the overview, and what it waits for is asked for first: ui/boot.js, a classic
// script in the page's head, sends the live event stream's request, the module list's and then the task
// lists' before any module has loaded; this module takes those answers over (or sends the same requests
// itself when boot.js did not run). The other views are modules of their own, loaded when first shown,
// so they are not on the way to the first render.

import { Api, enc } from "./api.js";
import { SseStream } from "./sse.js";

const api = new Api();
const boot = window.taskwardBoot; // (ui/boot.js: sent before this module loaded)
const early = boot && boot.token === api.token ? {
  events: new SseStream(api, "/events", { firstQuery: "?live=true" }).adopt(boot.events, boot.controller),
  modules: api.read(boot.modules),
  lists: boot.lists,
} : {
  events: new SseStream(api, "/events", { firstQuery: "?live=true" }).open(),
  modules: api.get("/task_manager/list_modules"),
  lists: Promise.resolve(null),
};
early.modules.catch(() => {}); // answered in App.connect, which may only await it later

const [{ Model }, { Overview, abortRefusal }, { setText }] = await Promise.all([
  import("./model.js"), import("./overview.js"), import("./dom.js"),
]);

const RESYNC_MS = 30000;
const FIRST_OPEN_WAIT_MS = 2000;
const INFO_MS = 6000;
const VIEWS = {
  task: () => import("./task_page.js").then((m) => m.TaskPage),
  start: () => import("./start_form.js").then((m) => m.StartForm),
  cron: () => import("./cron_view.js").then((m) => m.CronView),
};

class App {
  constructor(api) {
    this.api = api;
    this.model = new Model(this.api);
    this.view = null;
    this.routes = 0;
    this.streams = [];
    this.started = false;
    this.resync = 0;
    this.api.onUnauthorized = (err) => this.askToken(err);
    this.$ = (id) => document.getElementById(id);
    // For operators' consoles and the browser tests: how long the first render took (the tasks on
    // screen; listRenderMs: the whole list), how long each batch of events took from arrival to the DOM.
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
    await this.connect(early.modules, early.events, early.lists);
  }

  // modules: the read of the module list, sent together with the event stream's first request (a refused
  // token fails both alike, and the token dialog takes over); events: that stream, when already sent;
  // lists: the task lists when already asked for (a Map module -> answer on its way), else null.
  async connect(modules, events = new SseStream(this.api, "/events", { firstQuery: "?live=true" }),
    lists = Promise.resolve(null)) {
    if (this.started) return;
    this.started = true;
    let firstOpen;
    const opened = new Promise((resolve) => { firstOpen = resolve; });
    events.onFrames = (frames, receivedAt) => this.model.applyEvents(frames.map((f) => JSON.parse(f.data)), receivedAt);
    events.onState = (state, err) => {
      this.showLive(state, err);
      if (state !== "retrying") firstOpen();
    };
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
    try {
      this.model.modules = await modules;
    } catch (err) {
      if (err.status === 401) this.askToken(err); // (sent before this page could ask itself)
      else this.notify(`The server did not answer: ${err.message}`);
      if (err.status === 401 || err.status === 403) {
        this.stopStreams(); // the token dialog takes over (401), or there is nothing this token may read
        this.started = false;
        return;
      }
    }
    // Read the lists once the live stream is subscribed (or after a short wait), so nothing that happens
    // between the read and the subscription is missed.
    await Promise.race([opened, new Promise((resolve) => setTimeout(resolve, FIRST_OPEN_WAIT_MS))]);
    if (!this.started) return;
    const sent = await lists.catch(() => null);
    await this.guard(this.model.loadTasks({ modulesKnown: this.model.modules.length > 0, sent }));
    clearInterval(this.resync);
    this.resync = setInterval(() => this.guard(this.model.loadTasks()), RESYNC_MS);
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
    if (this.view) { // shown while the first answers were on the way: nothing of it can be read now
      this.view.destroy();
      this.view = null;
      this.$("main").replaceChildren();
    }
    if (!dialog.open) dialog.showModal();
    this.$("token-input").focus();
  }

  async submitToken(event) {
    event.preventDefault();
    const token = this.$("token-input").value.trim();
    const error = this.$("token-error");
    if (!token) return;
    this.api.token = token;
    let modules;
    try {
      modules = await this.api.get("/task_manager/list_modules");
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
    await this.connect(Promise.resolve(modules));
  }

  // ------------------------------------------------------------------ views

  route() {
    if (!this.started) return;
    const hash = location.hash || "#/";
    const task = hash.match(/^#\/task\/([0-9a-f-]{36})$/);
    const name = task ? "task" : hash === "#/start" ? "start" : hash === "#/cron" ? "cron" : "overview";
    const route = ++this.routes;
    if (name === "overview") {
      this.show(name, () => new Overview(this));
      return;
    }
    VIEWS[name]().then((View) => {
      if (route === this.routes && this.started) this.show(name, () => new View(this, task && task[1]));
    }, (err) => this.notify(`This view could not be loaded: ${err.message}`));
  }

  show(name, create) {
    if (this.view) this.view.destroy();
    this.view = create();
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

new App(api).start();
