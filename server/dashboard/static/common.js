/* Shared helpers for the dashboard pages: API calls, formatting, small DOM utilities.
 * The token typed at login is kept in sessionStorage and sent as a Bearer header, so API calls work
 * whether or not the API also accepts the Flask session cookie. */
"use strict";

const Distillery = (() => {
  const TOKEN_KEY = "distillery.token";
  const API = document.body.dataset.api || "/api/v1";
  const TERMINAL = ["succeeded", "failed", "cancelled"];

  class ApiError extends Error {
    constructor(status, body) {
      const err = (body && body.error) || {};
      super(typeof err === "string" ? err : (err.message || `HTTP ${status}`));
      this.status = status;
      this.code = err.code;
      this.field = err.field;
    }
  }

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  /** fetch an API path and return parsed JSON; throws ApiError on 4xx/5xx. */
  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = headers(opts.headers);
    if (opts.json !== undefined) {
      opts.body = JSON.stringify(opts.json);
      opts.headers["Content-Type"] = "application/json";
      delete opts.json;
    }
    const resp = await fetch(path.startsWith("http") || path.startsWith("/api") ? path : API + path, opts);
    let body = null;
    const text = await resp.text();
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = text; }
    if (!resp.ok) {
      if (resp.status === 401) flash("Your session has expired or the token is no longer valid: log in again.", true);
      throw new ApiError(resp.status, body);
    }
    return body;
  }

  /** fetch raw bytes with the same credentials (artifact downloads). */
  async function apiBlob(path) {
    const resp = await fetch(API + path, { credentials: "same-origin", headers: headers() });
    if (!resp.ok) throw new ApiError(resp.status, null);
    return { blob: await resp.blob(), headers: resp.headers };
  }

  /** Rows of a list response: a bare list or {items|jobs|data|...: [...]}. */
  function items(payload) {
    if (Array.isArray(payload)) return payload;
    if (payload && typeof payload === "object") {
      for (const k of ["items", "jobs", "data", "results", "datasets", "artifacts", "events", "lines"]) {
        if (Array.isArray(payload[k])) return payload[k];
      }
    }
    return [];
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function duration(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d" + String(Math.floor((s % 86400) / 3600)).padStart(2, "0") + "h";
  }

  function parseTime(v) {
    if (!v) return null;
    const s = /[zZ]|[+-]\d\d:?\d\d$/.test(v) ? v : v + "Z"; // naive timestamps are UTC
    const t = Date.parse(s);
    return isNaN(t) ? null : t;
  }

  function age(v) {
    const t = parseTime(v);
    return t === null ? "–" : duration((Date.now() - t) / 1000);
  }

  function bytes(n) {
    if (typeof n !== "number") return "–";
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(n < 10 ? 2 : 1) : n) + " " + units[i];
  }

  function num(v, digits) {
    return typeof v === "number" && isFinite(v) ? v.toFixed(digits === undefined ? 2 : digits) : "–";
  }

  function fraction(job) {
    if (job.state === "succeeded") return 1;
    const p = job.progress || {};
    let f = p.fraction;
    if (typeof f !== "number") f = p.epochs && p.steps_per_epoch ? (p.step || 0) / (p.epochs * p.steps_per_epoch) : 0;
    return Math.min(1, Math.max(0, f));
  }

  /** A progress bar element (or update an existing one) with epoch and ETA text. */
  function progressText(job) {
    const p = job.progress || {};
    const parts = [Math.round(fraction(job) * 100) + "%"];
    if (p.epochs) parts.push("epoch " + (p.epoch || 0) + "/" + p.epochs);
    if (!TERMINAL.includes(job.state) && p.eta_s !== undefined && p.eta_s !== null) parts.push("ETA " + duration(p.eta_s));
    return parts.join(" · ");
  }

  function setBar(bar, job) {
    const f = fraction(job);
    bar.querySelector(".fill").style.width = (f * 100).toFixed(1) + "%";
    bar.dataset.state = job.state;
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", (f * 100).toFixed(1));
  }

  function badge(state) {
    return el("span", { class: "badge state-" + state, text: state });
  }

  function owner(job) {
    let o = job.owner ?? job.user ?? job.owner_name ?? "–";
    if (o && typeof o === "object") o = o.name || o.username || o.id;
    return String(o);
  }

  function bestTop1(job) {
    const m = job.metrics || {};
    for (const k of ["best_val_top1", "val_top1_best", "best_top1", "val_top1"]) {
      if (typeof job[k] === "number") return job[k];
      if (typeof m[k] === "number") return m[k];
    }
    return null;
  }

  function flash(message, isError) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = message;
    box.className = "flash" + (isError ? " error" : "");
    box.hidden = !message;
  }

  /** Run fn now and every ms milliseconds, never overlapping, pausing while the tab is hidden. */
  function poll(fn, ms) {
    let stopped = false, timer = null;
    async function tick() {
      if (stopped) return;
      if (!document.hidden) {
        try { if ((await fn()) === false) { stopped = true; return; } } catch (e) { console.error(e); }
      }
      if (!stopped) timer = setTimeout(tick, ms);
    }
    tick();
    return () => { stopped = true; clearTimeout(timer); };
  }

  document.addEventListener("DOMContentLoaded", () => {
    const logout = document.getElementById("logout-form");
    if (logout) logout.addEventListener("submit", () => sessionStorage.removeItem(TOKEN_KEY));
  });

  return { TOKEN_KEY, API, TERMINAL, ApiError, api, apiBlob, items, el, duration, age, parseTime, bytes, num,
           fraction, progressText, setBar, badge, owner, bestTop1, flash, poll };
})();
