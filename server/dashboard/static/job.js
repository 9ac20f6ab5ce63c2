/* Job page: polls GET /jobs/{id}, /metrics and /logs every 2 s while the job is live and redraws
 * what the run is doing (its phase from the first second), the progress bar, the four SVG charts,
 * the distillation gain, the log tail, the export report (report.js), the artifacts and the
 * resolved parameters next to their defaults. */
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
    const stepLoss = m.pts("loss", "step"), epochLoss = m.pts("loss", "epoch");
    Charts.line($("chart-loss"), { series: [
      { label: "train loss", points: stepLoss, format: f4 },
      { label: "epoch mean", points: epochLoss, markers: true, color: 1, format: f4 },
    ] });
    // The header shows the same number as the chart's legend, named the same way: the last epoch's
    // mean once an epoch has ended, the last step's loss before that.
    const last = (pts) => (pts.length ? pts[pts.length - 1][1] : undefined);
    shownLoss = epochLoss.length ? { label: "loss (epoch mean)", value: last(epochLoss) }
      : stepLoss.length ? { label: "loss (last step)", value: last(stepLoss) } : null;
    if (job) renderStats(job);
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
  const recipe = JSON.parse(document.getElementById("recipe").textContent);
  const PHASES = {
    "loading data": "Loading the data…", "building model": "Building the model…", "loading teacher": "Loading the teacher…",
    "evaluating teacher": "Evaluating the teacher on the validation images…",
    "teacher evaluated": "Teacher evaluated · starting the first epoch…", "first epoch": "First epoch running…",
  };

  /** What the job is doing right now, in words, from the first second on (fed by the run's events). */
  function statusText(j) {
    const p = j.progress || {};
    const m = j.metrics || {};
    const teacher = isNum(m.teacher_top1) ? ` · teacher top-1 ${m.teacher_top1.toFixed(1)}%` : "";
    if (j.state === "queued") return j.waiting_reason ? `Queued: ${j.waiting_reason}…`  // server.workers.waiting_reason
      : j.parent_id && !(j.config && j.config.teacher && j.config.teacher.checkpoint !== null)
        ? `Queued: waiting for teacher job #${j.parent_id} to finish…` : "Queued: waiting for a worker…";
    if (j.state === "running" && !p.step) return (PHASES[p.phase] || "Starting the training processes…") + teacher;
    if (j.state === "exporting") return "Training done · exporting and checking the int8 .ptl/.pte…";
    if (j.state === "cancelled") return "Cancelled" + (p.epoch ? ` at epoch ${p.epoch}/${p.epochs}` : " before training started");
    if (j.state === "failed") return "Failed" + (p.epoch ? ` in epoch ${p.epoch}/${p.epochs}` : " before the first epoch");
    return D.progressText(j) + teacher;
  }

  function renderJob(j) {
    if (j.kind === "sweep") { location.replace(`../sweeps/${j.id}`); return; }  // a sweep has its own page
    document.title = `${j.name} · job ${j.id} · distillery`;
    $("job-name").textContent = j.name || `Job ${j.id}`;
    const meta = [j.kind + (j.baseline_of ? ` (baseline: no teacher, for job #${j.baseline_of})` : ""), `owner ${D.owner(j)}`,
      `created ${D.age(j.created_at)} ago`];
    if (j.attempt > 1) meta.push(`attempt ${j.attempt}`);
    if (j.priority && j.priority !== "normal") meta.push(`${j.priority} priority`);
    if (j.worker) meta.push(`worker ${j.worker}`);
    if (j.launcher && j.launcher.job_id) meta.push(`${j.launcher.kind} job ${j.launcher.job_id}`);
    $("job-meta").textContent = meta.join(" · ");
    const st = $("job-state");
    const badge = D.badge(j.state, j.at_chance);
    st.textContent = badge.textContent;
    st.className = badge.className;
    st.title = badge.title || "";
    D.setBar($("job-progress"), j);
    const text = $("progress-text");
    text.textContent = statusText(j);
    text.classList.toggle("phase", j.state === "running" && !(j.progress || {}).step);
    renderStats(j);
    renderPhone(j);
    renderGain(j);
    renderShipCard(j);
    const chance = D.chanceNote(j);
    $("chance").hidden = !chance;
    $("chance").textContent = chance ? "At chance: " + chance : "";
    renderEnd(j);
    const live = ["queued", "running", "exporting"].includes(j.state);
    $("cancel-btn").hidden = !live || j.cancel_requested;
    $("retry-btn").hidden = !["failed", "cancelled"].includes(j.state);
    if (!live && cancelFlash) { D.flash(""); cancelFlash = false; }  // "Cancel requested." goes once the job has ended
    $("compare-link").href = `../compare?ids=${[j.id, j.baseline && j.baseline.job_id, j.baseline_of].filter(Boolean).join(",")}`;
    renderArtifacts(j.artifacts || []);
    if (lineageFor !== j.parent_id) { lineageFor = j.parent_id; renderLineage(j); }
    if (configFor !== j.id && j.config) { configFor = j.id; renderConfig(j.config); }
  }
  let configFor = null, cancelFlash = false, shownLoss = null, exportReport = null;

  function renderStats(j) {
    const m = j.metrics || {};
    const loss = shownLoss || { label: "loss", value: m.loss };
    const stats = [[`top-1 (${j.top1_checkpoint || "final"}, exported)`, D.num(j.top1, 1)], ["best epoch top-1", D.num(m.best_top1, 1)],
      ["teacher top-1", D.num(m.teacher_top1, 1) + (isNum(m.teacher_train_top1)
        ? ` (${m.teacher_train_top1.toFixed(1)} on training crops)` : "")], ["agreement", D.num(m.val_agreement, 1)],
      [loss.label, D.num(loss.value, 4)],
      ["images/s", D.num(m.img_per_s, 0)], ["ETA", D.TERMINAL.includes(j.state) ? "–" : D.duration((j.progress || {}).eta_s)]];
    $("job-stats").replaceChildren(...stats.map(([k, v]) =>
      D.el("div", { class: "stat", "data-stat": k }, D.el("dt", { text: k }), D.el("dd", { text: v }))));
  }

  const PHONE_FORMATS = { ptl: ".ptl (PyTorch Lite Interpreter)", pte: ".pte (ExecuTorch)" };
  /** Why the export made no .pte, from its report's "skipped" list (e.g. "model.pte: --no-pte given"). */
  function missingPteReason(report) {
    const line = ((report || {}).skipped || []).find((x) => String(x).startsWith("model.pte"));
    if (!line) return null;
    const why = String(line).replace(/^model\.pte:\s*/, "");
    return why.includes("--no-pte") ? "the export ran with --no-pte (DISTILLERY_EXPORT_ARGS on the worker)" : why;
  }

  /** "Download phone model" first on the page: the int8 .ptl (and .pte when made), or why a format is missing. */
  function renderPhone(j) {
    const box = $("phone-model");
    const arts = j.artifacts || [];
    const files = Object.keys(PHONE_FORMATS).map((f) => arts.filter((a) => a.format === f).pop()).filter(Boolean);
    if (!files.length) { box.hidden = true; return; }
    const pteWhy = files.some((a) => a.format === "pte") ? null : missingPteReason(exportReport);
    const key = files.map((a) => a.id).join(",") + "|" + (pteWhy || "");
    box.hidden = false;
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.replaceChildren(
      D.el("div", { class: "phone-head" }, D.el("h2", { text: "Phone model" }),
        D.el("div", { class: "phone-buttons" }, ...files.map((a) => D.el("a", { class: "button primary", href: a.download_url,
          download: a.filename || "", "data-testid": "phone-download-" + a.format,
          text: `Download phone model ${a.format === "ptl" ? "" : "(.pte) "}· ${D.bytes(a.size)}` })))),
      D.el("p", { class: "muted phone-what", text: files.map((a) => `${a.filename}: int8 ${PHONE_FORMATS[a.format]}`).join("; ") +
        ". Load the .ptl with _load_for_lite_interpreter (Android, iOS)." }),
      pteWhy ? D.el("p", { class: "muted", "data-testid": "pte-missing", text: `No .pte: ${pteWhy}.` }) : "");
  }

  /** The gain over the baseline with its interval and verdict; green only when significant (a
   * "no measurable difference" is grey, never a green banner). */
  function renderGain(j) {
    const box = $("gain");
    const b = j.baseline;
    const g = D.gainSummary(b, j.top1);
    if (!g) { box.hidden = true; return; }
    box.hidden = false;
    box.classList.toggle("unproven", !g.significant);
    box.classList.toggle("negative", g.significant && b.gain < 0);
    box.dataset.significant = String(g.significant);
    box.replaceChildren(g.text + " (baseline without a teacher: ",
      D.el("a", { href: String(b.job_id), text: `job #${b.job_id}` }), isNum(b.top1) ? `, ${b.top1.toFixed(1)}%)` : ")");
  }

  /** The ship card at the top: what to ship, beside the .ptl's Download button. */
  function renderShipCard(j) {
    const box = $("ship-card");
    const card = D.shipCard(j.ship_card, (id) => String(id));
    box.hidden = !card;
    if (!card) return;
    const key = JSON.stringify(j.ship_card);
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    const ptl = (j.artifacts || []).filter((a) => a.format === "ptl").pop();
    box.replaceChildren(D.el("div", { class: "ship-head" }, D.el("h2", { text: "What to ship" }),
      ptl ? D.el("a", { class: "button", href: ptl.download_url, download: ptl.filename || "", "data-testid": "ship-download",
        text: `Download ${ptl.filename || "model.ptl"} (${D.bytes(ptl.size)})` }) : null), card);
  }

  /** A failed job: its reason and what survived; a cancelled one: a grey note, not a red error. */
  function renderEnd(j) {
    const box = $("job-error");
    if (!["failed", "cancelled"].includes(j.state)) { box.hidden = true; return; }
    box.hidden = false;
    box.className = j.state === "cancelled" ? "notice-box" : "error-box";
    const reason = !j.error ? (j.state === "cancelled" ? "the run was stopped on request" : "no reason was recorded")
      : typeof j.error === "string" ? j.error : JSON.stringify(j.error);
    const kept = (j.artifacts || []).map((a) => a.format === "report" && (a.metadata || {}).rejected ? "the rejected export report (below)"
      : a.format === "checkpoint" ? `the trained checkpoint (artifact ${a.id}, ${D.bytes(a.size)}): usable as a teacher or to resume` : a.format);
    box.replaceChildren(
      D.el("strong", { text: j.state === "cancelled" ? "Cancelled: "
        : j.stop_reason === "lease_lost" ? "Failed (its worker was lost): " : "Failed: " }), reason,
      D.el("p", { class: "muted", style: "margin:6px 0 0", text: kept.length ? "What survived:" : (j.state === "failed"
        ? "Nothing survived: the run ended before its first checkpoint; the log below has the details." : "") }),
      kept.length ? D.el("ul", { class: "survived", "data-testid": "survived" }, ...kept.map((k) => D.el("li", { text: k }))) : "");
  }

  /** The full resolved config, each value next to the recipe default; changed rows marked. */
  function renderConfig(cfg) {
    const flat = D.flatConfig(cfg);
    const rows = Object.entries(flat).map(([k, v]) => {
      const [sec, key] = k.split(".");
      const spec = ((recipe[sec] || {})[key]) || null;
      const def = spec ? spec.default : undefined;
      const changed = spec && JSON.stringify(def ?? null) !== JSON.stringify(v ?? null);
      return D.el("tr", { class: changed ? "changed" : null, "data-param": k },
        D.el("th", {}, D.label(k), " ", D.label(k) === k ? "" : D.el("small", { text: k })),
        D.el("td", { class: "value", text: D.valueText(v) }),
        D.el("td", { class: "default", text: spec ? D.valueText(def) : "" }));
    });
    $("config-body").replaceChildren(...rows);
    applyOnlyChanged();
  }
  function applyOnlyChanged() {
    const only = $("only-changed").checked;
    for (const tr of $("config-body").children) tr.hidden = only && !tr.classList.contains("changed");
  }
  $("only-changed").addEventListener("change", applyOnlyChanged);

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
  // Artifacts in three groups, the phone files first: what ships, what a server runs, what training left.
  const ARTIFACT_GROUPS = [
    ["phone", "For the phone", ["ptl", "pte"]],
    ["server", "For a server", ["pt"]],
    ["training", "From training (checkpoint, caches, predictions, report)", null],
  ];
  const FORMAT_LABELS = { ptl: ".ptl · int8, Lite Interpreter", pte: ".pte · int8, ExecuTorch", pt: ".pt · TorchScript",
    checkpoint: "checkpoint", teacher_outputs: "teacher outputs (cache)", report: "export report", labels: "class labels" };
  const formatLabel = (a) => a.format === "predictions" ? `predictions (${a.name || "val"})` : FORMAT_LABELS[a.format] || a.format;
  const groupOf = (a) => (ARTIFACT_GROUPS.find(([, , fs]) => fs && fs.includes(a.format)) || ARTIFACT_GROUPS[2])[0];

  function artifactRow(a) {
    return D.el("tr", { "data-format": a.format, "data-group": groupOf(a) },
      D.el("td", {}, D.el("strong", { text: formatLabel(a) })),
      D.el("td", { "data-label": "kind", text: a.kind || "–" }),
      D.el("td", { class: "num", "data-label": "size", text: D.bytes(a.size) }),
      D.el("td", { class: "sha", "data-label": "sha256" }, D.el("code", { title: a.sha256 || "", text: a.sha256 || "–" })),
      D.el("td", { class: "action" }, D.el("a", { class: "button", href: a.download_url || `${D.API}/artifacts/${a.id}/download`,
        download: a.filename || "", "data-testid": "download-" + a.format, text: "Download" })));
  }

  function renderArtifacts(arts) {
    const body = $("artifacts-body");
    const key = arts.map((a) => a.id + ":" + a.sha256).join(",") + "|" + (job && job.state);
    if (body.dataset.key === key) return;
    body.dataset.key = key;
    if (!arts.length) {
      body.replaceChildren(D.el("tr", {}, D.el("td", { colspan: 5, class: "muted", text: "None yet." })));
    } else {
      body.replaceChildren(...ARTIFACT_GROUPS.flatMap(([name, title]) => {
        const rows = arts.filter((a) => groupOf(a) === name);
        return rows.length ? [D.el("tr", { class: "group", "data-group-head": name }, D.el("th", { colspan: 5, text: title })),
          ...rows.map(artifactRow)] : [];
      }));
    }
    const report = arts.filter((a) => a.format === "report").pop();
    if (report && report.id !== reportArtifactId) {
      reportArtifactId = report.id;
      loadReport(report);
    } else if (!report && job) {
      const why = job.state === "failed" ? "No report: the job failed before its export finished (see the reason above)."
        : job.state === "cancelled" ? "No report: the job was cancelled before its export."
        : job.state === "succeeded" ? "No report was registered for this job."
        : "No report yet: it appears when the export step has run.";
      $("report").replaceChildren(D.el("p", { class: "muted report-lead", style: "padding-bottom:10px", text: why }));
    }
  }

  async function loadReport(art) {
    const box = $("report");
    try {
      const report = await D.api(`/artifacts/${art.id}/download`);
      exportReport = report;
      if (job) renderPhone(job);
      box.replaceChildren(...Report.render(report, job, { rejected: (art.metadata || {}).rejected }));
    } catch (e) {
      box.replaceChildren(D.el("p", { class: "field-error", text: "Could not load the report: " + e.message }));
    }
  }

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
      cancelFlash = name === "cancel";
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
