// The first requests of the overview, sent from the page's <head> before any module has loaded: the live
// event stream and the module list at once, then, as soon as both have answered, each module's task
// list. The modules (app.js and what it imports) take over these answers when they run, so loading and
// compiling them is no longer on the way to the first render. The lists are asked for only after the
// stream has answered, so no event between the read and the subscription is missed (as app.js would).
// A classic script (the page's Content-Security-Policy allows scripts from this origin only, no inline).
"use strict";

(() => {
  const root = location.pathname.replace(/\/ui\/?$/, "");
  const token = sessionStorage.getItem("taskward.token") || "";
  const get = (path, accept, signal) => {
    const headers = { Accept: accept };
    if (token) headers.Authorization = `Bearer ${token}`;
    return fetch(root + path, { headers, signal, cache: "no-store" });
  };
  const controller = new AbortController();
  const events = get("/events?live=true", "text/event-stream", controller.signal);
  const modules = get("/task_manager/list_modules", "application/json");
  const lists = Promise.all([events, modules]).then(async ([stream, names]) => {
    if (!stream.ok || !names.ok) return null; // app.js reports why, from the same answers
    const list = await names.clone().json();
    return new Map(list.map((m) => [m, get(`/tasks/${encodeURIComponent(m)}?brief=true`, "application/json")]));
  });
  for (const p of [events, modules, lists]) p.catch(() => {}); // read (and reported) by app.js
  window.taskwardBoot = { token, controller, events, modules, lists };
})();
