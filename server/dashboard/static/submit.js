/* Submit page: a form generated from the config schema's defaults (the DeiT recipe, embedded by the
 * view), posted as {kind, name, config} to POST /jobs. A 4xx error's dotted `field` is shown next to
 * the input it names. */
"use strict";
(() => {
  const D = Distillery;
  const recipe = JSON.parse(document.getElementById("recipe").textContent);
  const choices = recipe._choices || {};
  const form = document.getElementById("submit-form");
  const sectionsBox = document.getElementById("sections");
  const DISTILL_ONLY = ["student", "distillation"];
  const TITLES = { data: "Data", student: "Student (DeiT)", teacher: "Teacher (RegNetY)", distillation: "Distillation",
                   train: "Training recipe", resources: "Resources" };
  const HINTS = {
    "data.train": "ImageFolder root on the server, or pick a dataset above",
    "teacher.checkpoint": "distill: a teacher artifact id, a server path, or 'timm'",
    "student.patch_size": "empty: the model's own (16)",
    "train.aa": "empty: no RandAugment",
    "train.batch_size": "per process",
  };

  const kind = () => form.querySelector("input[name=kind]:checked").value;
  const allows = (type, t) => type.split("|").map((s) => s.trim()).includes(t);

  function input(path, spec) {
    const type = spec.type;
    const wrap = D.el("div", { class: "field", "data-wrap": path });
    const label = D.el("label", { for: "f-" + path, text: path.split(".")[1] });
    let inp;
    if (choices[path]) {
      inp = D.el("select", { id: "f-" + path }, ...choices[path].map((c) => D.el("option", { value: c, text: c })));
      inp.value = spec.default;
    } else if (type === "bool") {
      inp = D.el("input", { id: "f-" + path, type: "checkbox" });
      inp.checked = !!spec.default;
      wrap.classList.add("check");
    } else if ((allows(type, "int") || allows(type, "float")) && !allows(type, "str")) {
      inp = D.el("input", { id: "f-" + path, type: "number", step: allows(type, "float") ? "any" : "1", inputmode: "decimal" });
      inp.value = spec.default ?? "";
    } else {
      inp = D.el("input", { id: "f-" + path, type: "text", spellcheck: "false" });
      inp.value = spec.default ?? "";
    }
    inp.dataset.field = path;
    inp.dataset.type = type;
    inp.name = path;
    if (spec.required) inp.required = true;
    const nullable = allows(type, "None");
    wrap.append(label, inp);
    const hint = HINTS[path] || (nullable && type !== "bool" ? "empty: null" : "");
    if (hint) wrap.append(D.el("small", { class: "hint", text: hint }));
    wrap.append(D.el("p", { class: "field-error", "data-error-for": path, hidden: true }));
    return wrap;
  }

  function build() {
    for (const [section, fields] of Object.entries(recipe)) {
      if (section.startsWith("_")) continue;
      const fs = D.el("fieldset", { class: "card", "data-section": section },
        D.el("legend", { text: TITLES[section] || section }),
        D.el("p", { class: "field-error", "data-error-for": section, hidden: true }));
      const grid = D.el("div", { class: "grid" });
      for (const [key, spec] of Object.entries(fields)) grid.append(input(section + "." + key, spec));
      fs.append(grid);
      sectionsBox.append(fs);
    }
  }

  function value(inp) {
    const type = inp.dataset.type;
    const nullable = allows(type, "None");
    if (inp.type === "checkbox") return inp.checked;
    const raw = inp.value.trim();
    if (raw === "") return nullable ? null : (allows(type, "str") ? "" : null);
    if (inp.type === "number" || (allows(type, "int") && /^-?\d+$/.test(raw))) {
      const n = Number(raw);
      if (!isNaN(n)) return n;
    }
    return raw;
  }

  function config() {
    const k = kind();
    const cfg = { kind: k };
    for (const inp of sectionsBox.querySelectorAll("[data-field]")) {
      const [section, key] = inp.dataset.field.split(".");
      if (k === "teacher" && DISTILL_ONLY.includes(section)) continue;
      (cfg[section] = cfg[section] || {})[key] = value(inp);
    }
    return cfg;
  }

  function applyKind() {
    const k = kind();
    for (const s of DISTILL_ONLY) {
      const fs = sectionsBox.querySelector(`[data-section=${s}]`);
      if (fs) fs.hidden = k === "teacher";
    }
    for (const n of form.querySelectorAll("[data-kind]")) n.hidden = n.dataset.kind !== k;
    const pipeline = k === "distill" && document.getElementById("pipeline").checked;
    document.getElementById("teacher-from-field").hidden = k !== "distill" || pipeline;
    const ck = form.querySelector('[data-field="teacher.checkpoint"]');
    if (ck) { ck.disabled = pipeline; if (pipeline) ck.value = ""; }
    const tm = form.querySelector('[data-field="teacher.model"]');
    // A teacher job trains the teacher network itself: default to a small RegNetY.
    if (k === "teacher" && tm && tm.value === recipe.teacher.model.default) tm.value = "regnety_002";
  }

  function clearErrors() {
    for (const p of form.querySelectorAll(".field-error")) { p.hidden = true; p.textContent = ""; }
    for (const n of form.querySelectorAll(".invalid")) n.classList.remove("invalid");
  }

  /** Put the API's error next to the field it names: train.batch_size, then its section, then the top. */
  function showError(err) {
    let field = (err.field || "").replace(/^config\./, "");
    let box = null;
    for (let f = field; f && !box; f = f.includes(".") ? f.slice(0, f.lastIndexOf(".")) : "") {
      box = form.querySelector(`[data-error-for="${CSS.escape(f)}"]`);
      if (box && box.parentElement.closest("[hidden]")) box = null; // its section is hidden (teacher kind)
    }
    box = box || document.getElementById("form-error");
    box.textContent = (box.id === "form-error" && field ? field + ": " : "") + err.message;
    box.hidden = false;
    const inp = form.querySelector(`[data-field="${CSS.escape(field)}"]`);
    if (inp) { inp.classList.add("invalid"); inp.setAttribute("aria-invalid", "true"); inp.focus(); }
    box.scrollIntoView({ block: "center" });
  }

  async function loadDatasets() {
    const sel = document.getElementById("dataset");
    try {
      const list = D.items(await D.api("/datasets?limit=200"));
      for (const ds of list) {
        sel.append(D.el("option", { value: ds.id, text: `${ds.name} (${ds.num_classes ?? "?"} classes, ${ds.num_train ?? "?"} train images)` }));
      }
      sel.addEventListener("change", () => {
        const ds = list.find((d) => String(d.id) === sel.value);
        if (!ds) return;
        form.querySelector('[data-field="data.train"]').value = `dataset:${ds.name}/train`;
        form.querySelector('[data-field="data.val"]').value = `dataset:${ds.name}/val`;
        document.getElementById("dataset-hint").textContent = `data.train and data.val set from dataset ${ds.name}`;
      });
      if (!list.length) document.getElementById("dataset-hint").textContent = "No datasets registered yet (POST /api/v1/datasets).";
    } catch (e) {
      document.getElementById("dataset-hint").textContent = "Could not list datasets: " + e.message;
    }
  }

  async function loadTeachers() {
    const sel = document.getElementById("teacher-from");
    try {
      const jobs = D.items(await D.api("/jobs?kind=teacher&state=succeeded&limit=100"))
        .filter((j) => j.kind === "teacher" && j.state === "succeeded");
      for (const j of jobs) {
        const ck = (j.artifacts || []).filter((a) => a.format === "checkpoint").pop();
        if (!ck) continue;
        const top1 = D.bestTop1(j);
        sel.append(D.el("option", { value: ck.id, "data-model": (j.config && j.config.teacher && j.config.teacher.model) || "",
          text: `#${j.id} ${j.name}` + (top1 !== null ? ` (top-1 ${D.num(top1)})` : "") }));
      }
      sel.addEventListener("change", () => {
        if (!sel.value) return;
        form.querySelector('[data-field="teacher.checkpoint"]').value = sel.value;
        const model = sel.selectedOptions[0].dataset.model;
        if (model) form.querySelector('[data-field="teacher.model"]').value = model;
      });
    } catch (e) { /* the text field still works */ }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    const btn = document.getElementById("submit-btn");
    btn.disabled = true;
    const body = { kind: kind(), name: form.querySelector("#job-name").value.trim(), config: config() };
    if (body.kind === "distill" && document.getElementById("pipeline").checked) {
      // The teacher job trains teacher.model on the same data with the same recipe.
      const c = body.config;
      body.teacher_job = { name: (body.name || "job") + "-teacher", config: { kind: "teacher", data: c.data,
        teacher: { model: c.teacher.model }, train: c.train, resources: c.resources } };
      c.teacher = { model: c.teacher.model, checkpoint: null };
    }
    try {
      const job = await D.api("/jobs", { method: "POST", json: body });
      location.href = "jobs/" + job.id;
    } catch (e) {
      showError(e);
      btn.disabled = false;
    }
  });
  for (const r of form.querySelectorAll("input[name=kind]")) r.addEventListener("change", applyKind);
  document.getElementById("pipeline").addEventListener("change", applyKind);

  build();
  applyKind();
  loadDatasets();
  loadTeachers();
})();
