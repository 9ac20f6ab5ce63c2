/* Job page: polls GET /jobs/{id}, /metrics and /logs every 2 s while the job is live and redraws
 * the progress bar, the four SVG charts, the log tail, the export report and the artifacts. */
"use strict";
(() => {
  const D = Distillery;
  const root = document.getElementById("job");
  const id = root.dataset.jobId;
  const $ = (sel) => document.getElementById(sel);
  const POLL_MS = 2000;
  let job = null;
  let lastMetricsCount = -1;
  let reportArtifactId = null;
  let lineageFor = undefined;

  // ------------------------------------------------------------------ metrics normalisation
  const isNum = (v) => typeof v === "number" && isFinite(v);
  const STEP_SERIES = ["loss", "lr", "img_per_s"];

  /** Turn whatever /metrics returns into a lookup: pts(name, "step"|"epoch") -> [[x, y], ...], where
   * x is in (fractional) epochs. Accepts the API's {series: {name: [{step, epoch, value}]}} with
   * global steps, or a list of metrics.jsonl events ({event: "step"|"epoch", ...}). */
  function metricsLookup(payload, spe) {
    if (payload && payload.series && typeof payload.series === "object") {
      const series = payload.series;
      return {
        count: Object.values(series).reduce((a, l) => a + l.length, 0),
        pts(name, level) {
          const list = (series[name] || []).filter((p) => isNum(p.value));
          if (level === "epoch") {
            if (STEP_SERIES.includes(name)) return (series["epoch_" + name] || series["train_" + name] || [])
              .filter((p) => isNum(p.value)).map((p) => [p.epoch, p.value]);
            return list.map((p) => [p.epoch, p.value]);
          }
          // An epoch event repeats loss/lr at the epoch's last global step: keep the step's own value.
          const seen = new Set();
          return list.filter((p) => !seen.has(p.step) && seen.add(p.step)).map((p) => [spe ? p.step / spe : p.step, p.value]);
        },
        last(name) { const l = series[name] || []; return l.length ? l[l.length - 1].value : undefined; },
      };
    }
    const all = D.items(payload);
    const steps = all.filter((e) => e.event === "step");
    const epochs = all.filter((e) => e.event === "epoch");
    const stepX = (e) => (e.epoch || 1) - 1 + (e.steps_per_epoch ? (e.step || 0) / e.steps_per_epoch : 0);
    return {
      count: all.length,
      pts(name, level) {
        const [list, xf] = level === "epoch" ? [epochs, (e) => e.epoch] : [steps, stepX];
        return list.filter((e) => isNum(e[name])).map((e) => [xf(e), e[name]]);
      },
      last(name) { const v = all.map((e) => e[name]).filter(isNum); return v.length ? v[v.length - 1] : undefined; },
    };
  }

  const TOP1_SERIES = [
    ["val_top1", "averaged heads", 0],
    ["val_top1_cls", "class head", 1],
    ["val_top1_dist", "distillation head", 2],
    ["val_top1_ema", "EMA", 5],
  ];

  function drawCharts(m) {
    const f4 = (v) => v.toFixed(4), f2 = (v) => v.toFixed(2);
    Charts.line($("chart-loss"), { series: [
      { label: "train loss", points: m.pts("loss", "step"), format: f4 },
      { label: "epoch mean", points: m.pts("loss", "epoch"), markers: true, color: 1, format: f4 },
    ] });
    const top1 = TOP1_SERIES.map(([k, label, color]) => ({ label, color, markers: true, points: m.pts(k, "epoch"), format: f2 }));
    const teacherTop1 = isNum(m.last("teacher_top1")) ? m.last("teacher_top1") : (job && job.metrics || {}).teacher_top1;
    const xs = top1.flatMap((se) => se.points.map((p) => p[0]));
    if (isNum(teacherTop1)) {
      const lo = Math.min(0, ...xs), hi = Math.max(1, ...xs);
      top1.push({ label: "teacher", color: 3, dashed: true, points: [[lo, teacherTop1], [hi, teacherTop1]], format: f2 });
    }
    top1.push({ label: "agreement with teacher", color: 4, dashed: true, markers: true,
                points: m.pts("val_agreement", "epoch"), format: (v) => v.toFixed(1) });
    Charts.line($("chart-top1"), { series: top1, yFormat: (v) => v.toFixed(0) });
    Charts.line($("chart-lr"), { series: [{ label: "lr", points: m.pts("lr", "step"), format: (v) => v.toExponential(2) }] });
    Charts.line($("chart-speed"), { series: [{ label: "images/s", points: m.pts("img_per_s", "step"), format: (v) => v.toFixed(0) }] });
  }

  // ------------------------------------------------------------------ job header and stats
  function renderJob(j) {
    document.title = `${j.name} · job ${j.id} · distillery`;
    $("job-name").textContent = j.name || `Job ${j.id}`;
    const meta = [j.kind, `owner ${D.owner(j)}`, `created ${D.age(j.created_at)} ago`];
    if (j.attempt > 1) meta.push(`attempt ${j.attempt}`);
    if (j.worker) meta.push(`worker ${j.worker}`);
    $("job-meta").textContent = meta.join(" · ");
    const st = $("job-state");
    st.textContent = j.state;
    st.className = "badge state-" + j.state;
    D.setBar($("job-progress"), j);
    $("progress-text").textContent = j.state === "queued" ? "Queued: waiting for a worker…"
      : j.state === "exporting" ? "Training done · exporting int8 .ptl/.pte…"
      : D.progressText(j);
    const m = j.metrics || {};
    const stats = [["loss", D.num(m.loss, 4)], ["val top-1", D.num(m.val_top1)], ["best top-1", D.num(D.bestTop1(j))],
      ["teacher top-1", D.num(m.teacher_top1)], ["agreement", D.num(m.val_agreement, 1)],
      ["images/s", D.num(m.img_per_s, 0)], ["ETA", D.TERMINAL.includes(j.state) ? "–" : D.duration((j.progress || {}).eta_s)]];
    $("job-stats").replaceChildren(...stats.map(([k, v]) =>
      D.el("div", { class: "stat" }, D.el("dt", { text: k }), D.el("dd", { text: v }))));
    const err = $("job-error");
    err.hidden = !j.error;
    err.textContent = j.error ? "Error: " + (typeof j.error === "string" ? j.error : JSON.stringify(j.error)) : "";
    $("cancel-btn").hidden = !["queued", "running", "exporting"].includes(j.state) || j.cancel_requested;
    $("retry-btn").hidden = !["failed", "cancelled"].includes(j.state);
    renderArtifacts(j.artifacts || []);
    if (lineageFor !== j.parent_id) { lineageFor = j.parent_id; renderLineage(j); }
  }

  /** teacher -> student: the parent job (pipelines set parent_id) and, for a teacher, the distill
   * jobs among the latest 200 that name it as parent (the API has no parent filter). */
  async function renderLineage(j) {
    const box = $("lineage");
    const parts = [];
    if (j.parent_id) {
      let parent = null;
      try { parent = await D.api(`/jobs/${j.parent_id}`); } catch (e) { /* not visible to this user */ }
      parts.push(D.el("a", { href: `${j.parent_id}`, "data-testid": "parent-link",
        text: parent ? `${parent.kind} #${parent.id} ${parent.name}` : `job #${j.parent_id}` }), " → ");
    }
    let children = [];
    if (j.kind === "teacher") {
      try {
        children = D.items(await D.api("/jobs?kind=distill&limit=200")).filter((c) => c.parent_id === j.id);
      } catch (e) { /* lineage is a nicety */ }
    }
    if (!parts.length && !children.length) { box.hidden = true; return; }
    parts.push(D.el("strong", { text: `${j.kind} #${j.id} ${j.name}` }));
    children.forEach((c, i) => parts.push(i ? ", " : " → ", D.el("a", { href: `${c.id}`, "data-testid": "child-link",
      text: `${c.kind} #${c.id} ${c.name}` })));
    box.replaceChildren(D.el("span", { class: "muted", text: "Lineage: " }), ...parts);
    box.hidden = false;
  }

  // ------------------------------------------------------------------ artifacts and report
  function renderArtifacts(arts) {
    const body = $("artifacts-body");
    const key = arts.map((a) => a.id + ":" + a.sha256).join(",");
    if (body.dataset.key === key) return;
    body.dataset.key = key;
    if (!arts.length) {
      body.replaceChildren(D.el("tr", {}, D.el("td", { colspan: 5, class: "muted", text: "None yet." })));
      return;
    }
    body.replaceChildren(...arts.map((a) => D.el("tr", { "data-format": a.format },
      D.el("td", {}, D.el("strong", { text: a.format })),
      D.el("td", { text: a.kind || "–" }),
      D.el("td", { class: "num", text: D.bytes(a.size) }),
      D.el("td", { class: "sha" }, D.el("code", { title: a.sha256 || "", text: a.sha256 || "–" })),
      D.el("td", {}, D.el("a", { class: "button", href: a.download_url || `${D.API}/artifacts/${a.id}/download`,
        download: a.filename || "", "data-testid": "download-" + a.format, text: "Download" })))));
    const report = arts.filter((a) => a.format === "report").pop();
    if (report && report.id !== reportArtifactId) {
      reportArtifactId = report.id;
      loadReport(report);
    }
  }

  async function loadReport(art) {
    const box = $("report");
    try {
      const report = await D.api(`/artifacts/${art.id}/download`);
      box.replaceChildren(...Report.render(report));
    } catch (e) {
      box.replaceChildren(D.el("p", { class: "field-error", text: "Could not load the report: " + e.message }));
    }
  }

  /** Defensive rendering of report.json: every table-like part (a dict of dicts or a list of dicts,
   * `variants` first) becomes a table, every other value a row of a details table. */
  const Report = {
    PREFERRED: ["top1", "top5", "agreement_top1", "latency_ms.p50", "latency_ms.p90", "size_bytes", "bytes", "sha256", "file"],
    flat(obj, prefix, out, depth) {
      for (const [k, v] of Object.entries(obj || {})) {
        const key = prefix ? prefix + "." + k : k;
        if (v && typeof v === "object" && !Array.isArray(v) && depth < 1 && Object.keys(v).length <= 12) this.flat(v, key, out, depth + 1);
        else out[key] = v;
      }
      return out;
    },
    cell(v, key) {
      if (v === null || v === undefined) return "–";
      if (typeof v === "number") {
        if (/bytes|size/.test(key || "")) return D.bytes(v);
        const t = Number.isInteger(v) ? String(v) : (+v.toPrecision(4)).toString();
        return /(latency.*\.p\d+|_ms)$/.test(key || "") ? t + " ms" : t;
      }
      if (typeof v === "boolean") return v ? "yes" : "no";
      if (Array.isArray(v)) return v.length > 6 ? `${v.length} items` : v.map((x) => typeof x === "object" ? JSON.stringify(x) : x).join(", ");
      if (typeof v === "object") return JSON.stringify(v);
      return String(v);
    },
    isRowMap(v) {
      if (Array.isArray(v)) return v.length > 0 && v.every((r) => r && typeof r === "object" && !Array.isArray(r));
      if (v && typeof v === "object") {
        const vals = Object.values(v);
        return vals.length > 0 && vals.every((r) => r && typeof r === "object" && !Array.isArray(r));
      }
      return false;
    },
    rowsOf(v) {
      return Array.isArray(v) ? v.map((r, i) => [String(r.name || r.format || r.variant || r.model || i + 1), r]) : Object.entries(v);
    },
    table(headers, rows, attrs) {
      return D.el("table", Object.assign({ class: "report" }, attrs),
        D.el("thead", {}, D.el("tr", {}, ...headers.map((h) => D.el("th", { text: h })))),
        D.el("tbody", {}, ...rows.map((r) => D.el("tr", {}, ...r.map((c, i) => D.el(i ? "td" : "th", { text: c, title: c.length > 24 ? c : null }))))));
    },
    render(report) {
      if (!report || typeof report !== "object") return [D.el("pre", { text: String(report) })];
      const keys = Object.keys(report);
      const tableKeys = keys.filter((k) => this.isRowMap(report[k])).sort((a, b) => (b === "variants") - (a === "variants"));
      const out = [];
      for (const k of tableKeys) {
        const rows = this.rowsOf(report[k]).map(([name, r]) => [name, this.flat(r, "", {}, 0)]);
        const cols = [];
        for (const [, r] of rows) for (const c of Object.keys(r)) if (!cols.includes(c)) cols.push(c);
        const rank = (c) => { const i = this.PREFERRED.indexOf(c); return i < 0 ? 99 : i; };
        cols.sort((a, b) => rank(a) - rank(b));
        out.push(D.el("h3", { class: "report-caption", text: k }));
        out.push(this.table(["", ...cols], rows.map(([name, r]) => [name, ...cols.map((c) => this.cell(r[c], c))]),
          { "data-testid": k === tableKeys[0] ? "report-table" : "report-" + k }));
      }
      const rest = this.flat(Object.fromEntries(keys.filter((k) => !tableKeys.includes(k)).map((k) => [k, report[k]])), "", {}, 0);
      const restRows = Object.entries(rest).map(([k, v]) => [k, this.cell(v, k)]);
      if (restRows.length) {
        out.push(D.el("details", { class: "report-details" }, D.el("summary", { text: `All report fields (${restRows.length})` }),
          this.table(["", "value"], restRows, { "data-testid": "report-details" })));
      }
      return out;
    },
  };

  // ------------------------------------------------------------------ polling
  async function refreshJob() {
    try {
      job = await D.api(`/jobs/${id}`);
    } catch (e) {
      if (e.status === 404) { D.flash(`Job ${id} does not exist or is not yours.`, true); return false; }
      throw e;
    }
    renderJob(job);
    return true;
  }

  async function refreshMetrics() {
    const payload = await D.api(`/jobs/${id}/metrics`);
    const m = metricsLookup(payload, (job && job.progress || {}).steps_per_epoch);
    if (m.count !== lastMetricsCount) { lastMetricsCount = m.count; drawCharts(m); }
  }

  async function refreshLogs() {
    let payload;
    try { payload = await D.api(`/jobs/${id}/logs`); } catch (e) { return; }
    let text = typeof payload === "string" ? payload
      : Array.isArray(payload) ? payload.join("\n")
      : payload && Array.isArray(payload.lines) ? payload.lines.join("\n")
      : payload && (payload.text ?? payload.log ?? payload.tail ?? payload.content);
    const pre = $("log-tail");
    const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    pre.textContent = text || "(no log output yet)";
    if (stick) pre.scrollTop = pre.scrollHeight;
  }

  // Every 2 s while the job is live. Once it has ended (and two more rounds have picked up the last
  // metrics, log lines and artifacts), only the job itself every 10 s, to notice a retry.
  let finalRounds = 0, tick = 0;
  D.poll(async () => {
    tick++;
    const settled = finalRounds >= 2;
    if (settled && tick % 5) return true;
    if ((await refreshJob()) === false) return false;
    if (D.TERMINAL.includes(job.state)) finalRounds++;
    else finalRounds = 0;
    if (!settled || finalRounds === 0) await Promise.all([refreshMetrics().catch(console.error), refreshLogs()]);
    return true;
  }, POLL_MS);

  async function action(name) {
    const btn = $(name + "-btn");
    btn.disabled = true;
    try {
      const res = await D.api(`/jobs/${id}/${name}`, { method: "POST" });
      if (name === "retry" && res && res.id && String(res.id) !== String(id)) { location.href = String(res.id); return; }
      D.flash(name === "cancel" ? "Cancel requested." : "Job queued again.");
      finalRounds = 0;
      await refreshJob();
      if (name === "retry") location.reload();
    } catch (e) {
      D.flash(`Could not ${name}: ${e.message}`, true);
    } finally {
      btn.disabled = false;
    }
  }
  $("cancel-btn").addEventListener("click", () => { if (confirm("Cancel this job?")) action("cancel"); });
  $("retry-btn").addEventListener("click", () => action("retry"));
})();
