// Server-sent events over fetch(): EventSource cannot send an Authorization header, so the dashboard
// reads the stream itself (ReadableStream), with or without a token alike. It keeps the last `id:` and
// sends it back as Last-Event-ID when it reconnects, so a dropped connection loses no event; the first
// connection may ask for live events only (`firstQuery`, e.g. "?live=true"), because the page has just
// read the current state and wants what happens from now on.

import { errorOf } from "./api.js";

const MIN_RETRY_MS = 500;
const MAX_RETRY_MS = 5000;

export class SseStream {
  // onFrames(frames, receivedAt): frames = [{id, event, data}] parsed from one chunk; receivedAt =
  // performance.now() when the chunk arrived. onState(state, error): "open" | "retrying" | "refused".
  constructor(api, path, { firstQuery = "", onFrames = () => {}, onState = () => {}, resume = true }) {
    this.api = api;
    this.path = path;
    this.firstQuery = firstQuery;
    this.onFrames = onFrames;
    this.onState = onState;
    this.resume = resume;
    this.lastId = "";
    this.closed = false;
    this.controller = null;
    this.first = null;
  }

  // Sends the first request now, before the handlers are set; start() goes on from its answer.
  open() {
    this.first = this.request();
    this.first.catch(() => {}); // the loop reads the failure
    return this;
  }

  // Takes over a first request already sent (by the page's boot script), with its AbortController.
  adopt(sent, controller) {
    this.first = sent;
    this.controller = controller;
    return this;
  }

  start() {
    this.loop();
    return this;
  }

  close() {
    this.closed = true;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    let retry = MIN_RETRY_MS;
    while (!this.closed) {
      const sent = this.first;
      this.first = null;
      try {
        const resp = await (sent || this.request());
        if (!resp.ok) {
          const error = await errorOf(resp);
          if (resp.status === 401) {
            this.onState("refused", error);
            this.api.onUnauthorized(error);
            return;
          }
          this.onState("retrying", error);
        } else {
          this.onState("open", null);
          retry = MIN_RETRY_MS;
          await this.read(resp.body);
          if (!this.closed) this.onState("retrying", null);
        }
      } catch (err) {
        if (this.closed) return;
        this.onState("retrying", err);
      }
      await new Promise((resolve) => setTimeout(resolve, retry));
      retry = Math.min(retry * 2, MAX_RETRY_MS);
    }
  }

  request() {
    this.controller = new AbortController();
    const headers = this.api.headers({ Accept: "text/event-stream" });
    let query = "";
    if (this.resume && this.lastId) headers["Last-Event-ID"] = this.lastId;
    else query = this.firstQuery;
    return fetch(this.api.url(this.path + query), { headers, signal: this.controller.signal, cache: "no-store" });
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.closed) return;
      const receivedAt = performance.now();
      buffer += value.replace(/\r\n?/g, "\n");
      const frames = [];
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = parseFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (frame) {
          if (frame.id) this.lastId = frame.id;
          frames.push(frame);
        }
      }
      if (frames.length) this.onFrames(frames, receivedAt);
    }
  }
}

function parseFrame(text) {
  let id = "";
  let event = "message";
  const data = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id") id = value;
    else if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  return { id, event, data: data.join("\n") };
}
