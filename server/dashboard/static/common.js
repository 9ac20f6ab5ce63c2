/* Shared helpers for the dashboard pages: API calls, formatting, small DOM utilities.
 * The token typed at login is kept in sessionStorage and sent as a Bearer header, so API calls work
 * whether or not the API also accepts the Flask session cookie. */
"use strict";

const Distillery = (() => {
  const TOKEN_KEY = "distillery.token";
  const API = document.body.dataset.api || "/api/v1";
  const TERMINAL = (document.body.dataset.finalStates || "").split(",");  // server.vocabulary.FINAL_STATES

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
    // Without a token in this tab the session cookie authenticates; the API then wants the page's CSRF value.
    const csrf = document.querySelector('meta[name="csrf-token"]');
    if (csrf && csrf.content) h["X-CSRF-Token"] = csrf.content;
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
      for (const k of ["items", "jobs", "data", "results", "datasets", "artifacts", "events", "lines", "webhooks", "deliveries"]) {
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

  /** A job's state; a finished job whose top-1 is chance level (the API's at_chance) reads "at chance",
   * never a plain green "succeeded". */
  function badge(state, atChance) {
    if (atChance && state === "succeeded") {
      return el("span", { class: "badge state-at-chance", title: "succeeded, but its top-1 is that of guessing", text: "at chance" });
    }
    return el("span", { class: "badge state-" + state, text: state });
  }

  const signed = (v, digits) => (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(digits === undefined ? 1 : digits);
  const isNum = (v) => typeof v === "number" && isFinite(v);

  /** The distillation gain of a job's ``baseline`` block as {text, significant}: always with its
   * interval and verdict; without an interval (an older record) the two top-1s and "interval not
   * computed"; green (significant) only when the API says ``significant``. */
  function gainSummary(b, top1) {
    if (!b) return null;
    if (b.pending) return { text: `distillation gain: ${b.pending}`, significant: false, state: "pending" };
    if (isNum(b.gain) && Array.isArray(b.gain_ci95) && b.gain_ci95.length === 2) {
      const [lo, hi] = b.gain_ci95;
      const over = b.ci_over === "seeds" ? `over ${b.seeds} seeds` : "over images, one seed";
      return { text: `distillation gain ${signed(b.gain)} pt (95% CI ${signed(lo)} to ${signed(hi)} pt, ${over})` +
        (b.verdict ? `: ${b.verdict}` : ""), significant: b.significant === true, state: "measured" };
    }
    if (isNum(b.gain)) {
      return { text: `top-1 ${num(top1, 1)}% against ${num(b.top1, 1)}% for the same student without a teacher ` +
        "(interval not computed)", significant: false, state: "no-interval" };
    }
    return { text: `distillation gain: waiting for both runs (baseline ${b.state || "not started"})`, significant: false,
      state: "waiting" };
  }

  /** "5.02 ms (4.80–5.40)": the median and the p10–p90 spread of the timed runs. */
  function latencyText(lat) {
    if (!lat || !isNum(lat.p50)) return "–";
    const spread = isNum(lat.p10) && isNum(lat.p90) ? ` (${lat.p10.toFixed(2)}–${lat.p90.toFixed(2)})` : "";
    return `${lat.p50.toFixed(2)} ms${spread}`;
  }

  /** "Intel(R) Xeon(R) ... (avx2, avx512f, amx_tile), 1 thread": where a latency was measured. */
  function cpuText(cpu) {
    if (!cpu) return "CPU not recorded";
    const isa = (cpu.isa || []).length ? cpu.isa.join(", ") : "no AVX2/AVX-512/AMX";
    const threads = isNum(cpu.threads) ? `, ${cpu.threads} thread${cpu.threads === 1 ? "" : "s"}` : "";
    const torch = cpu.torch ? `, torch ${cpu.torch}` : "";
    return `${cpu.model || "unknown CPU"} (${isa})${threads}${torch}`;
  }

  /** "2.10x faster (1.90–2.30)", "1.30x slower (1.16–1.45)" or "the same speed (0.95–1.10x)": an
   * int8-vs-fp32 entry of the export report (deit_core.latency.speedup_text says the same). */
  /** The words of speedup_text (deit_core/latency.py); with `than`, the comparison is named. */
  function speedupText(e, than) {
    const words = speedupWords(e);
    if (!than) return words;
    if (words === "not measured") return `not measured against ${than}`;
    return `${words} ${e.same_speed ? "as" : "than"} ${than}`;
  }

  function speedupWords(e) {
    if (!e || !isNum(e.speedup) || e.speedup <= 0) return "not measured";
    const r = e.speedup;
    const rng = Array.isArray(e.speedup_range) && e.speedup_range.length === 2 && Math.min(...e.speedup_range) > 0
      ? e.speedup_range : null;
    if (e.same_speed) return "the same speed" + (rng ? ` (${rng[0].toFixed(2)}–${rng[1].toFixed(2)}x)` : ` (${r.toFixed(2)}x)`);
    if (r >= 1) return `${r.toFixed(2)}x faster` + (rng ? ` (${rng[0].toFixed(2)}–${rng[1].toFixed(2)})` : "");
    return `${(1 / r).toFixed(2)}x slower` + (rng ? ` (${(1 / rng[1]).toFixed(2)}–${(1 / rng[0]).toFixed(2)})` : "");
  }

  /** "int8 .ptl vs fp32: distilled student 2.10x faster (…) than its fp32 .ptl, 3.05x faster (…) than fp32 eager". */
  function shipSpeedups(rows) {
    const role = (r) => r.role === "student" ? "distilled student" : r.role === "baseline" ? "student alone"
      : r.role === "front" ? `trial ${r.trial}` : r.role;
    const parts = rows.filter((r) => r.int8_vs_fp32 && (r.int8_vs_fp32.same_runtime || r.int8_vs_fp32.vs_fp32_eager))
      .map((r) => `${role(r)} ${speedupText(r.int8_vs_fp32.same_runtime, "its fp32 .ptl")}, ` +
        `${speedupText(r.int8_vs_fp32.vs_fp32_eager, "fp32 eager")}`);
    return parts.length ? "int8 .ptl vs fp32: " + parts.join("; ") : null;
  }

  /** The ship card (the API's job.ship_card): the sentence, then teacher / student / baseline side by
   * side, the CPU the latencies were measured on, and the teacher's fitness warning. */
  function shipCard(card, jobHref) {
    if (!card) return null;
    const href = jobHref || ((id) => `jobs/${id}`);
    const head = ["", "job", "model", "params (M)", "top-1 % (95% CI)", ".ptl latency p50 (p10–p90)", ".ptl size"];
    const rows = card.rows.map((r) => {
      const ci = Array.isArray(r.top1_ci95) ? ` (${r.top1_ci95[0].toFixed(1)}–${r.top1_ci95[1].toFixed(1)})` : "";
      const top1 = [num(r.top1, 1) + ci];
      if (r.role === "teacher" && isNum(r.teacher_train_top1)) {
        top1.push(el("br"), el("small", { class: "muted", "data-testid": "teacher-train-top1",
          text: `${r.teacher_train_top1.toFixed(1)}% on the student's training crops` }));
      }
      return el("tr", { "data-role": r.role },
        el("th", { text: r.role === "student" ? "distilled student" : r.role === "baseline" ? "student alone"
          : r.role === "front" ? `trial ${r.trial} (front)` : r.role }),
        el("td", { "data-label": head[1] }, r.job_id ? el("a", { href: href(r.job_id), text: `#${r.job_id}` }) : "–",
          r.at_chance ? [" ", badge("succeeded", true)] : null),
        el("td", { "data-label": head[2], text: r.model || "–" }),
        el("td", { class: "num", "data-label": head[3], text: num(r.params_m, 2) }),
        el("td", { class: "num", "data-label": head[4] }, ...top1),
        el("td", { class: "num", "data-label": head[5], text: latencyText(r.latency_ms) }),
        el("td", { class: "num", "data-label": head[6], text: bytes(r.size_bytes) }));
    });
    const warning = card.rows.map((r) => r.fitness_warning).find(Boolean);
    return el("div", { class: "ship-card", "data-testid": "ship-card" },
      el("p", { class: "ship-sentence", "data-testid": "ship-sentence", text: card.sentence }),
      el("div", { class: "table-wrap" }, el("table", { class: "cards" },
        el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { text: h })))), el("tbody", {}, ...rows))),
      el("p", { class: "muted ship-cpu", "data-testid": "ship-cpu",
        text: `latency: batch 1, measured on ${cpuText(card.cpu)}; spreads that overlap are the same speed` }),
      shipSpeedups(card.rows) ? el("p", { class: "muted ship-speedups", "data-testid": "ship-speedups",
        text: shipSpeedups(card.rows) }) : null,
      warning ? el("p", { class: "note warn", "data-testid": "teacher-fitness", text: "Teacher: " + warning }) : null);
  }

  /** "at chance" when a finished job's top-1 is no better than guessing (the API's job.at_chance). */
  function chanceNote(job) {
    if (!job.at_chance) return null;
    return `top-1 ${num(job.top1, 1)}% is chance level (${num(job.chance_top1, 1)}% = guessing among ` +
      `${Math.round(100 / job.chance_top1)} classes): the model learned nothing; see the data presets on the submit page`;
  }

  function owner(job) {
    let o = job.owner ?? job.user ?? job.owner_name ?? "–";
    if (o && typeof o === "object") o = o.name || o.username || o.id;
    return String(o);
  }

  /** The one accuracy shown everywhere: val top-1 of the checkpoint that is exported (the API's
   * job.top1, the final epoch; see job.top1_checkpoint). */
  function bestTop1(job) {
    if (typeof job.top1 === "number") return job.top1;
    const m = job.metrics || {};
    return typeof m.val_top1 === "number" ? m.val_top1 : null;
  }

  /** Config keys in words, the key itself kept as a hint (train.aa -> "RandAugment"). */
  const LABELS = {
    "data.train": "Training images", "data.val": "Validation images", "data.img_size": "Image size (px)",
    "data.crop_pct": "Eval center-crop share",
    "student.model": "Student model", "student.patch_size": "Patch size (px)", "student.init": "Initial weights",
    "teacher.model": "Teacher model", "teacher.checkpoint": "Teacher weights",
    "distillation.type": "Distillation", "distillation.alpha": "Teacher loss weight (alpha)",
    "distillation.tau": "Soft-label temperature (tau)", "distillation.kl_reduction": "KL reduction",
    "train.epochs": "Epochs", "train.batch_size": "Batch size per process", "train.lr": "Base learning rate (per 512 images)",
    "train.weight_decay": "Weight decay", "train.warmup_epochs": "Warm-up epochs", "train.mixup": "Mixup alpha",
    "train.cutmix": "CutMix alpha", "train.smoothing": "Label smoothing", "train.drop_path": "Stochastic depth (drop path)",
    "train.aa": "RandAugment", "train.scale_min": "Smallest random-crop area", "train.hflip": "Horizontal flip probability",
    "train.reprob": "Random erasing probability", "train.ema": "Weight EMA", "train.ema_decay": "EMA decay",
    "train.clip_grad": "Gradient clipping", "train.mixed_precision": "Mixed precision", "train.seed": "Random seed",
    "train.accum_steps": "Gradient accumulation steps", "train.min_lr": "Final learning rate",
    "train.warmup_lr": "Warm-up start learning rate", "train.repeated_aug": "Repeated augmentation",
    "train.workers": "Data-loader workers", "train.log_every": "Log every N steps",
    "resources.processes": "Processes (ranks)", "resources.max_attempts": "Automatic attempts",
  };
  const label = (dotted) => LABELS[dotted] || dotted;

  /** {"a.b": v} of a nested config (two levels: section.key). */
  function flatConfig(cfg) {
    const out = {};
    for (const [sec, part] of Object.entries(cfg || {})) {
      if (part && typeof part === "object" && !Array.isArray(part)) for (const [k, v] of Object.entries(part)) out[sec + "." + k] = v;
      else out[sec] = part;
    }
    return out;
  }

  function valueText(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
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
           fraction, progressText, setBar, badge, owner, bestTop1, flash, poll, LABELS, label, flatConfig, valueText,
           chanceNote, gainSummary, latencyText, cpuText, speedupText, shipCard, signed };
})();
