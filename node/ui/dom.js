// Small DOM and formatting helpers. Text goes in through textContent only (never innerHTML), so a task's
// error message or argument is always shown as text.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

export const EPOCH = "1970-01-01T00:00:00Z";

export function parseTime(iso) {
  return !iso || iso === EPOCH ? null : Date.parse(iso);
}

export function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return "";
  let s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const hh = Math.floor(s / 3600);
  s -= hh * 3600;
  const mm = Math.floor(s / 60);
  s -= mm * 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${mm}m`;
  return `${mm}m ${String(s).padStart(2, "0")}s`;
}

export function localTime(iso) {
  const t = parseTime(iso);
  return t === null ? "" : new Date(t).toLocaleString();
}

export function percent(fraction) {
  return `${Math.floor(Math.max(0, Math.min(1, fraction)) * 100)}%`;
}

// The state a person reads: an aborted task is "failed" with error "aborted" on the wire.
export function stateLabel(t) {
  return t.state === "failed" && t.aborted ? "aborted" : t.state;
}

export function badge(text, kind = text) {
  return h("span", { class: `badge badge-${kind}`, text });
}

export function shortId(id) {
  return id.slice(0, 8);
}
