/* The export report (report.json) in words: which checkpoint was exported, the parity gate as a
 * sentence with a pass/fail badge, one row per model file (top-1 %, p50 latency, size in MB and its
 * ratio to fp32) with one precision per column, what was skipped, and every raw field behind a
 * disclosure. A model with nothing to quantize dynamically (a convnet teacher) says so instead of
 * showing an "int8" row the size of fp32. Used by the job page and the compare view. */
"use strict";

const Report = (() => {
  const D = Distillery;
  const ROWS = [["fp32", "fp32 (PyTorch)"], ["int8", "int8 (PyTorch, dynamic)"], ["ptl", ".ptl (Lite Interpreter)"],
                ["pte", ".pte (ExecuTorch)"]];
  const NOT_QUANTIZED = "not quantized: this model has no Linear layers to quantize dynamically";
  const isNum = (v) => typeof v === "number" && isFinite(v);
  const mb = (n) => isNum(n) ? (n / 1e6).toFixed(2) + " MB" : "–";
  const pct = (v) => isNum(v) ? v.toFixed(1) : "–";
  const ms = (v) => isNum(v) ? v.toFixed(1) + " ms" : "–";

  /** True when the int8 step quantized nothing (all Linear layers kept fp32, or there were none). */
  function notQuantized(report) {
    const q = report.quantization || {};
    return Array.isArray(q.quantized_linear) && q.quantized_linear.length === 0;
  }

  /** The rows shown, in order: [key, label, variant]; the int8 rows are dropped when nothing was quantized. */
  function rows(report) {
    const v = report.variants || {};
    const skipInt8 = notQuantized(report);
    return ROWS.filter(([k]) => v[k] && !(skipInt8 && k === "int8"))
      .map(([k, lbl]) => [k, skipInt8 && k !== "fp32" ? lbl.replace(")", ", fp32 weights)") : lbl, v[k]]);
  }

  /** The .ptl's numbers (the file an app ships), for the compare view and summaries. */
  function exported(report) {
    const v = (report && report.variants) || {};
    const ptl = v.ptl || v.pte || {};
    const fp32 = (report && report.model || {}).fp32_weights_bytes || (v.fp32 || {}).size_bytes;
    return { top1: ptl.top1, p50: (ptl.latency_ms || {}).p50, latency: ptl.latency_ms, size: ptl.size_bytes, ratio: fp32 && ptl.size_bytes ? ptl.size_bytes / fp32 : null };
  }

  function gateSentence(gate) {
    if (!gate) return ["", "no parity gate recorded"];
    if (gate.checked === false || gate.passed === null || gate.passed === undefined) {
      return ["skip", "Parity gate not checked: no validation images were given to the exporter."];
    }
    const drops = Object.entries(gate.drops || {}).map(([k, d]) => `${k === "ptl" ? ".ptl" : k === "pte" ? ".pte" : k} ${d >= 0 ? "−" : "+"}${Math.abs(d).toFixed(1)} pt`);
    const limit = isNum(gate.max_drop) ? `${gate.max_drop.toFixed(1)} pt` : "the limit";
    return gate.passed
      ? ["pass", `Passed: the exported model's top-1 is within ${limit} of fp32 (${pct(gate.fp32_top1)}%)` + (drops.length ? `: ${drops.join(", ")}.` : ".")]
      : ["fail", `Failed: the exported model lost more than ${limit} top-1 against fp32 (${pct(gate.fp32_top1)}%)` +
         (drops.length ? `: ${drops.join(", ")}` : "") + "; the export was rejected and no model file was published."];
  }

  function flat(obj, prefix, out) {
    for (const [k, v] of Object.entries(obj || {})) {
      const key = prefix ? prefix + "." + k : k;
      if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length <= 16 && prefix.split(".").length < 3) flat(v, key, out);
      else out[key] = v;
    }
    return out;
  }

  const spread = (lat) => isNum(lat.p10) && isNum(lat.p90) ? `${lat.p10.toFixed(2)}–${lat.p90.toFixed(2)} ms` : "–";

  /** "int8 against fp32 in the same runtime: eager PyTorch 2.10x faster (1.90–2.30), …; against fp32 eager: …",
   * each ratio with its range over both p10–p90 spreads ("the same speed" when they overlap). */
  function speedups(latency) {
    const cmp = (latency || {}).int8_vs_fp32;
    if (!cmp) return null;
    const same = [["eager", "eager PyTorch"], ["lite_interpreter", "the Lite Interpreter (.ptl)"], ["executorch", "ExecuTorch (.pte)"]]
      .filter(([k]) => (cmp.same_runtime || {})[k]).map(([k, words]) => `${words} ${D.speedupText(cmp.same_runtime[k])}`);
    const names = { int8: "int8 eager", ptl: ".ptl", pte: ".pte" };
    const eager = Object.entries(cmp.vs_fp32_eager || {}).filter(([, e]) => e)
      .map(([k, e]) => `${names[k] || k} ${D.speedupText(e)}`);
    const parts = [];
    if (same.length) parts.push(`int8 against fp32 in the same runtime: ${same.join(", ")}`);
    if (eager.length) parts.push(`against fp32 eager: ${eager.join(", ")}`);
    return parts.length ? `Speed-up (fp32 median / int8 median, range over both spreads): ${parts.join("; ")}.` +
      (latency.enough_runs === false ? ` Fewer than ${latency.min_runs} timed runs: the spread is rough.` : "") : null;
  }

  /** The report as DOM nodes. ``job`` (optional) names the exported checkpoint. */
  function render(report, job, opts) {
    if (!report || typeof report !== "object") return [D.el("pre", { text: String(report) })];
    const out = [];
    const rejected = opts && opts.rejected;
    const which = job ? `Exported from the ${job.top1_checkpoint || "final"} checkpoint (last epoch; not the best epoch, not the EMA)` +
      (isNum(job.top1) ? `: val top-1 ${job.top1.toFixed(1)}% during training.` : ".") : "";
    if (rejected) out.push(D.el("p", { class: "report-lead", text: "This report was rejected by the parity gate; it is kept so you can see why." }));
    else if (which) out.push(D.el("p", { class: "report-lead muted", "data-testid": "exported-checkpoint", text: which }));
    const [verdict, sentence] = gateSentence(report.gate);
    out.push(D.el("div", { class: "gate", "data-testid": "parity-gate" },
      D.el("span", { class: "badge " + verdict, text: verdict === "pass" ? "PASS" : verdict === "fail" ? "FAIL" : "NOT CHECKED" }),
      D.el("span", { text: "Parity gate — " + sentence })));
    const fp32 = (report.model || {}).fp32_weights_bytes || ((report.variants || {}).fp32 || {}).size_bytes;
    const head = ["Model", "top-1 %", "top-5 %", "agrees with fp32 %", "p50 latency", "p10–p90 spread", "size", "size vs fp32"];
    const body = rows(report).map(([k, lbl, v]) => {
      const lat = v.latency_ms || {};
      const ratio = isNum(fp32) && isNum(v.size_bytes) && k !== "fp32" ? `${(v.size_bytes / fp32 * 100).toFixed(0)}%` : k === "fp32" ? "100%" : "–";
      return [k, [lbl, pct(v.top1), pct(v.top5), pct(v.agreement_top1), ms(lat.p50), spread(lat), mb(v.size_bytes), ratio]];
    });
    out.push(D.el("table", { class: "report cards", "data-testid": "report-table" },
      D.el("thead", {}, D.el("tr", {}, ...head.map((h, i) => D.el("th", { class: i ? "num" : null, text: h })))),
      D.el("tbody", {}, ...body.map(([k, cells]) => D.el("tr", { "data-variant": k },
        ...cells.map((c, i) => i ? D.el("td", { class: "num", "data-label": head[i], text: c }) : D.el("th", { text: c })))))));
    const notes = [];
    if (notQuantized(report)) notes.push(NOT_QUANTIZED + ".");
    const lat = ((report.variants || {}).ptl || {}).latency_ms || {};
    if (isNum(lat.threads)) {
      notes.push(`Latency: median and p10–p90 spread of ${lat.runs} runs of one image on ${lat.threads} CPU thread(s) ` +
        `(${lat.thread_pool || "torch"}), measured on ${D.cpuText(report.cpu)}; latencies whose spreads overlap are the same speed.`);
    }
    const speed = speedups(report.latency);
    if (speed) notes.push(speed);
    for (const s of report.skipped || []) if (!(notQuantized(report) && /^int8:/.test(s))) notes.push(s);
    if (notes.length) out.push(D.el("ul", { class: "report-notes", "data-testid": "report-notes" }, ...notes.map((n) => D.el("li", { text: n }))));
    const raw = Object.entries(flat(report, "", {})).map(([k, v]) => [k, D.valueText(v)]);
    out.push(D.el("details", { class: "report-details" }, D.el("summary", { text: `All report fields (${raw.length})` }),
      D.el("div", { class: "scroll" }, D.el("table", { class: "report", "data-testid": "report-details" },
        D.el("tbody", {}, ...raw.map(([k, v]) => D.el("tr", {}, D.el("th", { text: k }),
          D.el("td", { text: v.length > 80 ? v.slice(0, 80) + "…" : v, title: v.length > 80 ? v : null }))))))));
    return out;
  }

  return { render, exported, notQuantized, gateSentence, NOT_QUANTIZED, mb };
})();
