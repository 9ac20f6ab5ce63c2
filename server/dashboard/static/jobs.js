/* Jobs page: one page of jobs from GET /jobs?limit&offset (filters and pagination done by the API), refreshed
 * every few seconds. Only the visible page is ever fetched, so it stays fast with thousands of jobs.
 * Filters and page live in the URL so a reload or a shared link shows the same view. */
"use strict";
(() => {
  const D = Distillery;
  const PER_PAGE = 25;
  const body = document.getElementById("jobs-body");
  const info = document.getElementById("page-info");
  const prev = document.getElementById("prev-page");
  const next = document.getElementById("next-page");
  const stateSel = document.getElementById("filter-state");
  const kindSel = document.getElementById("filter-kind");

  const url = new URL(location.href);
  let page = Math.max(1, parseInt(url.searchParams.get("page") || "1", 10) || 1);
  stateSel.value = url.searchParams.get("state") || "";
  kindSel.value = url.searchParams.get("kind") || "";

  function syncUrl() {
    const u = new URL(location.href);
    for (const [k, v] of [["state", stateSel.value], ["kind", kindSel.value], ["page", page > 1 ? page : ""]]) {
      if (v) u.searchParams.set(k, v); else u.searchParams.delete(k);
    }
    history.replaceState(null, "", u);
  }

  function row(job) {
    const bar = D.el("div", { class: "progress" }, D.el("div", { class: "fill" }));
    D.setBar(bar, job);
    const top1 = D.bestTop1(job);
    return D.el("tr", { "data-job-id": job.id },
      D.el("td", {}, D.el("a", { href: (job.kind === "sweep" ? "sweeps/" : "jobs/") + job.id, text: "#" + job.id })),
      D.el("td", { class: "name" }, D.el("a", { href: (job.kind === "sweep" ? "sweeps/" : "jobs/") + job.id,
        text: job.name || "(unnamed)" })),
      D.el("td", { text: job.kind }),
      D.el("td", { title: job.waiting_reason || null }, D.badge(job.state, job.at_chance),
        job.priority && job.priority !== "normal" ? D.el("small", { class: "muted", text: " " + job.priority }) : null),
      D.el("td", { class: "progress-col" }, bar, D.el("small", { class: "muted",
        text: job.state === "queued" && job.waiting_reason ? job.waiting_reason : D.progressText(job) })),
      D.el("td", { class: "num", title: job.at_chance ? "chance level: the model learned nothing" : null,
        text: top1 === null ? "–" : D.num(top1, 1) + (job.at_chance ? " (chance)" : "") }),
      D.el("td", { text: D.owner(job) }),
      D.el("td", { title: job.created_at || "", text: D.age(job.created_at) }));
  }

  async function load() {
    const q = new URLSearchParams();
    if (stateSel.value) q.set("state", stateSel.value);
    if (kindSel.value) q.set("kind", kindSel.value);
    q.set("limit", PER_PAGE);
    q.set("offset", (page - 1) * PER_PAGE);
    let payload;
    try {
      payload = await D.api("/jobs?" + q.toString());
    } catch (e) {
      body.replaceChildren(D.el("tr", {}, D.el("td", { colspan: 8, class: "field-error", text: "Could not load jobs: " + e.message })));
      return;
    }
    const jobs = D.items(payload);
    const total = payload && typeof payload.total === "number" ? payload.total : null;
    if (!jobs.length && page > 1 && total !== null) { page = Math.max(1, Math.ceil(total / PER_PAGE)); syncUrl(); return load(); }
    body.replaceChildren(...(jobs.length ? jobs.map(row)
      : [D.el("tr", {}, D.el("td", { colspan: 8, class: "muted", text: "No jobs match." }))]));
    const pages = total !== null ? Math.max(1, Math.ceil(total / PER_PAGE)) : null;
    const hasNext = payload && payload.next_offset !== undefined ? payload.next_offset !== null
      : pages !== null ? page < pages : jobs.length === PER_PAGE;
    info.textContent = pages !== null ? `page ${page} of ${pages} · ${total} jobs` : `page ${page}`;
    prev.disabled = page <= 1;
    next.disabled = !hasNext;
  }

  let stop = null;
  function restart() {
    syncUrl();
    if (stop) stop();
    stop = D.poll(load, 4000);
  }

  prev.addEventListener("click", () => { if (page > 1) { page--; restart(); } });
  next.addEventListener("click", () => { page++; restart(); });
  for (const sel of [stateSel, kindSel]) {
    sel.addEventListener("change", () => { page = 1; restart(); });
  }
  restart();
})();
