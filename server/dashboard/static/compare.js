/* Compare view (/compare?ids=1,2,3): 2-6 jobs side by side. Params that differ (flattened configs),
 * val top-1 by epoch on one chart, the exported .ptl's top-1 / p50 latency / size from each report.
 * The terminal twin is `distillery diff A B` (distillery/client.py cmd_diff). */
"use strict";
(() => {
  const D = Distillery;
  const MAX = 6;
  const $ = (id) => document.getElementById(id);
  const url = new URL(location.href);
  let ids = (url.searchParams.get("ids") || "").split(",").map((x) => parseInt(x, 10)).filter((x) => x > 0);
  ids = [...new Set(ids)].slice(0, MAX);

  function setIds(next) {
    ids = [...new Set(next)].slice(0, MAX);
    url.searchParams.delete("ids");
    const rest = url.searchParams.toString();
    history.replaceState(null, "", `${url.pathname}?ids=${ids.join(",")}${rest ? "&" + rest : ""}`);  // commas kept readable
    load();
  }

  const table = (node, head, rows) => node.replaceChildren(
    D.el("thead", {}, D.el("tr", {}, ...head.map((h) => D.el("th", {}, h)))),
    D.el("tbody", {}, ...rows));

  async function one(id) {
    const job = await D.api(`/jobs/${id}`);
    const [metrics, report] = await Promise.all([
      D.api(`/jobs/${id}/metrics?name=val_top1`).catch(() => ({ series: {} })),
      (async () => {
        const art = (job.artifacts || []).filter((a) => a.format === "report").pop();
        return art ? D.api(`/artifacts/${art.id}/download`).catch(() => null) : null;
      })(),
    ]);
    return { job, curve: ((metrics.series || {}).val_top1 || []).map((p) => [p.epoch, p.value]), report };
  }

  async function load() {
    if (ids.length < 2) D.flash("Pick at least two jobs to compare (up to six).");
    else D.flash("");
    let runs;
    try { runs = await Promise.all(ids.map(one)); } catch (e) { D.flash("Could not load a job: " + e.message, true); return; }
    const head = () => ["", ...runs.map(({ job }) => D.el("span", {},
      D.el("a", { href: `jobs/${job.id}`, text: `#${job.id} ${job.name}` }), " ",
      D.el("button", { type: "button", class: "link-remove", title: "remove", "data-remove": job.id, text: "×",
        onclick: () => setIds(ids.filter((x) => x !== job.id)) })))];
    const row = (label, cells, attrs) => D.el("tr", attrs || {}, D.el("th", { text: label }), ...cells.map((c) => D.el("td", { class: "num" }, c)));
    table($("compare-jobs"), head(), [
      row("kind", runs.map(({ job }) => job.kind + (job.baseline_of ? " (baseline)" : ""))),
      row("state", runs.map(({ job }) => D.badge(job.state, job.at_chance))),
      row(`top-1 % (exported checkpoint)`, runs.map(({ job }) => D.num(job.top1, 1)), { "data-testid": "compare-top1" }),
      row("distillation gain", runs.map(({ job }) => {
        const g = D.gainSummary(job.baseline, job.top1);
        return g ? D.el("span", { class: g.significant ? "gain-significant" : "gain-unproven", text: g.text }) : "–";
      }), { "data-testid": "compare-gain" }),
    ]);
    const cards = runs.filter(({ job }) => job.ship_card);
    $("compare-ship").replaceChildren(...(cards.length ? cards.map(({ job }) => D.el("div", { class: "card", "data-job-id": job.id },
      D.el("h3", {}, D.el("a", { href: `jobs/${job.id}`, text: `#${job.id} ${job.name}` })), D.shipCard(job.ship_card)))
      : [D.el("p", { class: "muted", text: "No distill job here: the card compares a distilled student with its teacher and baseline." })]));
    const flats = runs.map(({ job }) => D.flatConfig(job.config || {}));
    const keys = [...new Set(flats.flatMap((f) => Object.keys(f)))];
    const differs = keys.filter((k) => new Set(flats.map((f) => JSON.stringify(f[k] ?? null))).size > 1);
    table($("compare-params"), head(), differs.length ? differs.map((k) => D.el("tr", { "data-param": k },
      D.el("th", {}, D.label(k), " ", D.label(k) === k ? "" : D.el("small", { text: k })),
      ...flats.map((f) => D.el("td", { class: "differs", text: D.valueText(f[k]) }))))
      : [D.el("tr", {}, D.el("td", { colspan: runs.length + 1, class: "muted", text: "The parameters are the same." }))]);
    Charts.line($("compare-chart"), { yFormat: (v) => v.toFixed(0), series: runs.map(({ job, curve }, i) => ({
      label: `#${job.id} ${job.name}`, color: i, markers: true, points: curve, format: (v) => v.toFixed(1) })) });
    const ex = runs.map(({ report }) => report ? Report.exported(report) : {});
    table($("compare-exported"), head(), [
      row("top-1 %", ex.map((e) => D.num(e.top1, 1))),
      row("p50 latency (p10–p90)", ex.map((e) => D.latencyText(e.latency))),
      row("measured on", runs.map(({ report }) => report ? D.cpuText(report.cpu) : "–")),
      row("size", ex.map((e) => typeof e.size === "number" ? Report.mb(e.size) + (e.ratio ? ` (${(e.ratio * 100).toFixed(0)}% of fp32)` : "") : "–")),
    ]);
  }

  async function pickList() {
    const sel = $("add-job");
    try {
      const jobs = D.items(await D.api("/jobs?limit=50&state=succeeded"));  // finished jobs have curves and an export
      for (const j of jobs) sel.append(D.el("option", { value: j.id, text: `#${j.id} ${j.name} (${j.kind}, ${j.state})` }));
    } catch (e) { /* the URL still works */ }
    sel.addEventListener("change", () => { if (sel.value) setIds([...ids, parseInt(sel.value, 10)]); sel.value = ""; });
  }

  pickList();
  load();
})();
