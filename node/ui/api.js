// The REST API as the dashboard uses it: one place that adds the bearer token, turns error bodies
// ({"message", "code"}) into ApiError, and reports a refused token so the page can ask for another.
// The token lives in sessionStorage (this tab only) and travels as an Authorization header: no cookie,
// so no other site can make the browser send it (no CSRF surface).

const TOKEN_KEY = "taskward.token";

// Paths are relative to where the page is served (".../ui"), so a path prefix in front of the API works.
export const ROOT = location.pathname.replace(/\/ui\/?$/, "");

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Api {
  constructor() {
    this.token = sessionStorage.getItem(TOKEN_KEY) || "";
    this.onUnauthorized = () => {};
  }

  headers(extra = {}) {
    const h = { Accept: "application/json", ...extra };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    return h;
  }

  url(path) {
    return ROOT + path;
  }

  saveToken(token) {
    this.token = token;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  }

  async request(method, path, body) {
    const init = { method, headers: this.headers(), cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return this.read(fetch(this.url(path), init));
  }

  // The JSON of an answer on its way (a request of this Api, or one the page's boot script sent).
  async read(sent) {
    let resp;
    try {
      resp = await sent;
    } catch (err) {
      throw new ApiError(0, `the server cannot be reached (${err.message})`);
    }
    if (!resp.ok) {
      const error = await errorOf(resp);
      if (resp.status === 401) this.onUnauthorized(error);
      throw error;
    }
    const text = await resp.text();
    return text ? JSON.parse(text) : null;
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body) {
    return this.request("POST", path, body);
  }
}

export async function errorOf(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body && typeof body.message === "string") message = body.message;
  } catch {
    // not a JSON error body: keep the status line
  }
  return new ApiError(resp.status, message);
}

export function q(params) {
  const parts = [];
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "" && v !== false) parts.push(`${k}=${encodeURIComponent(v)}`);
  }
  return parts.length ? `?${parts.join("&")}` : "";
}

export const enc = encodeURIComponent;
