/* Tiny SVG line charts, drawn by hand so the dashboard needs no library and works offline.
 * Charts.line(svg, {series, yFormat, yMin, yMax}) redraws the whole chart; each series is
 * {label, points: [[x, y], ...], dashed, markers}. A legend is kept in a div after the svg.
 * The chart is drawn at the svg's own pixel width (so axis text is 12 px on a phone too, not a
 * scaled-down 600-unit drawing) and redrawn on resize; hovering shows every series at that epoch. */
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  let W = 600, H = 240;
  const PAD = { l: 54, r: 14, t: 10, b: 40 };
  const drawn = new Map();  // svg -> opts, redrawn when the window is resized
  const MAX_POINTS = 600;

  function s(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  }

  /** 1, 2, 2.5 or 5 times a power of ten: round tick steps. */
  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  function ticks(lo, hi, count) {
    if (hi === lo) { hi = lo + 1; }
    const step = niceStep(hi - lo, count);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  /** Tick labels with just enough digits to tell neighbours apart (step is the tick spacing). */
  function fmtTick(v, step, maxAbs) {
    if (v === 0) return "0";
    const mag = Math.floor(Math.log10(step));
    const extra = Math.abs(step / Math.pow(10, mag) - 2.5) < 1e-6 ? 1 : 0; // 0.25 needs one more digit than 0.2
    if (maxAbs < 1e-3 || maxAbs >= 1e5) {
      return v.toExponential(Math.min(6, Math.max(1, Math.floor(Math.log10(maxAbs)) - mag + extra)));
    }
    return v.toFixed(Math.max(0, -mag + extra));
  }

  function fmtDefault(v) {
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
    return +v.toPrecision(4) + "";
  }

  /** Keep at most MAX_POINTS points (bucket means), always keeping the last one. */
  function thin(points) {
    if (points.length <= MAX_POINTS) return points;
    const size = Math.ceil(points.length / MAX_POINTS), out = [];
    for (let i = 0; i < points.length; i += size) {
      const b = points.slice(i, i + size);
      out.push([b.reduce((a, p) => a + p[0], 0) / b.length, b.reduce((a, p) => a + p[1], 0) / b.length]);
    }
    out.push(points[points.length - 1]);
    return out;
  }

  function legend(svg, series) {
    let box = svg.nextElementSibling;
    if (!box || !box.classList.contains("legend")) {
      box = document.createElement("div");
      box.className = "legend";
      svg.after(box);
    }
    box.replaceChildren(...series.map((se, i) => {
      const item = document.createElement("span");
      item.className = "key s" + (se.color ?? i) + (se.dashed ? " dashed" : "");
      const last = se.points.length ? se.points[se.points.length - 1][1] : null;
      item.textContent = se.label + (last !== null && se.showLast !== false ? " " + (se.format || fmtDefault)(last) : "");
      return item;
    }));
  }

  function line(svg, opts) {
    drawn.set(svg, opts);
    const series = (opts.series || []).filter((se) => se.points && se.points.length);
    const px = Math.round(svg.getBoundingClientRect().width || (svg.parentElement && svg.parentElement.clientWidth) || 600);
    W = Math.max(240, px);
    H = Math.round(Math.min(260, Math.max(190, W * 0.42)));
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("role", "img");
    svg.replaceChildren();
    const total = series.reduce((a, se) => a + se.points.length, 0);
    svg.dataset.points = total;
    if (!total) {
      svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, opts.empty || "no data yet"));
      legend(svg, []);
      return;
    }
    const all = series.flatMap((se) => se.points);
    let x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
    let y0 = opts.yMin ?? Math.min(...all.map((p) => p[1])), y1 = opts.yMax ?? Math.max(...all.map((p) => p[1]));
    if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
    if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    else if (opts.yMin === undefined) { const d = (y1 - y0) * 0.05; y0 -= d; y1 += d; }
    const fx = (x) => PAD.l + (x - x0) / (x1 - x0) * (W - PAD.l - PAD.r);
    const fy = (y) => H - PAD.b - (y - y0) / (y1 - y0) * (H - PAD.t - PAD.b);
    const yFmt = opts.yFormat || fmtDefault;
    const xCount = W < 420 ? 4 : 6;
    const yStep = niceStep(y1 - y0, 4), xStep = niceStep(x1 - x0, xCount);
    const yMax = Math.max(Math.abs(y0), Math.abs(y1)), xMax = Math.max(Math.abs(x0), Math.abs(x1));

    const grid = s("g", { class: "grid" });
    for (const t of ticks(y0, y1, 4)) {
      grid.append(s("line", { x1: PAD.l, x2: W - PAD.r, y1: fy(t), y2: fy(t) }));
      grid.append(s("text", { x: PAD.l - 6, y: fy(t) + 4, "text-anchor": "end" },
        opts.yFormat ? yFmt(t) : fmtTick(t, yStep, yMax)));
    }
    for (const t of ticks(x0, x1, xCount)) {
      grid.append(s("text", { x: fx(t), y: H - PAD.b + 16, "text-anchor": "middle" }, fmtTick(t, xStep, xMax)));
    }
    grid.append(s("text", { x: (PAD.l + W - PAD.r) / 2, y: H - 4, "text-anchor": "middle", class: "axis-label" }, opts.xLabel || "epoch"));
    svg.append(grid);

    series.forEach((se, i) => {
      const cls = "series s" + (se.color ?? i) + (se.dashed ? " dashed" : "");
      const pts = thin(se.points);
      const d = pts.map((p, j) => (j ? "L" : "M") + fx(p[0]).toFixed(1) + "," + fy(p[1]).toFixed(1)).join("");
      const path = s("path", { d, class: cls, "data-label": se.label });
      svg.append(path);
      if (se.markers || pts.length === 1) {
        for (const p of pts) {
          const c = s("circle", { cx: fx(p[0]), cy: fy(p[1]), r: 3, class: cls });
          c.append(s("title", {}, `${se.label}: ${yFmt(p[1])} at ${fmtDefault(p[0])}`));
          svg.append(c);
        }
      }
    });
    legend(svg, series);
    hover(svg, series, { fx, fy, x0, x1, W, H, yFmt });
  }

  /** A vertical rule and a box listing each series' value at the epoch nearest the pointer. */
  function hover(svg, series, g) {
    const card = svg.parentElement;
    let tip = card.querySelector(".chart-tip");
    if (!tip) { tip = document.createElement("div"); tip.className = "chart-tip"; tip.hidden = true; card.append(tip); }
    const rule = s("line", { class: "hover-rule", y1: PAD.t, y2: g.H - PAD.b, x1: -10, x2: -10 });
    const zone = s("rect", { x: PAD.l, y: PAD.t, width: g.W - PAD.l - PAD.r, height: g.H - PAD.t - PAD.b, class: "hover-zone" });
    svg.append(rule, zone);
    // Epochs with a measured point (a dashed reference line such as the teacher's top-1 spans the axis but adds none).
    const measured = series.filter((se) => !se.dashed || se.markers);
    const xs = [...new Set((measured.length ? measured : series).flatMap((se) => se.points.map((p) => p[0])))].sort((a, b) => a - b);
    function show(ev) {
      const box = svg.getBoundingClientRect();
      const ux = (ev.clientX - box.left) * g.W / box.width;
      const xv = g.x0 + (ux - PAD.l) / (g.W - PAD.l - PAD.r) * (g.x1 - g.x0);
      let best = xs[0];
      for (const x of xs) if (Math.abs(x - xv) < Math.abs(best - xv)) best = x;
      rule.setAttribute("x1", g.fx(best)); rule.setAttribute("x2", g.fx(best));
      const rows = series.map((se, i) => {
        let p = null;
        for (const q of se.points) if (!p || Math.abs(q[0] - best) < Math.abs(p[0] - best)) p = q;
        const constant = se.dashed && !se.markers;  // a reference level: its value holds at every epoch
        const tol = xs.length > 1 ? Math.min(...xs.slice(1).map((x, j) => x - xs[j])) / 2 : Infinity;
        if (!p || (!constant && Math.abs(p[0] - best) > tol)) return null;
        const span = document.createElement("div");
        span.className = "key s" + (se.color ?? i);
        span.textContent = `${se.label}: ${(se.format || g.yFmt)(p[1])}`;
        return span;
      });
      const head = document.createElement("strong");
      head.textContent = `${svg.dataset.xLabel || "epoch"} ${fmtDefault(best)}`;
      tip.replaceChildren(head, ...rows.filter(Boolean));
      tip.hidden = false;
      const left = ev.clientX - card.getBoundingClientRect().left;
      tip.style.left = Math.max(4, Math.min(left + 12, card.clientWidth - tip.offsetWidth - 4)) + "px";
      tip.style.top = (box.top - card.getBoundingClientRect().top + 8) + "px";  // SVG elements have no offsetTop
    }
    zone.addEventListener("mousemove", show);
    zone.addEventListener("mouseleave", () => { tip.hidden = true; rule.setAttribute("x1", -10); rule.setAttribute("x2", -10); });
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { for (const [svg, opts] of drawn) if (svg.isConnected) line(svg, opts); }, 150);
  });

  return { line };
})();
