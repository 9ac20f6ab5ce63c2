/* Sweep page (/sweeps/<id>): the trials table (params, state, top-1, .ptl latency and size), an SVG
 * scatter of .ptl top-1 vs latency with the Pareto front marked, and "Promote" per finished trial
 * (POST /jobs/<sweep>/promote, with the page's CSRF header via Distillery.api). Data: GET
 * /jobs/<sweep> and /jobs/<sweep>/trials (server/api/sweeps.py), polled until the sweep ends. */
"use strict";
(() => {
  const D = Distillery;
  const NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const sweepId = parseInt($("sweep").dataset.jobId, 10);
  // What the sweep is doing now (worker/sweep.py stores the phase), in words.
  const SWEEP_PHASES = { "teacher outputs": "computing the teacher's outputs once for all trials",
    trials: "running trials" };
  const PARAMS = ["student_model", "distillation_type", "alpha", "tau", "lr", "epochs"];

  function s(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  }

  const acc = (t) => (typeof t.ptl_top1 === "number" ? t.ptl_top1 : t.top1);

  function scatter(svg, trials, front, promoted) {
    const W = Math.round(svg.getBoundingClientRect().width || 640), H = 300, L = 52, R = 16, T = 14, B = 40;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("role", "img");
    svg.replaceChildren();
    const pts = trials.filter((t) => typeof acc(t) === "number" && typeof t.latency_ms === "number");
    svg.dataset.points = pts.length;
    svg.dataset.front = front.length;
    if (!pts.length) {
      svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no exported trial yet"));
      return;
    }
    const xs = pts.flatMap((t) => [t.latency_ms, (t.latency || {}).p10, (t.latency || {}).p90].filter((v) => typeof v === "number"));
    const ys = pts.map(acc);
    const pad = (lo, hi) => (hi - lo < 1e-9 ? [lo - 1, hi + 1] : [lo - (hi - lo) * 0.08, hi + (hi - lo) * 0.08]);
    const [x0, x1] = pad(Math.min(...xs), Math.max(...xs)), [y0, y1] = pad(Math.min(...ys), Math.max(...ys));
    const fx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R), fy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
    const axes = s("g", { class: "grid" });
    for (let i = 0; i <= 4; i++) {
      const yv = y0 + ((y1 - y0) * i) / 4, xv = x0 + ((x1 - x0) * i) / 4;
      axes.append(s("line", { x1: L, x2: W - R, y1: fy(yv), y2: fy(yv) }));
      axes.append(s("text", { x: L - 6, y: fy(yv) + 4, "text-anchor": "end" }, yv.toFixed(1)));
      axes.append(s("text", { x: fx(xv), y: H - B + 16, "text-anchor": "middle" }, xv.toFixed(2)));
    }
    axes.append(s("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, ".ptl p50 latency (ms)"));
    axes.append(s("text", { x: 12, y: (T + H - B) / 2, transform: `rotate(-90 12 ${(T + H - B) / 2})`, "text-anchor": "middle" },
      "top-1 (%)"));
    svg.append(axes);
    const onFront = pts.filter((t) => front.includes(t.job_id)).sort((a, b) => a.latency_ms - b.latency_ms);
    if (onFront.length > 1) {
      svg.append(s("polyline", { class: "front-line", fill: "none", stroke: "currentColor", "stroke-width": 1.5,
        points: onFront.map((t) => `${fx(t.latency_ms)},${fy(acc(t))}`).join(" ") }));
    }
    for (const t of pts) {
      const isFront = front.includes(t.job_id);
      const lat = t.latency || {};
      if (typeof lat.p10 === "number" && typeof lat.p90 === "number") {  // the measured spread: differences inside it are noise
        svg.append(s("line", { x1: fx(lat.p10), x2: fx(lat.p90), y1: fy(acc(t)), y2: fy(acc(t)), stroke: "currentColor",
          "stroke-width": 1, opacity: 0.5, class: "spread", "data-job-id": t.job_id }));
      }
      const c = s("circle", { cx: fx(t.latency_ms), cy: fy(acc(t)), r: isFront ? 6 : 4.5,
        class: "trial-point" + (isFront ? " front" : ""), fill: isFront ? "currentColor" : "none", stroke: "currentColor",
        "stroke-width": 1.5, "data-job-id": t.job_id });
      c.append(s("title", {}, `trial ${t.number} (job #${t.job_id}): ${D.num(acc(t))}% at ${D.num(t.latency_ms, 3)} ms`));
      svg.append(c);
      if (promoted && promoted.job_id === t.job_id) {
        svg.append(s("circle", { cx: fx(t.latency_ms), cy: fy(acc(t)), r: 10, fill: "none", stroke: "currentColor",
          "stroke-width": 1, class: "promoted-ring" }));
      }
      svg.append(s("text", { x: fx(t.latency_ms) + 8, y: fy(acc(t)) - 6, class: "point-label" }, `#${t.number}`));
    }
  }

  function paramText(p) {
    return PARAMS.filter((k) => p[k] !== undefined && p[k] !== null)
      .map((k) => `${k}=${typeof p[k] === "number" && !Number.isInteger(p[k]) ? p[k].toPrecision(3) : p[k]}`).join(", ");
  }

  async function promote(trial) {
    try {
      await D.api(`/jobs/${sweepId}/promote`, { method: "POST", json: { job_id: trial.job_id } });
      D.flash(`Promoted trial ${trial.number} (job #${trial.job_id}).`);
      await load();
    } catch (e) {
      D.flash(`Could not promote: ${e.message}`, true);
    }
  }

  function table(trials, fronts, promoted) {
    const head = ["#", "job", "state", "parameters", "val top-1", ".ptl top-1", "p50 ms (p10–p90)", "size", "front", ""];
    const rows = trials.map((t) => {
      const marks = [fronts.latency.includes(t.job_id) ? "latency" : null, fronts.size.includes(t.job_id) ? "size" : null]
        .filter(Boolean).join(", ");
      const isPromoted = promoted && promoted.job_id === t.job_id;
      const action = t.state === "succeeded" && t.ptl_artifact
        ? D.el("button", { type: "button", class: "promote-btn", "data-job-id": t.job_id, disabled: isPromoted,
          onclick: () => promote(t) }, isPromoted ? "Promoted" : "Promote")
        : null;
      // data-label: on a phone each trial is a card and each value carries its column's name (dashboard.css).
      return D.el("tr", { "data-job-id": t.job_id, "data-state": t.state, class: isPromoted ? "promoted" : null },
        D.el("td", { class: "trial-no", "data-label": "trial" }, String(t.number)),
        D.el("td", {}, D.el("a", { href: `../jobs/${t.job_id}`, text: `#${t.job_id}` })),
        D.el("td", {}, D.badge(t.state, t.at_chance)),
        D.el("td", { class: "params", title: t.error || "" }, paramText(t.params || {})),
        D.el("td", { "data-label": head[4] }, D.num(t.top1)), D.el("td", { "data-label": head[5] }, D.num(t.ptl_top1)),
        D.el("td", { "data-label": "p50 ms" }, t.latency ? D.latencyText(t.latency) : D.num(t.latency_ms, 3)),
        D.el("td", { "data-label": head[7] }, D.bytes(t.size_bytes)), D.el("td", { class: "front-mark", "data-label": head[8] }, marks || "–"),
        D.el("td", { class: "action" }, action));
    });
    $("sweep-trials").replaceChildren(D.el("thead", {}, D.el("tr", {}, ...head.map((h) => D.el("th", {}, h)))),
      D.el("tbody", {}, ...rows));
  }

  async function load() {
    const [job, sum] = await Promise.all([D.api(`/jobs/${sweepId}`), D.api(`/jobs/${sweepId}/trials`)]);
    $("sweep-name").textContent = job.name;
    $("sweep-state").replaceWith(Object.assign(D.badge(job.state), { id: "sweep-state" }));
    $("sweep-meta").textContent = `${D.owner(job)} · study ${sum.study} · objective: ${sum.objective} · ` +
      `pruner: ${(sum.pruner || {}).type} · ${sum.parallel} at a time`;
    D.setBar($("sweep-progress"), job);
    $("progress-text").textContent = `${sum.finished} of ${sum.trials_requested} trials finished` +
      (SWEEP_PHASES[(job.progress || {}).phase] && !D.TERMINAL.includes(job.state) ? ` · ${SWEEP_PHASES[job.progress.phase]}` : "");
    const counts = Object.entries(sum.counts || {}).map(([k, v]) => `${v} ${k}`).join(", ") || "–";
    const prep = sum.teacher_outputs_job;
    $("sweep-stats").replaceChildren(
      D.el("dt", {}, "Trials"), D.el("dd", {}, counts),
      D.el("dt", {}, "Best val top-1"), D.el("dd", {}, sum.best ? `${D.num(sum.best.top1)}% (trial ${sum.best.number})` : "–"),
      D.el("dt", {}, "Teacher outputs"), D.el("dd", {}, prep ? D.el("a", { href: `../jobs/${prep.id}`, text: `#${prep.id} ${prep.state}` }) : "–"));
    const p = sum.promoted;
    $("promoted").hidden = !p;
    if (p) $("promoted").textContent = `Promoted: trial ${p.trial_number} (job #${p.job_id}), by ${p.by} at ${p.at}.`;
    $("sweep-error").hidden = !job.error;
    $("sweep-error").textContent = job.error || "";
    $("cancel-btn").hidden = D.TERMINAL.includes(job.state);
    const card = D.shipCard(job.ship_card, (id) => `../jobs/${id}`);
    $("sweep-ship").hidden = !card;
    if (card && $("sweep-ship").dataset.key !== JSON.stringify(job.ship_card)) {
      $("sweep-ship").dataset.key = JSON.stringify(job.ship_card);
      $("sweep-ship").replaceChildren(D.el("h2", { text: "What to ship" }), card);
    }
    scatter($("sweep-scatter"), sum.trials, sum.fronts.latency, p);
    table(sum.trials, sum.fronts, p);
    const cpu = (sum.trials.find((t) => t.cpu) || {}).cpu;
    $("sweep-cpu").textContent = cpu ? `Latency measured on ${D.cpuText(cpu)}.` : "";
    $("size-front").textContent = sum.fronts.size.map((id) => `#${id}`).join(" → ") || "–";
    return !D.TERMINAL.includes(job.state);
  }

  $("cancel-btn").addEventListener("click", async () => {
    try { await D.api(`/jobs/${sweepId}/cancel`, { method: "POST" }); await load(); } catch (e) { D.flash(e.message, true); }
  });
  D.poll(async () => { try { return await load(); } catch (e) { D.flash(e.message, true); return e.status !== 404; } }, 3000);
})();
