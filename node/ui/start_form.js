// Start a task: pick a registered type, and fill a form built from its argument signature (GET
// /task_types: names, JSON types, defaults, required). The node checks the arguments again on start and
// its message is shown as it is.

import { enc, q } from "./api.js";
import { h, setText } from "./dom.js";

export class StartForm {
  constructor(app) {
    this.app = app;
    this.types = [];
    this.root = this.build();
    this.load();
  }

  destroy() {}

  build() {
    this.typeSelect = h("select", { id: "start-type", required: true, onchange: () => this.renderParams() });
    this.params = h("fieldset", { class: "params" }, h("legend", { text: "Arguments" }));
    this.cluster = h("input", { id: "start-cluster", type: "checkbox" });
    this.nodes = h("input", { id: "start-nodes", type: "text", placeholder: "all live nodes", autocomplete: "off" });
    this.labels = ["keyspace", "table", "entity", "idempotency_key"].map((name) =>
      h("span", { class: "field" }, h("label", { for: `start-${name}`, text: name.replace("_", " ") }),
        h("input", { id: `start-${name}`, name, type: "text", autocomplete: "off" })));
    this.error = h("p", { class: "error", role: "alert", hidden: true });
    // novalidate: the page checks the values itself and says what is wrong in the page (role=alert),
    // rather than in the browser's transient bubbles.
    this.form = h("form", { id: "start-form", class: "start", novalidate: true, onsubmit: (e) => this.submit(e) },
      h("span", { class: "field" }, h("label", { for: "start-type", text: "Task type" }), this.typeSelect),
      this.params,
      h("fieldset", {}, h("legend", { text: "Where and how" }),
        h("span", { class: "field check" }, this.cluster,
          h("label", { for: "start-cluster", text: "cluster task (one child on every node)" })),
        h("span", { class: "field" }, h("label", { for: "start-nodes", text: "only on nodes (ids, comma-separated)" }),
          this.nodes),
        ...this.labels),
      this.error,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", text: "Start" })));
    return h("section", { "aria-labelledby": "start-h" }, h("h2", { id: "start-h", text: "Start a task" }), this.form);
  }

  async load() {
    try {
      this.types = await this.app.api.get("/task_types");
    } catch (err) {
      this.showError(`Cannot list the task types: ${err.message}`);
      return;
    }
    this.typeSelect.replaceChildren(...this.types.map((t, i) =>
      h("option", { value: String(i), text: `${t.module}:${t.type}` })));
    this.renderParams();
  }

  current() {
    return this.types[Number(this.typeSelect.value)];
  }

  renderParams() {
    const t = this.current();
    const fields = [h("legend", { text: "Arguments" })];
    if (!t) {
      this.params.replaceChildren(...fields);
      return;
    }
    for (const p of t.params) {
      const id = `arg-${p.name}`;
      const hint = [p.type || "any JSON value", p.required ? "required" : ""].filter(Boolean).join(", ");
      let input;
      if (p.type === "boolean") {
        input = h("input", { id, type: "checkbox", checked: p.default === true });
        fields.push(h("span", { class: "field check" }, input, h("label", { for: id, text: `${p.name} (${hint})` })));
      } else {
        const attrs = { id, required: p.required, autocomplete: "off", spellcheck: "false" };
        if (p.type === "integer") Object.assign(attrs, { type: "number", step: "1" });
        else if (p.type === "number") Object.assign(attrs, { type: "number", step: "any" });
        else attrs.type = "text";
        if ("default" in p) {
          attrs.value = p.type === "" || p.type === null ? JSON.stringify(p.default)
            : p.type === "string" ? p.default : String(p.default);
          attrs.placeholder = attrs.value;
        }
        input = h("input", attrs);
        fields.push(h("span", { class: "field" }, h("label", { for: id, text: `${p.name} (${hint})` }), input));
      }
      input.dataset.param = p.name;
      input.dataset.kind = p.type || "json";
    }
    if (t.extra_args) fields.push(h("p", { class: "hint", text: "This type takes further arguments too (use the API to pass them)." }));
    if (!t.params.length) fields.push(h("p", { class: "hint", text: "This type takes no arguments." }));
    this.params.replaceChildren(...fields);
  }

  // The arguments as JSON values; throws with a message naming the field for a value that cannot be one.
  args() {
    const t = this.current();
    const out = {};
    for (const input of this.params.querySelectorAll("[data-param]")) {
      const name = input.dataset.param;
      const p = t.params.find((x) => x.name === name);
      if (input.dataset.kind === "boolean") {
        if (input.checked !== (p.default === true) || p.required) out[name] = input.checked;
        continue;
      }
      const raw = input.value.trim();
      if (raw === "") {
        if (p.required) throw new Error(`${name} is required`);
        continue;
      }
      if (input.dataset.kind === "integer" || input.dataset.kind === "number") {
        const n = Number(raw);
        if (!Number.isFinite(n) || (input.dataset.kind === "integer" && !Number.isInteger(n))) {
          throw new Error(`${name} must be ${input.dataset.kind === "integer" ? "an integer" : "a number"}`);
        }
        out[name] = n;
      } else if (input.dataset.kind === "string") {
        out[name] = raw;
      } else {
        try {
          out[name] = JSON.parse(raw);
        } catch {
          out[name] = raw; // as the CLI's --arg K=V: a value that is not JSON is a string
        }
      }
    }
    return out;
  }

  async submit(event) {
    event.preventDefault();
    const t = this.current();
    if (!t) return;
    let args;
    try {
      args = this.args();
    } catch (err) {
      this.showError(err.message);
      return;
    }
    const extra = Object.fromEntries(this.labels.map((span) => {
      const input = span.querySelector("input");
      return [input.name, input.value.trim()];
    }));
    const query = q({ cluster: this.cluster.checked ? "true" : "", nodes: this.nodes.value.replace(/\s+/g, ""), ...extra });
    try {
      const id = await this.app.api.post(`/tasks/${enc(t.module)}/${enc(t.type)}${query}`, args);
      this.error.hidden = true;
      location.hash = `#/task/${id}`;
    } catch (err) {
      this.showError(`The task was not started: ${err.message}`);
    }
  }

  showError(message) {
    this.error.hidden = false;
    setText(this.error, message);
  }
}
