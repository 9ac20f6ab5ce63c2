/* Webhooks page: GET/POST /webhooks, DELETE /webhooks/{id}, GET /webhooks/{id}/deliveries (server/api/webhooks.py).
 * The secret is shown once, in the answer to the registration, as the API gives it. */
"use strict";
(() => {
  const D = Distillery;
  const $ = (id) => document.getElementById(id);

  function deliveriesText(rows) {
    if (!rows.length) return "none yet";
    return rows.slice(0, 3).map((d) => `job ${d.job_id} ${d.payload.job.state}: ${d.state}` +
      (d.state === "delivered" ? "" : ` (${d.attempts} tries, last ${d.last_status || d.last_error || "–"})`)).join("; ");
  }

  async function load() {
    const hooks = D.items(await D.api("/webhooks?limit=200"));
    const body = $("webhooks-body");
    if (!hooks.length) {
      body.replaceChildren(D.el("tr", {}, D.el("td", { colspan: 4, class: "muted", text: "No webhooks yet." })));
      return;
    }
    const deliveries = await Promise.all(hooks.map((h) => D.api(`/webhooks/${h.id}/deliveries?limit=3`)
      .then((r) => D.items(r)).catch(() => [])));
    body.replaceChildren(...hooks.map((h, i) => D.el("tr", { "data-webhook-id": h.id },
      D.el("td", { class: "url" }, D.el("code", { text: h.url })),
      D.el("td", { "data-label": "added", text: `${D.age(h.created_at)} ago` }),
      D.el("td", { "data-label": "last events", "data-testid": "deliveries", text: deliveriesText(deliveries[i]) }),
      D.el("td", { class: "action" }, D.el("button", { type: "button", class: "danger", text: "Remove",
        onclick: () => remove(h) })))));
  }

  async function remove(hook) {
    if (!confirm(`Remove the webhook to ${hook.url}?`)) return;
    try {
      await D.api(`/webhooks/${hook.id}`, { method: "DELETE" });
      D.flash(`Removed the webhook to ${hook.url}.`);
      await load();
    } catch (e) { D.flash(`Could not remove it: ${e.message}`, true); }
  }

  $("add-webhook").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const p of document.querySelectorAll(".field-error")) p.hidden = true;
    const json = { url: $("webhook-url").value.trim() };
    if ($("webhook-secret").value) json.secret = $("webhook-secret").value;
    try {
      const hook = await D.api("/webhooks", { method: "POST", json });
      $("new-secret").textContent = `Added. Its secret, shown this once (your receiver checks each signature with it): ${hook.secret}`;
      $("new-secret").hidden = false;
      $("webhook-url").value = "";
      $("webhook-secret").value = "";
      await load();
    } catch (e) {
      const box = document.querySelector(`[data-error-for="${e.field}"]`) || $("flash");
      box.textContent = e.message;
      box.hidden = false;
    }
  });

  D.poll(async () => { await load(); return true; }, 5000);
})();
