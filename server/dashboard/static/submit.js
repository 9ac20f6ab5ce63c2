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
    "train.aa": "a timm RandAugment policy; empty: none",
    "train.hflip": "0 for data a mirror changes (digits, text)",
    "train.batch_size": "per process",
  };

  const kind = () => form.querySelector("input[name=kind]:checked").value;
  const allows = (type, t) => type.split("|").map((s) => s.trim()).includes(t);

  function input(path, spec) {
    const type = spec.type;
    const wrap = D.el("div", { class: "field", "data-wrap": path });
    const label = D.el("label", { for: "f-" + path }, D.label(path), " ", D.el("small", { text: path.split(".")[1] }));
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
      datasets = list;
      for (const ds of list) {
        sel.append(D.el("option", { value: ds.id, text: `${ds.name} (${ds.num_classes ?? "?"} classes, ${ds.num_train ?? "?"} train images)` }));
      }
      sel.addEventListener("change", () => {
        const ds = list.find((d) => String(d.id) === sel.value);
        if (!ds) return;
        form.querySelector('[data-field="data.train"]').value = `dataset:${ds.name}/train`;
        form.querySelector('[data-field="data.val"]').value = `dataset:${ds.name}/val`;
        const preset = presetFor(ds.num_train);
        if (preset && !cloning) applyPreset(preset);
        document.getElementById("dataset-hint").textContent = `data.train and data.val set from dataset ${ds.name}` +
          (preset && !cloning ? `; ${PRESETS[preset].label.toLowerCase()} preset applied` : "");
        update();
      });
      if (!list.length) document.getElementById("dataset-hint").textContent = "No datasets yet: `distillery datasets upload FOLDER --name NAME` adds one (or POST /api/v1/datasets).";
    } catch (e) {
      document.getElementById("dataset-hint").textContent = "Could not list datasets: " + e.message;
    }
  }

  let datasets = [];
  const fieldEl = (path) => form.querySelector(`[data-field="${CSS.escape(path)}"]`);
  function setField(path, v) {
    const inp = fieldEl(path);
    if (!inp) return;
    if (inp.type === "checkbox") inp.checked = !!v;
    else inp.value = v === null || v === undefined ? "" : String(v);
  }
  /** A server path back to the dataset:NAME/... form when it is one of the user's datasets. */
  function dataRef(path) {
    for (const ds of datasets) {
      for (const part of ["train", "val"]) if (ds[part] === path || ds.path + "/" + part === path) return `dataset:${ds.name}/${part}`;
    }
    return path;
  }

  /** The Dataset select names the dataset the data fields point at (after a teacher or a clone filled them). */
  function syncDatasetSelect() {
    const train = (fieldEl("data.train") || {}).value || "";
    const ds = datasets.find((d) => train === `dataset:${d.name}/train`);
    const sel = document.getElementById("dataset");
    sel.value = ds ? String(ds.id) : "";
    if (ds) document.getElementById("dataset-hint").textContent = `data.train and data.val: dataset ${ds.name}`;
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
        sel.append(D.el("option", { value: ck.id, "data-job": j.id,
          text: `#${j.id} ${j.name}` + (top1 !== null ? ` (top-1 ${D.num(top1, 1)}%)` : "") }));
      }
      sel.addEventListener("change", async () => {
        if (!sel.value) return;
        setField("teacher.checkpoint", sel.value);
        // The teacher's own model, image size and data are the starting point (the API checks them too).
        try {
          const t = await D.api(`/jobs/${sel.selectedOptions[0].dataset.job}`);
          const c = t.config || {};
          setField("teacher.model", (c.teacher || {}).model);
          for (const k of ["img_size", "crop_pct"]) if ((c.data || {})[k] !== undefined) setField("data." + k, c.data[k]);
          if ((c.data || {}).train) { setField("data.train", dataRef(c.data.train)); setField("data.val", dataRef(c.data.val)); }
          syncDatasetSelect();
          document.getElementById("teacher-hint").textContent = `teacher.model, image size and data set from job #${t.id} ` +
            `(${(c.teacher || {}).model}, ${(c.data || {}).img_size} px)`;
          update();
        } catch (e) { /* the API fills what is left out and refuses what conflicts */ }
      });
    } catch (e) { /* the text field still works */ }
  }

  // ------------------------------------------------------------------ presets, warnings, effective lr
  // Both come from the server (deit_core/presets.py, deit_core/config_warnings.py): the presets embedded
  // by the view, the warnings from POST /warnings, the same rules a submission's 201 answers with.
  const PRESETS = Object.fromEntries(JSON.parse(document.getElementById("presets-data").textContent).map((p) => [p.name, p]));
  /** The preset meant for a training set of n images (the first whose max_train_images is above n). */
  function presetFor(n) {
    if (typeof n !== "number") return null;
    const p = Object.values(PRESETS).find((x) => x.max_train_images === null || n < x.max_train_images);
    return p ? p.name : null;
  }

  function applyPreset(name) {
    for (const [path, v] of Object.entries(PRESETS[name].values)) setField(path, v);
    for (const b of document.querySelectorAll("#presets button")) b.classList.toggle("active", b.dataset.preset === name);
    update();
  }

  const num = (path) => { const inp = fieldEl(path); const v = inp ? Number(inp.value) : NaN; return isNaN(v) ? null : v; };

  let warningsAsked = 0;
  let warningsTimer = null;
  /** Ask the server what in the form looks wrong for its data; shown unless a newer answer is on its way. */
  async function refreshWarnings() {
    const box = document.getElementById("warnings");
    const asked = ++warningsAsked;
    let list = [];
    try {
      list = (await D.api("/warnings", { method: "POST", json: { kind: kind(), config: config() } })).warnings || [];
    } catch (e) { /* the form still submits; the 201 carries the same warnings */ }
    if (asked !== warningsAsked) return;
    box.replaceChildren(...list.map((w) => D.el("li", { "data-warning-for": w.field, text: w.message })));
    box.hidden = !list.length;
    box.dataset.state = "fresh"; // the answer for the form as it is now (tests wait for it)
  }

  function update() {
    clearTimeout(warningsTimer);
    document.getElementById("warnings").dataset.state = "pending";
    warningsTimer = setTimeout(refreshWarnings, 250);
    const lrNote = document.getElementById("effective-lr");
    const lr = num("train.lr"), bs = num("train.batch_size"), procs = num("resources.processes") || 1, acc = num("train.accum_steps") || 1;
    if (lrNote && lr && bs) {
      const global = bs * procs * acc;
      lrNote.textContent = `effective peak lr ${(lr * global / 512).toExponential(2)} = ${lr} × global batch ${global} / 512`;
    }
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
    if (body.kind === "distill" && document.getElementById("baseline").checked) {
      body.baseline = true;
      const seeds = parseInt(document.getElementById("seeds").value, 10);
      if (seeds > 1) body.seeds = seeds;
    }
    try {
      const job = await D.api("/jobs", { method: "POST", json: body });
      location.href = "jobs/" + job.id;
    } catch (e) {
      showError(e);
      btn.disabled = false;
    }
  });
  function showSeeds() { document.getElementById("seeds-field").hidden = !document.getElementById("baseline").checked; }
  document.getElementById("baseline").addEventListener("change", showSeeds);
  for (const r of form.querySelectorAll("input[name=kind]")) r.addEventListener("change", applyKind);
  document.getElementById("pipeline").addEventListener("change", applyKind);

  /** ?from=ID: "clone and edit" starts from that job's resolved parameters. */
  const cloneFrom = new URL(location.href).searchParams.get("from");
  let cloning = !!cloneFrom;
  async function loadClone() {
    if (!cloneFrom) return;
    try {
      const j = await D.api(`/jobs/${encodeURIComponent(cloneFrom)}`);
      form.querySelector(`input[name=kind][value="${j.kind}"]`).checked = true;
      applyKind();
      document.getElementById("job-name").value = `${j.name}-copy`;
      for (const [path, v] of Object.entries(D.flatConfig(j.config || {}))) {
        if (path === "data.train" || path === "data.val") setField(path, dataRef(v));
        else if (path !== "kind") setField(path, v);
      }
      syncDatasetSelect();
      // The teacher it learnt from (a finished teacher job's checkpoint), the baseline and the seeds come along.
      const tsel = document.getElementById("teacher-from");
      const topt = j.parent_id ? [...tsel.options].find((o) => o.dataset.job === String(j.parent_id)) : null;
      if (topt) { tsel.value = topt.value; setField("teacher.checkpoint", topt.value); }
      const baseline = document.getElementById("baseline");
      baseline.checked = !!(j.baseline || j.seeds > 1);
      document.getElementById("seeds").value = String(j.seeds || 1);
      showSeeds();
      document.getElementById("clone-note").textContent = `Starting from job #${j.id} ${j.name}: change what you want and submit.`;
      document.getElementById("clone-note").hidden = false;
      update();
    } catch (e) {
      D.flash(`Could not load job ${cloneFrom} to clone: ${e.message}`, true);
    }
  }

  build();
  applyKind();
  const presets = document.getElementById("presets");
  for (const [name, p] of Object.entries(PRESETS)) {
    presets.append(D.el("button", { type: "button", "data-preset": name, text: p.label, onclick: () => { cloning = false; applyPreset(name); } }));
  }
  const lrWrap = form.querySelector('[data-wrap="train.lr"]');
  if (lrWrap) lrWrap.append(D.el("small", { class: "effective-lr", id: "effective-lr", "data-testid": "effective-lr" }));
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  Promise.all([loadDatasets(), loadTeachers()]).then(loadClone);
  update();
})();
