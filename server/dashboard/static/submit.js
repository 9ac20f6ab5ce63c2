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
        const n = ds.num_train;
        const preset = typeof n === "number" ? (n < 10000 ? "small" : n < 200000 ? "medium" : "imagenet") : null;
        if (preset && !cloning) applyPreset(preset);
        document.getElementById("dataset-hint").textContent = `data.train and data.val set from dataset ${ds.name}` +
          (preset && !cloning ? `; ${PRESETS[preset].label.toLowerCase()} preset applied` : "");
        update();
      });
      if (!list.length) document.getElementById("dataset-hint").textContent = "No datasets registered yet (POST /api/v1/datasets).";
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
          document.getElementById("teacher-hint").textContent = `teacher.model, image size and data set from job #${t.id} ` +
            `(${(c.teacher || {}).model}, ${(c.data || {}).img_size} px)`;
          update();
        } catch (e) { /* the API fills what is left out and refuses what conflicts */ }
      });
    } catch (e) { /* the text field still works */ }
  }

  // ------------------------------------------------------------------ presets, warnings, effective lr
  const SMALL_TRAIN = { "train.aa": "", "train.mixup": 0, "train.cutmix": 0, "train.reprob": 0, "train.smoothing": 0.1,
    "train.drop_path": 0, "train.repeated_aug": false, "train.warmup_epochs": 2 };
  const PRESETS = {
    small: { label: "Small data (under 10k images, e.g. digits)", values: { "data.img_size": 32, "data.crop_pct": 1.0,
      "student.patch_size": 8, "train.epochs": 30, "train.batch_size": 32, "train.lr": 2e-3, "train.scale_min": 0.5,
      "train.hflip": 0, ...SMALL_TRAIN } },
    medium: { label: "Medium (10k-200k images, e.g. CIFAR)", values: { "data.img_size": 64, "data.crop_pct": 1.0,
      "student.patch_size": 8, "train.epochs": 100, "train.batch_size": 64, "train.lr": 1e-3, "train.aa": "rand-m9-mstd0.5-inc1",
      "train.mixup": 0.2, "train.cutmix": 0, "train.reprob": 0.1, "train.smoothing": 0.1, "train.drop_path": 0.05,
      "train.hflip": 0.5, "train.scale_min": 0.35, "train.repeated_aug": false, "train.warmup_epochs": 5 } },
    imagenet: { label: "ImageNet-scale (the DeiT recipe)", values: {} },
  };
  for (const [k, v] of Object.entries(recipe.data || {})) if (PRESETS.imagenet.values["data." + k] === undefined) PRESETS.imagenet.values["data." + k] = v.default;
  for (const sec of ["student", "train"]) for (const [k, v] of Object.entries(recipe[sec] || {})) PRESETS.imagenet.values[sec + "." + k] = v.default;
  delete PRESETS.imagenet.values["data.train"]; delete PRESETS.imagenet.values["data.val"];

  function applyPreset(name) {
    for (const [path, v] of Object.entries(PRESETS[name].values)) setField(path, v);
    for (const b of document.querySelectorAll("#presets button")) b.classList.toggle("active", b.dataset.preset === name);
    update();
  }

  function currentDataset() {
    const m = /^dataset:([^/]+)\//.exec((fieldEl("data.train") || {}).value || "");
    return m ? datasets.find((d) => d.name === m[1]) : null;
  }

  const num = (path) => { const inp = fieldEl(path); const v = inp ? Number(inp.value) : NaN; return isNaN(v) ? null : v; };

  /** Choices known to break small or non-flippable data, in words. */
  function warnings() {
    const ds = currentDataset();
    const out = [];
    const n = ds && ds.num_train;
    const small = typeof n === "number" && n < 10000;
    const img = num("data.img_size"), epochs = num("train.epochs");
    if (small && img >= 160) out.push(`${img} px on ${n} training images: small images upscaled this far train slowly and overfit; the small-data preset uses 32 px.`);
    if (small && (num("train.mixup") > 0 || num("train.cutmix") > 0)) out.push("Mixup/CutMix on a small dataset: with few images they blur every label and the model often stays at chance.");
    if (small && (fieldEl("train.aa") || {}).value) out.push("RandAugment on a small dataset: strong augmentation needs many epochs to pay off; turn it off.");
    if (ds && /digit|mnist|text|char|letter|sign|ocr/i.test(ds.name) && num("train.hflip") > 0) out.push(`Horizontal flips on ${ds.name}: a mirrored 2 is not a 2; set the flip probability to 0.`);
    if (small && epochs >= 200) out.push(`${epochs} epochs on ${n} images: the DeiT budget is for 1.28M images; 20-50 epochs is plenty here.`);
    const global = (num("train.batch_size") || 0) * (num("resources.processes") || 1) * (num("train.accum_steps") || 1);
    if (typeof n === "number" && global > n / 4) out.push(`A global batch of ${global} leaves only ${Math.max(1, Math.floor(n / global))} step(s) per epoch on ${n} images.`);
    return out;
  }

  function update() {
    const box = document.getElementById("warnings");
    const list = warnings();
    box.replaceChildren(...list.map((w) => D.el("li", { text: w })));
    box.hidden = !list.length;
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
    if (body.kind === "distill" && document.getElementById("baseline").checked) body.baseline = true;
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
