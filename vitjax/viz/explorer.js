// The vitjax attention explorer (vitjax/viz/explorer.py writes the data this reads). Plain JS and <canvas>.
// Data: #vx-meta (JSON: the model, the options, every image's name, predictions and marks) and one
// #vx-img-<i> per image (JSON: its photo as a data URL and its arrays, base64: 8-bit maps "*_q" with
// float32 scales "*_s" per map, value = q * s / 255). Nothing is fetched: the page holds everything.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const meta = JSON.parse($("vx-meta").textContent);
  const L = meta.layers, H = meta.heads, N = meta.tokens, PRE = meta.prefix;
  const GH = meta.grid[0], GW = meta.grid[1], P = GH * GW, START = meta.start_layer;
  const IMAGES = meta.images;
  const READS = meta.class_token ? "the class token" : "the mean patch row";

  // ------------------------------------------------------------------ decoding

  function bytesOf(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function decode(a) {  // little-endian, whatever the machine
    const u = bytesOf(a.b);
    if (a.t === "u8") return u;
    const dv = new DataView(u.buffer, u.byteOffset, u.byteLength);
    if (a.t === "f32") {
      const out = new Float32Array(u.length >> 2);
      for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(4 * i, true);
      return out;
    }
    if (a.t === "i16") {
      const out = new Int16Array(u.length >> 1);
      for (let i = 0; i < out.length; i++) out[i] = dv.getInt16(2 * i, true);
      return out;
    }
    throw new Error("unknown array type " + a.t);
  }

  const LUTS = {};
  for (const name in meta.cmaps) LUTS[name] = bytesOf(meta.cmaps[name]);

  const cache = new Map();  // image index -> decoded data (the last few)
  function imageData(i) {
    let d = cache.get(i);
    if (d) {
      cache.delete(i);
      cache.set(i, d);
      return d;
    }
    const raw = JSON.parse($("vx-img-" + i).textContent);
    d = { w: raw.w, h: raw.h, a: {}, base: new Map(), loaded: false };
    for (const k in raw.arrays) d.a[k] = decode(raw.arrays[k]);
    d.img = new Image();
    d.ready = new Promise((resolve) => {
      d.img.onload = () => { d.loaded = true; resolve(); };
    });
    d.img.src = raw.photo;
    cache.set(i, d);
    while (cache.size > 8) cache.delete(cache.keys().next().value);
    return d;
  }

  // ------------------------------------------------------------------ rows and maps

  function row(q, s, r, len) {  // row r of an 8-bit array with one scale per row
    const out = new Float64Array(len), sc = s[r] / 255, off = r * len;
    for (let j = 0; j < len; j++) out[j] = q[off + j] * sc;
    return out;
  }

  function maxOf(v) {
    let m = 0;
    for (let j = 0; j < v.length; j++) if (v[j] > m) m = v[j];
    return m;
  }

  function normalised(v) {
    const m = maxOf(v), out = new Float64Array(v.length);
    if (m > 0) for (let j = 0; j < v.length; j++) out[j] = v[j] / m;
    return out;
  }

  function fuse(rows, how) {
    const out = new Float64Array(rows[0].length);
    for (let j = 0; j < out.length; j++) {
      let acc = rows[0][j];
      for (let h = 1; h < rows.length; h++) {
        const x = rows[h][j];
        acc = how === "max" ? Math.max(acc, x) : how === "min" ? Math.min(acc, x) : acc + x;
      }
      out[j] = how === "mean" ? acc / rows.length : acc;
    }
    return out;
  }

  const isHead = (hd) => typeof hd === "number";
  const headName = (hd) => (isHead(hd) ? "head " + (hd + 1) : hd + " over the " + H + " heads");

  function clsRow(d, l, h) { return row(d.a.cls_q, d.a.cls_s, l * H + h, P); }

  function headRow(d, l, hd) {
    if (isHead(hd)) return clsRow(d, l, hd);
    const rows = [];
    for (let h = 0; h < H; h++) rows.push(clsRow(d, l, h));
    return fuse(rows, hd);
  }

  function gradcam(d, c) {  // ReLU(mean_h w[c, h] A_L[h, reading row, patches]), divided by its max
    const rows = [];
    for (let h = 0; h < H; h++) rows.push(clsRow(d, L - 1, h));
    const out = new Float64Array(P);
    for (let j = 0; j < P; j++) {
      let s = 0;
      for (let h = 0; h < H; h++) s += (d.a.cw[c * H + h] / 32767) * rows[h][j];
      out[j] = Math.max(0, s / H);
    }
    return normalised(out);
  }

  const label = (c) => (meta.names && meta.names[c] !== undefined ? meta.names[c] : "class " + c);
  const layersText = (a, b) => (a === b ? "layer " + a : "layers " + a + "\u2013" + b);

  function optionsText() {
    const o = meta.options;
    return "head fusion " + o.head_fusion + ", discard ratio " + o.discard_ratio + ", start layer " +
      o.start_layer + (o.residual ? ", residual" : ", no residual");
  }

  function marksFor(lo, hi, head, outliers) {
    const img = IMAGES[S.img], sinks = new Set();
    for (const [sl, sh, sp] of img.sinks) if (sl >= lo && sl <= hi && (head === null || sh === head)) sinks.add(sp);
    return { sinks, outliers: new Set(outliers ? img.outliers : []) };
  }

  function currentMap(d) {  // {values [P] in [0, 1] as drawn, raw, what, caption, marks}
    const l = S.layer, hd = S.head, last = l === L - 1;
    switch (S.method) {
      case "rollout":
        return { values: row(d.a.rollout_q, d.a.rollout_s, 0, P), what: "rollout",
                 caption: "rollout (joint attention) of " + layersText(START + 1, L) + ": " + READS +
                   "'s row of \u0100_L\u22ef\u0100_" + (START + 1) + " over the patches, divided by its max (" +
                   optionsText() + ")",
                 marks: marksFor(START, L - 1, null, true) };
      case "cumulative":
        return { values: row(d.a.cumulative_q, d.a.cumulative_s, l, P), what: "rollout through layer " + (l + 1),
                 caption: l < START ? "layer " + (l + 1) + " is left out of the rollout (start layer " + START +
                   "): nothing to show"
                   : "the rollout through layer " + (l + 1) + " (" + layersText(START + 1, l + 1) +
                   "), divided by its max (" + optionsText() + ")",
                 marks: marksFor(START, l, null, last) };
      case "layer":
        return { values: row(d.a.layer_q, d.a.layer_s, l, P), what: "layer " + (l + 1) + "'s own map",
                 caption: "layer " + (l + 1) + "'s own map: " + READS + "'s row of \u0100_" + (l + 1) +
                   " (heads fused by " + meta.fusion + ", " + (meta.options.residual ? "residual" : "no residual") +
                   ", rows renormalised), divided by its max",
                 marks: marksFor(l, l, null, last) };
      case "heads": {
        const raw = headRow(d, l, hd);
        return { values: normalised(raw), raw, what: "layer " + (l + 1) + ", " + headName(hd),
                 caption: "layer " + (l + 1) + ", " + headName(hd) + ": " + READS + "'s attention to each " +
                   "patch, divided by its max (the attention itself in the readout)",
                 marks: marksFor(l, l, isHead(hd) ? hd : null, last) };
      }
      case "gradcam": {
        const c = S.cls;
        return { values: gradcam(d, c), what: "attention-GradCAM of " + label(c),
                 caption: "class map of " + label(c) + " (" + c + "): attention-GradCAM (Chefer, Gur & Wolf, " +
                   "CVPR 2021 baseline), ReLU(mean over heads of w_h \u00b7 the last layer's attention of " + READS +
                   "), w_h = the class logit's gradient averaged over that row's patches; divided by its max",
                 marks: marksFor(L - 1, L - 1, null, true) };
      }
      case "runclass": {
        const t = IMAGES[S.img].target;
        return { values: row(d.a.class_q, d.a.class_s, 0, P), what: meta.run_method + " map",
                 caption: "the run's " + meta.run_method + " map (" + meta.run_quantity + ") of " +
                   (t === null ? "its class" : label(t) + " (" + t + ")") + ", divided by its max",
                 marks: marksFor(0, L - 1, null, true) };
      }
    }
    throw new Error("unknown method " + S.method);
  }

  function queryRows(d) {  // the query patch's attention row at (layer, head) and its rollout row, over all N keys
    const t = S.query + PRE, l = S.layer, hd = S.head;
    let att, used = hd, note = "";
    if (meta.heads_full) {
      if (isHead(hd)) att = row(d.a.hquery_q, d.a.hquery_s, (l * H + hd) * N + t, N);
      else {
        const rows = [];
        for (let h = 0; h < H; h++) rows.push(row(d.a.hquery_q, d.a.hquery_s, (l * H + h) * N + t, N));
        att = fuse(rows, hd);
      }
    } else {
      att = row(d.a.query_q, d.a.query_s, l * N + t, N);
      used = meta.fusion;
      if (hd !== meta.fusion) note = " (this page keeps the " + meta.fusion + "-fused query rows only; " +
        "rerun with --html-heads for each head's)";
    }
    return { att, roll: row(d.a.joint_q, d.a.joint_s, t, N), head: used, note, layer: l, query: S.query };
  }

  // ------------------------------------------------------------------ drawing

  function taps(nIn, nOut) {  // half-pixel centres, edges clamped: vitjax.data.images.bilinear_taps
    const lo = new Int32Array(nOut), hi = new Int32Array(nOut), fr = new Float64Array(nOut);
    for (let i = 0; i < nOut; i++) {
      const src = (i + 0.5) * (nIn / nOut) - 0.5, f = Math.floor(src);
      fr[i] = src - f;
      lo[i] = Math.min(Math.max(f, 0), nIn - 1);
      hi[i] = Math.min(Math.max(f + 1, 0), nIn - 1);
    }
    return { lo, hi, fr };
  }

  function basePixels(d, w, h) {
    const key = w + "x" + h;
    let px = d.base.get(key);
    if (!px) {
      const c = document.createElement("canvas");
      c.width = w;
      c.height = h;
      const ctx = c.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(d.img, 0, 0, w, h);
      px = ctx.getImageData(0, 0, w, h).data;
      d.base.set(key, px);
    }
    return px;
  }

  function paint(canvas, d, values) {  // photo with the bilinearly resized map over it (values null: the photo)
    const w = canvas.width, h = canvas.height, base = basePixels(d, w, h);
    const ctx = canvas.getContext("2d"), out = ctx.createImageData(w, h), o = out.data;
    const tx = taps(GW, w), ty = taps(GH, h), mask = S.cmap === "mask", lut = LUTS[mask ? meta.cmap : S.cmap];
    const a = S.alpha;
    for (let y = 0; y < h; y++) {
      const r0 = ty.lo[y] * GW, r1 = ty.hi[y] * GW, fy = ty.fr[y];
      for (let x = 0; x < w; x++) {
        const c0 = tx.lo[x], c1 = tx.hi[x], fx = tx.fr[x];
        const p = 4 * (y * w + x);
        if (values === null) {  // the photo alone
          o[p] = base[p]; o[p + 1] = base[p + 1]; o[p + 2] = base[p + 2]; o[p + 3] = 255;
          continue;
        }
        let v = (1 - fy) * ((1 - fx) * values[r0 + c0] + fx * values[r0 + c1]) +
          fy * ((1 - fx) * values[r1 + c0] + fx * values[r1 + c1]);
        v = v > 0 ? (v < 1 ? v : 1) : 0;
        if (mask) {
          o[p] = base[p] * v; o[p + 1] = base[p + 1] * v; o[p + 2] = base[p + 2] * v;
        } else {
          const k = 3 * Math.min(255, Math.floor(v * 256));
          o[p] = (1 - a) * base[p] + a * lut[k];
          o[p + 1] = (1 - a) * base[p + 1] + a * lut[k + 1];
          o[p + 2] = (1 - a) * base[p + 2] + a * lut[k + 2];
        }
        o[p + 3] = 255;
      }
    }
    ctx.putImageData(out, 0, 0);
  }

  function drawMarks(canvas, mk, outlines) {  // outlines: [[patch, dashed], ...]
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const pw = canvas.width / GW, ph = canvas.height / GH, lw = Math.max(1.5, Math.min(pw, ph) / 10);
    const cell = (k) => [(k % GW) * pw, Math.floor(k / GW) * ph];
    if (S.marks && mk) {
      for (const k of mk.outliers) {
        const [x, y] = cell(k);
        for (const [colour, width] of [["#000", lw + 2], ["#fff", lw]]) {
          ctx.strokeStyle = colour; ctx.lineWidth = width;
          ctx.strokeRect(x + 0.15 * pw, y + 0.15 * ph, 0.7 * pw, 0.7 * ph);
        }
      }
      for (const k of mk.sinks) {
        const [x, y] = cell(k);
        for (const [colour, width] of [["#000", lw + 2], ["#ff0", lw]]) {
          ctx.strokeStyle = colour; ctx.lineWidth = width;
          ctx.beginPath();
          ctx.ellipse(x + pw / 2, y + ph / 2, 0.6 * pw, 0.6 * ph, 0, 0, 2 * Math.PI);
          ctx.stroke();
        }
      }
    }
    const least = 12 * (canvas.width / (canvas.clientWidth || canvas.width));  // 12 screen px at least
    for (const [k, dashed] of outlines) {
      if (k === null || k === undefined) continue;
      const [x, y] = cell(k);
      const ew = Math.max(pw, least), eh = Math.max(ph, least);  // small patches: a box around them
      ctx.setLineDash(dashed ? [4, 3] : []);
      for (const [colour, width] of [["#000", lw + 2.5], ["#fff", lw]]) {
        ctx.strokeStyle = colour; ctx.lineWidth = width;
        ctx.strokeRect(x + (pw - ew) / 2, y + (ph - eh) / 2, ew, eh);
      }
      ctx.setLineDash([]);
    }
  }

  // ------------------------------------------------------------------ state and controls

  const initial = meta.initial || {};
  const S = {
    img: 0, method: initial.method || "rollout", layer: Math.min(L - 1, Math.max(0, initial.layer ?? L - 1)),
    head: meta.fusion === "max" ? "max" : "mean", cls: 0, clsChosen: false, query: null, pinned: false, hover: null, qkey: null,
    alpha: meta.alpha, cmap: meta.cmap, marks: true,
  };
  const api = { meta, state: S, idle: false, renders: 0, map: null, rows: null };
  window.vitjax = api;

  function option(select, value, text) {
    const o = document.createElement("option");
    o.value = String(value);
    o.textContent = text;
    select.appendChild(o);
  }

  function buildControls() {
    const m = $("vx-method");
    option(m, "rollout", "rollout (joint attention)");
    option(m, "cumulative", "rollout through the layer (cumulative)");
    option(m, "layer", "the layer's own map");
    option(m, "heads", "heads: " + READS + "'s attention");
    if (meta.classes) option(m, "gradcam", "class map (attention-GradCAM): any class");
    if (meta.run_method) option(m, "runclass", "the run's " + meta.run_method + " map");
    if (![...m.options].some((o) => o.value === S.method)) S.method = "rollout";
    m.value = S.method;
    const hs = $("vx-head");
    for (let h = 0; h < H; h++) option(hs, h, "head " + (h + 1));
    for (const f of ["mean", "max", meta.fusion]) if (![...hs.options].some((o) => o.value === f)) option(hs, f, f + " over heads");
    hs.value = String(S.head);
    const ls = $("vx-layer");
    ls.max = String(L);
    ls.value = String(S.layer + 1);
    const cm = $("vx-cmap");
    for (const name in meta.cmaps) option(cm, name, name);
    option(cm, "mask", "mask (photo \u00d7 map)");
    cm.value = S.cmap;
    $("vx-alpha").value = String(Math.round(S.alpha * 100));
    if (meta.classes) {
      $("vx-class-box").hidden = false;
      if (meta.names && meta.names.length <= meta.suggest) {
        const dl = $("vx-classnames");
        meta.names.forEach((n, i) => option(dl, n, i));
      }
    }
    $("vx-model").textContent = L + " layers \u00d7 " + H + " heads \u00b7 " + meta.image_size[0] + "\u00d7" +
      meta.image_size[1] + " px input \u00b7 " + GH + "\u00d7" + GW + " patches of " + meta.patch[0] + "\u00d7" +
      meta.patch[1] + " px \u00b7 " + N + " tokens" + (PRE > 1 ? " (" + PRE + " before the patches)" : "");
    if (meta.random_weights) {
      $("vx-warning").hidden = false;
      $("vx-warning").textContent = "random weights: the predictions and maps mean nothing about these images";
    }
    $("vx-legend").textContent = "\u25cb attention sink: a head of that layer gives the patch more than " +
      Math.round(100 * meta.sink_share) + " % of its attention (mean over queries); \u25a1 high-norm token: " +
      "the last block's output norm is over " + meta.outlier_ratio + "\u00d7 the image's median (Darcet et al., " +
      "ICLR 2024). Each is marked only on the maps of the layers (and heads) it concerns.";
    const f = $("vx-footer");
    const lines = [
      (meta.random_weights ? "random weights \u00b7 " : "") + meta.provenance,
      "Every map is stored in 8 bits with one scale per map (per row): a value shown is within half a step " +
        "(max / 510) of the value computed. Query rows: " + (meta.heads_full ? "every head's" : "heads fused by " +
        meta.fusion) + "; rollout rows: the joint matrix \u0100_L\u22ef\u0100_" + (START + 1) + ". Layers and heads " +
        "count from 1.",
      "vitjax " + meta.version + " attention explorer; this page fetches nothing and works offline.",
    ];
    for (const t of lines) {
      const p = document.createElement("p");
      p.textContent = t;
      f.appendChild(p);
    }
    const strip = $("vx-strip");
    IMAGES.forEach((im, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.title = im.name + (im.true_class ? " (" + im.true_class + ")" : "");
      b.setAttribute("aria-label", im.name);
      const t = document.createElement("img");
      t.src = im.thumb;
      t.alt = im.name;
      b.appendChild(t);
      b.addEventListener("click", () => select(i));
      strip.appendChild(b);
    });
  }

  function select(i) {
    S.img = Math.max(0, Math.min(IMAGES.length - 1, i));
    S.query = null; S.pinned = false; S.hover = null; S.qkey = null;
    const im = IMAGES[S.img];
    if (S.method === "runclass" && !imageData(S.img).a.class_q) S.method = "rollout";
    if (meta.classes && im.topk.length && !S.clsChosen) S.cls = im.topk[0][0];
    [...$("vx-strip").children].forEach((b, k) => b.classList.toggle("vx-on", k === S.img));
    render();
  }

  function patchAt(ev, canvas) {
    const r = canvas.getBoundingClientRect();
    const x = (ev.clientX - r.left) / r.width, y = (ev.clientY - r.top) / r.height;
    if (!(x >= 0 && x < 1 && y >= 0 && y < 1)) return null;
    return Math.min(GH - 1, Math.floor(y * GH)) * GW + Math.min(GW - 1, Math.floor(x * GW));
  }

  const rc = (k) => "(" + (Math.floor(k / GW) + 1) + ", " + (k % GW + 1) + ")";
  const fmt = (v) => (v === 0 ? "0" : Math.abs(v) >= 0.001 ? v.toFixed(4) : v.toPrecision(4));

  function argmax(v, from) {
    let best = from, m = -Infinity;
    for (let j = from; j < v.length; j++) if (v[j] > m) { m = v[j]; best = j; }
    return best;
  }

  function prefixText(r) {
    if (PRE === 0) return "";
    const parts = [];
    if (meta.class_token) parts.push("to the class token " + fmt(r[0]));
    const regs = meta.registers;
    if (regs > 0) {
      let s = 0;
      for (let j = PRE - regs; j < PRE; j++) s += r[j];
      parts.push("to the " + regs + " register" + (regs > 1 ? "s " : " ") + fmt(s));
    }
    return parts.join(", ") + "; ";
  }

  // ------------------------------------------------------------------ rendering

  let token = 0;
  async function render() {
    const mine = ++token;
    api.idle = false;
    const d = imageData(S.img);
    await d.ready;
    if (mine !== token) return;
    const im = IMAGES[S.img];
    $("vx-name").textContent = (S.img + 1) + " / " + IMAGES.length + "  " + im.name +
      (im.true_class ? "  (true class: " + im.true_class + ")" : "") + "  \u00b7 photo " + im.original[1] + "\u00d7" +
      im.original[0] + " px" + (im.stretched ? ", drawn stretched (very elongated)" : "");
    $("vx-layer-out").textContent = (S.layer + 1) + " / " + L;
    $("vx-alpha-out").textContent = Math.round(S.alpha * 100) + " %";
    $("vx-method").value = S.method;
    $("vx-head").value = String(S.head);
    const main = $("vx-main"), marks = $("vx-main-marks");
    for (const c of [main, marks]) { if (c.width !== d.w) c.width = d.w; if (c.height !== d.h) c.height = d.h; }
    const room = $("vx-view").clientWidth || d.w;  // drawn as large as the page allows, at the photo's aspect
    main.style.width = Math.max(160, Math.min(room, 760, (0.72 * window.innerHeight * d.w) / d.h)) + "px";
    const m = currentMap(d);
    api.map = m;
    paint(main, d, m.values);
    $("vx-caption").textContent = m.caption;
    renderPredictions(im);
    renderQuery(d);
    renderMarks();
    renderReadout();
    api.renders += 1;
    document.body.dataset.renders = String(api.renders);
    api.idle = true;
  }

  function renderMarks() {
    const m = api.map;
    if (!m) return;
    const outlines = [[S.hover, false]];  // the patch under the pointer; a pinned query patch dashed
    if (S.pinned && S.query !== S.hover) outlines.push([S.query, true]);
    drawMarks($("vx-main-marks"), m.marks, outlines);
  }

  function renderReadout() {
    const m = api.map, k = S.hover;
    const v = $("vx-value");
    if (!m || k === null) {
      $("vx-patch").textContent = "hover a patch";
      $("vx-value-label").textContent = "";
      v.textContent = "";
      $("vx-value-note").textContent = "";
      delete v.dataset.patch;
      return;
    }
    $("vx-patch").textContent = "patch " + rc(k) + " (#" + k + ")";
    $("vx-value-label").textContent = m.what + ":";
    v.textContent = fmt(m.values[k]);
    v.dataset.patch = String(k);
    const notes = [];
    if (m.raw) notes.push("attention " + fmt(m.raw[k]));
    if (S.marks && m.marks.sinks.has(k)) notes.push("attention sink");
    if (S.marks && m.marks.outliers.has(k)) notes.push("high-norm token");
    $("vx-value-note").textContent = notes.length ? "(" + notes.join("; ") + ")" : "";
  }

  function renderQuery(d) {
    const qa = $("vx-qatt"), qr = $("vx-qroll");
    const w = Math.min(d.w, 420), h = Math.max(1, Math.round((d.h * w) / d.w));
    for (const c of [qa, qr, $("vx-qatt-marks"), $("vx-qroll-marks")]) {
      if (c.width !== w) c.width = w;
      if (c.height !== h) c.height = h;
    }
    if (S.query === null) {
      api.rows = null;
      paint(qa, d, null);
      paint(qr, d, null);
      for (const id of ["vx-qatt-marks", "vx-qroll-marks"]) drawMarks($(id), null, []);
      $("vx-qinfo").textContent = "no patch chosen: hover a patch of the photo (a click pins it)";
      $("vx-qatt-cap").textContent = "";
      $("vx-qroll-cap").textContent = "";
      renderQueryReadout();
      return;
    }
    const r = queryRows(d);
    api.rows = r;
    const att = normalised(r.att.slice(PRE)), roll = normalised(r.roll.slice(PRE));
    paint(qa, d, att);
    paint(qr, d, roll);
    const l = r.layer, last = l === L - 1;
    const outlines = [[S.query, true], [S.qkey, false]];  // the query patch dashed, the key under the pointer
    drawMarks($("vx-qatt-marks"), marksFor(l, l, isHead(r.head) ? r.head : null, last), outlines);
    drawMarks($("vx-qroll-marks"), marksFor(START, L - 1, null, true), outlines);
    const best = argmax(r.att, PRE) - PRE, bestR = argmax(r.roll, PRE) - PRE;
    $("vx-qinfo").textContent = "query patch " + rc(r.query) + (S.pinned ? " (pinned; click it again to unpin)" : "") +
      " at layer " + (l + 1) + ", " + headName(r.head) + r.note;
    $("vx-qatt-cap").textContent = "its attention row at layer " + (l + 1) + ", " + headName(r.head) + ": " +
      prefixText(r.att) + "most to patch " + rc(best) + " (" + fmt(r.att[best + PRE]) + "); divided by its max";
    $("vx-qroll-cap").textContent = "its rollout row (" + layersText(START + 1, L) + "): " + prefixText(r.roll) +
      "most to patch " + rc(bestR) + " (" + fmt(r.roll[bestR + PRE]) + "); divided by its max";
    renderQueryReadout();
  }

  function renderQueryReadout() {
    const r = api.rows, k = S.qkey;
    const v = $("vx-qvalue");
    if (!r || k === null) {
      $("vx-qkey").textContent = r ? "hover a key patch in these two views" : "";
      v.textContent = "";
      return;
    }
    $("vx-qkey").textContent = "key patch " + rc(k) + ":";
    v.textContent = "attention " + fmt(r.att[k + PRE]) + " \u00b7 rollout " + fmt(r.roll[k + PRE]);
  }

  function renderPredictions(im) {
    const box = $("vx-topk");
    box.textContent = "";
    if (meta.head !== "trained") {
      box.textContent = meta.head === "zero" ? "the classification head is all zero: no predictions"
        : "no classification head (the model gives features): no predictions";
    } else {
      const ol = document.createElement("ol");
      im.topk.forEach(([c, p, name], r) => {
        const li = document.createElement("li");
        const bar = document.createElement("span");
        bar.className = "vx-bar";
        bar.style.width = (100 * p).toFixed(1) + "%";
        li.appendChild(bar);
        const text = (r + 1) + ". " + p.toFixed(4) + "  " + name + " (" + c + ")";
        if (meta.classes) {
          const b = document.createElement("button");
          b.type = "button";
          b.textContent = text;
          b.title = "show the class map of " + name;
          b.addEventListener("click", () => {
            S.cls = c; S.clsChosen = false; S.method = "gradcam"; $("vx-class").value = ""; render();
          });
          li.appendChild(b);
        } else li.appendChild(document.createTextNode(text));
        ol.appendChild(li);
      });
      box.appendChild(ol);
    }
    const lens = $("vx-lens");
    lens.textContent = "";
    if (im.lens) {
      const h = document.createElement("h2");
      h.textContent = "each layer's prediction (logit lens)";
      lens.appendChild(h);
      const t = document.createElement("table");
      im.lens.forEach((top, l) => {
        const tr = document.createElement("tr");
        const th = document.createElement("th");
        th.textContent = l === 0 ? "input" : "layer " + l;
        tr.appendChild(th);
        const td = document.createElement("td");
        td.textContent = top.slice(0, 3).map(([c, p]) => label(c) + " " + p.toFixed(3)).join(" \u00b7 ");
        tr.appendChild(td);
        t.appendChild(tr);
      });
      lens.appendChild(t);
    }
  }

  function findClass(text) {
    const s = text.trim();
    if (/^\d+$/.test(s)) {
      const c = Number(s);
      return c < meta.num_classes ? c : null;
    }
    if (!meta.names || !s) return null;
    const low = s.toLowerCase(), names = meta.names.map((n) => n.toLowerCase());
    for (const test of [(n) => n === low, (n) => n.split(", ").includes(low), (n) => n.startsWith(low),
      (n) => n.includes(low)]) {
      const c = names.findIndex(test);
      if (c >= 0) return c;
    }
    return null;
  }

  function wire() {
    $("vx-method").addEventListener("change", (e) => { S.method = e.target.value; render(); });
    $("vx-layer").addEventListener("input", (e) => { S.layer = Number(e.target.value) - 1; render(); });
    $("vx-head").addEventListener("change", (e) => {
      const v = e.target.value;
      S.head = /^\d+$/.test(v) ? Number(v) : v;
      render();
    });
    $("vx-alpha").addEventListener("input", (e) => { S.alpha = Number(e.target.value) / 100; render(); });
    $("vx-cmap").addEventListener("change", (e) => { S.cmap = e.target.value; render(); });
    $("vx-marks-on").addEventListener("change", (e) => { S.marks = e.target.checked; render(); });
    $("vx-class").addEventListener("change", (e) => {
      const c = findClass(e.target.value);
      if (c === null) {
        $("vx-class-msg").textContent = "no class matches \u201c" + e.target.value + "\u201d (type a name or an index below " +
          meta.num_classes + ")";
        return;
      }
      $("vx-class-msg").textContent = "class " + c + ": " + label(c);
      S.cls = c;
      S.clsChosen = true;
      S.method = "gradcam";
      render();
    });
    const mm = $("vx-main-marks");
    mm.addEventListener("mousemove", (ev) => {
      const k = patchAt(ev, mm);
      if (k === S.hover) return;
      S.hover = k;
      if (!S.pinned && k !== null) {
        S.query = k;
        S.qkey = null;
        const d = imageData(S.img);
        if (d.loaded) renderQuery(d);
      }
      renderMarks();
      renderReadout();
    });
    mm.addEventListener("mouseleave", () => { S.hover = null; renderMarks(); renderReadout(); });
    mm.addEventListener("click", (ev) => {
      const k = patchAt(ev, mm);
      if (k === null) return;
      if (S.pinned && S.query === k) S.pinned = false;
      else { S.pinned = true; S.query = k; }
      S.qkey = null;
      render();
    });
    for (const id of ["vx-qatt-marks", "vx-qroll-marks"]) {
      const c = $(id);
      c.addEventListener("mousemove", (ev) => {
        if (S.query === null) return;
        const k = patchAt(ev, c);
        if (k === S.qkey) return;
        S.qkey = k;
        const d = imageData(S.img);
        if (d.loaded) renderQuery(d);
      });
      c.addEventListener("mouseleave", () => {
        S.qkey = null;
        const d = imageData(S.img);
        if (d.loaded) renderQuery(d);
      });
    }
    document.addEventListener("keydown", (ev) => {
      if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
      if (ev.key === "ArrowRight") select(S.img + 1);
      else if (ev.key === "ArrowLeft") select(S.img - 1);
    });
  }

  api.select = select;
  api.render = render;
  buildControls();
  wire();
  select(0);
})();
