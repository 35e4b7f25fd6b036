"""The report page's stylesheet and script, inlined into index.html (no CDN, no external file: works offline).

The script reads ``window.DIFFEDIT_INDEX`` (data/index.js), filters and sorts every record's index entry,
and loads only the ``data/rows-<n>.js`` files that the current page needs. Untrusted text (prompts, ids,
errors) reaches the page through ``textContent`` only. The view's state lives in the URL's hash
(``#status=ok&sort=background_psnr&dir=asc&page=2``), so a view can be bookmarked and reloaded.

With candidates (``report.candidates``) the index has each record's fate and request key: the grid filters by
fate (``#fate=kept``), and ``#compare=<record>`` shows the candidates of that record's request side by side above
the grid (found by request key, their rows loaded by chunk, told apart by id), with their drawn settings, scores,
reasons and thumbnails where pictures exist.
"""

STYLE = r"""
:root { font-family: system-ui, sans-serif; color: #1d2330; background: #f6f7f9; }
body { margin: 0 auto; max-width: 1400px; padding: 16px 24px 48px; }
h1 { font-size: 1.5rem; margin: 0 0 4px; } h2 { font-size: 1.15rem; margin: 28px 0 8px; }
.muted { color: #667085; font-size: .85rem; }
.tiles { display: flex; flex-wrap: wrap; gap: 12px; }
.tile { background: #fff; border: 1px solid #dde1e8; border-radius: 8px; padding: 10px 14px; min-width: 120px; }
.tile b { display: block; font-size: 1.4rem; }
table { border-collapse: collapse; background: #fff; font-size: .85rem; }
td, th { border: 1px solid #dde1e8; padding: 4px 8px; text-align: left; vertical-align: top; }
pre { background: #fff; border: 1px solid #dde1e8; padding: 8px; overflow: auto; max-height: 360px; font-size: .8rem; }
.hists { display: flex; flex-wrap: wrap; gap: 12px; }
figure.hist { margin: 0; background: #fff; border: 1px solid #dde1e8; border-radius: 8px; padding: 6px; }
figure.hist rect { fill: #4f6bed; } figure.hist rect:hover { fill: #1d3bc4; }
figure.hist text { font-size: 10px; fill: #667085; } figure.hist .axis { stroke: #98a2b3; }
figure.hist figcaption { font-size: .8rem; max-width: 320px; }
.controls { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; margin: 8px 0 12px;
  position: sticky; top: 0; background: #f6f7f9; padding: 6px 0; z-index: 1; }
.controls label { font-size: .85rem; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid #dde1e8; border-radius: 8px; padding: 8px; font-size: .82rem;
  overflow-wrap: anywhere; }
.card.status-error, .card.status-duplicate { border-color: #f04438; background: #fff6f5; }
.thumbs { display: flex; gap: 6px; }
.thumbs figure { margin: 0; text-align: center; width: 128px; }
.thumbs img { width: 128px; height: 128px; object-fit: contain; background: #eef0f4; display: block; }
.thumbs figcaption { font-size: .7rem; color: #667085; }
.card .id { font-weight: 600; } .card .status { font-weight: 400; color: #667085; }
.card .prompt { margin: 4px 0; } .card .error { color: #b42318; margin-top: 4px; }
.card dl { display: grid; grid-template-columns: auto 1fr; gap: 0 8px; margin: 4px 0 0; }
.card dt { color: #667085; } .card dd { margin: 0; }
#problem { color: #b42318; }
.card.status-filtered { border-color: #fdb022; }
.reason { color: #b54708; margin-top: 4px; }
.card button.compare { margin-top: 6px; font-size: .78rem; }
.bar { display: inline-block; width: 160px; height: 10px; background: #eef0f4; vertical-align: middle;
  margin-right: 6px; }
.bar span { display: block; height: 100%; background: #4f6bed; }
#request { background: #fff; border: 1px solid #4f6bed; border-radius: 8px; padding: 8px; margin: 0 0 12px;
  font-size: .82rem; }
#request .head { display: flex; gap: 10px; align-items: center; margin-bottom: 6px; overflow-wrap: anywhere; }
#request .strip { display: flex; gap: 10px; overflow-x: auto; align-items: flex-start; }
#request .candidate { border: 1px solid #dde1e8; border-radius: 8px; padding: 6px; flex: 0 0 272px;
  overflow-wrap: anywhere; }
#request .candidate.status-ok { border-color: #12b76a; background: #f6fef9; }
#request .candidate.status-filtered { background: #fcfcfd; }
#request .candidate .thumbs figure { width: 128px; }
#request dl { display: grid; grid-template-columns: auto 1fr; gap: 0 8px; margin: 4px 0 0; }
#request dt { color: #667085; } #request dd { margin: 0; }
"""

SCRIPT = r"""
"use strict";
(function () {
  const I = window.DIFFEDIT_INDEX;
  const $ = (id) => document.getElementById(id);
  const chunks = new Map();
  const waiting = new Map();
  window.__diffeditRows = function (n, rows) {
    const pending = waiting.get(n);
    if (pending) { waiting.delete(n); pending.resolve(rows); }
  };
  function loadChunk(n) {
    if (!chunks.has(n)) {
      chunks.set(n, new Promise(function (resolve, reject) {
        waiting.set(n, { resolve: resolve, reject: reject });
        const script = document.createElement("script");
        script.src = "data/rows-" + n + ".js";
        script.onerror = function () {
          chunks.delete(n); waiting.delete(n);
          reject(new Error("cannot load " + script.src));
        };
        document.head.appendChild(script);
      }));
    }
    return chunks.get(n);
  }

  const defaults = { status: "all", error_class: "all", settings: "all", fate: "all", sort: "", dir: "asc",
                     page: "1", size: String(I.pageSize), compare: "" };
  let state = {};
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    state = {};
    for (const key in defaults) state[key] = params.get(key) || defaults[key];
    state.page = Math.max(1, parseInt(state.page, 10) || 1);
    state.size = Math.max(1, Math.min(500, parseInt(state.size, 10) || I.pageSize));
    if (state.sort && !(state.sort in I.metrics)) state.sort = "";
    const compare = parseInt(state.compare, 10);
    state.compare = I.requestKeys && compare >= 0 && compare < I.count && I.requestKeys[compare] >= 0
      ? String(compare) : "";
    if (!I.fates) state.fate = "all";
  }
  function hashOf(changes) {
    const next = Object.assign({}, state, changes);
    const params = new URLSearchParams();
    for (const key in defaults) if (String(next[key]) !== defaults[key]) params.set(key, next[key]);
    return params.toString();
  }
  function go(changes) {
    const hash = hashOf(changes);
    if (location.hash.slice(1) === hash) render(); else location.hash = hash;
  }

  let order = null, orderKey = null;
  function computeOrder() {
    const key = [state.status, state.error_class, state.settings, state.fate, state.sort, state.dir].join("\u0000");
    if (key === orderKey) return order;
    const status = state.status === "all" ? null : I.statuses.indexOf(state.status);
    const errorClass = state.error_class === "all" ? null : I.errorClasses.indexOf(state.error_class);
    const settings = state.settings === "all" ? null : I.settingsPrints.indexOf(state.settings);
    const fate = state.fate === "all" ? null : I.fates.indexOf(state.fate);
    const rows = [];
    for (let i = 0; i < I.count; i++) {
      if (status !== null && I.status[i] !== status) continue;
      if (errorClass !== null && I.errorClass[i] !== errorClass) continue;
      if (settings !== null && I.settings[i] !== settings) continue;
      if (fate !== null && I.fate[i] !== fate) continue;
      rows.push(i);
    }
    if (state.sort) {
      const values = I.metrics[state.sort];
      const sign = state.dir === "desc" ? -1 : 1;
      rows.sort(function (a, b) {
        const x = values[a], y = values[b];
        if (x === null) return y === null ? a - b : 1;  // missing values last, either direction
        if (y === null) return -1;
        return (x - y) * sign || a - b;
      });
    }
    order = Int32Array.from(rows);
    orderKey = key;
    return order;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  function formatMetric(name, value) {
    if (value === null) return "–";
    if (name === "mask_coverage") return (100 * value).toFixed(1) + " %";
    if (name === "background_psnr") return value.toFixed(1) + " dB";
    return value.toFixed(3);
  }
  function thumb(stem, kind, caption) {
    const figure = el("figure");
    const img = el("img");
    img.loading = "lazy";
    img.alt = caption;
    img.src = "thumbs/" + stem + "-" + kind + ".jpg";
    img.onerror = function () { figure.replaceChild(el("div", "missing", "no thumbnail"), img); };
    figure.append(img, el("figcaption", null, caption));
    return figure;
  }
  function card(index, row) {
    const node = el("article", "card status-" + row.status);
    node.dataset.id = row.id === null ? "" : row.id;
    node.dataset.row = String(index);
    if (row.thumbs) {
      const thumbs = el("div", "thumbs");
      thumbs.append(thumb(row.thumbs, "in", "input"), thumb(row.thumbs, "mask", "mask"),
                    thumb(row.thumbs, "edit", "edit"));
      node.append(thumbs);
    }
    const head = el("div", "id", row.id === null ? "(no id)" : row.id);
    head.append(el("span", "status", " · " + row.status));
    node.append(head);
    node.append(el("div", "prompt", (row.source_prompt || "(no source prompt)") + " → " + (row.target_prompt || "")));
    if (row.status !== "ok" && row.status !== "filtered") {
      const error = el("div", "error");
      error.append(el("b", null, (row.error_class || "error") + ": "), document.createTextNode(row.error || ""));
      node.append(error);
    }
    const metrics = metricList(index);
    if (row.seed !== null) metrics.append(el("dt", null, "seed"), el("dd", null, row.seed));
    node.append(metrics);
    if (isCandidate(row)) {
      node.append(el("div", "drawn", "candidate " + row.candidate + ": " + drawnText(row.candidate_settings)));
      if (row.filter_reason) node.append(el("div", "reason", "filtered: " + row.filter_reason));
      const button = el("button", "compare", "candidates of this request");
      button.type = "button";
      button.onclick = function () { go({ compare: String(index) }); };
      node.append(button);
    }
    return node;
  }
  function metricList(index) {
    const metrics = el("dl");
    for (const name in I.metrics) {
      const value = I.metrics[name][index];
      if (value === null) continue;
      metrics.append(el("dt", null, I.metricLabels[name]), el("dd", "metric-" + name, formatMetric(name, value)));
    }
    return metrics;
  }

  // Candidates: a record's request is its id less "~c<candidate>"; drawn settings are a JSON object.
  function isCandidate(row) { return row.candidate !== undefined && row.candidate !== null; }
  function requestOf(row) {
    const suffix = "~c" + row.candidate;
    return row.id !== null && row.id.endsWith(suffix) ? row.id.slice(0, -suffix.length) : row.id;
  }
  function drawnText(text) {
    if (!text) return "base settings";
    try {
      const drawn = JSON.parse(text);
      const parts = Object.keys(drawn).map(function (name) {
        const value = drawn[name];
        return name + "=" + (typeof value === "number" && !Number.isInteger(value) ? value.toPrecision(4) : value);
      });
      return parts.length ? parts.join(", ") : "base settings";
    } catch (error) {
      return text;
    }
  }
  async function loadRows(indices) {
    const needed = Array.from(new Set(indices.map(function (r) { return Math.floor(r / I.chunkRows); })));
    const loaded = await Promise.all(needed.map(loadChunk));
    const byChunk = new Map(needed.map(function (n, i) { return [n, loaded[i]]; }));
    return function (r) { return byChunk.get(Math.floor(r / I.chunkRows))[r % I.chunkRows]; };
  }
  function candidateCard(index, row) {
    const node = el("article", "candidate status-" + row.status);
    node.dataset.id = row.id === null ? "" : row.id;
    node.dataset.row = String(index);
    node.dataset.candidate = String(row.candidate);
    const head = el("div", "id", "candidate " + row.candidate);
    head.append(el("span", "status", " · " + (row.status === "ok" ? "kept" : row.status)));
    node.append(head);
    if (row.thumbs) {
      const thumbs = el("div", "thumbs");
      thumbs.append(thumb(row.thumbs, "mask", "mask"), thumb(row.thumbs, "edit", "edit"));
      node.append(thumbs);
    } else {
      node.append(el("div", "muted", row.status === "filtered"
        ? "no pictures (filtered; candidates.keep_rejected keeps them)" : "no thumbnails"));
    }
    node.append(el("div", "drawn", drawnText(row.candidate_settings)));
    if (row.filter_reason) node.append(el("div", "reason", row.filter_reason));
    if (row.status === "error") {
      node.append(el("div", "error", (row.error_class || "error") + ": " + (row.error || "")));
    }
    const metrics = metricList(index);
    if (row.seed !== null) metrics.append(el("dt", null, "seed"), el("dd", null, row.seed));
    node.append(metrics);
    return node;
  }
  let shownCompare = "";
  async function renderCompare(mine) {
    const box = $("request");
    if (!box) return true;
    if (state.compare === "") {
      box.hidden = true;
      box.replaceChildren();
      shownCompare = "";
      return true;
    }
    const at = parseInt(state.compare, 10);
    const key = I.requestKeys[at];
    const members = [];
    for (let i = 0; i < I.count; i++) if (I.requestKeys[i] === key) members.push(i);
    const rowAt = await loadRows(members);
    if (mine !== token) return false;
    const request = requestOf(rowAt(at));
    const items = members.map(function (r) { return [r, rowAt(r)]; }).filter(function (item) {
      return isCandidate(item[1]) && requestOf(item[1]) === request;  // a request key shared by chance: by id
    });
    items.sort(function (a, b) { return a[1].candidate - b[1].candidate || a[0] - b[0]; });
    const kept = items.filter(function (item) { return item[1].status === "ok"; }).length;
    const head = el("div", "head");
    head.append(el("b", null, "Candidates of request"),
                el("span", "request-id", request === null ? "(no id)" : request),
                el("span", "muted", items.length + " candidates, " + kept + " kept"));
    const withThumbs = items.find(function (item) { return item[1].thumbs; });
    const close = el("button", "close", "close");
    close.type = "button";
    close.onclick = function () { go({ compare: "" }); };
    head.append(close);
    const strip = el("div", "strip");
    if (withThumbs) {
      const input = el("div", "candidate input");
      input.append(el("div", "id", "input"));
      const thumbs = el("div", "thumbs");
      thumbs.append(thumb(withThumbs[1].thumbs, "in", "input"));
      input.append(thumbs, el("div", "prompt", (withThumbs[1].source_prompt || "(no source prompt)") + " → " +
                                               (withThumbs[1].target_prompt || "")));
      strip.append(input);
    }
    strip.append.apply(strip, items.map(function (item) { return candidateCard(item[0], item[1]); }));
    box.replaceChildren(head, strip);
    box.hidden = false;
    if (shownCompare !== state.compare) box.scrollIntoView({ block: "nearest" });
    shownCompare = state.compare;
    return true;
  }

  let token = 0;
  async function render() {
    const mine = ++token;
    const rows = computeOrder();
    const pages = Math.max(1, Math.ceil(rows.length / state.size));
    const page = Math.min(state.page, pages);
    const slice = rows.subarray((page - 1) * state.size, page * state.size);
    syncControls(page, pages, rows.length);
    const needed = Array.from(new Set(Array.from(slice, function (r) { return Math.floor(r / I.chunkRows); })));
    let loaded;
    try {
      loaded = await Promise.all(needed.map(loadChunk));
    } catch (error) {
      $("problem").textContent = error.message;
      return;
    }
    if (mine !== token) return;
    const byChunk = new Map(needed.map(function (n, i) { return [n, loaded[i]]; }));
    const cards = Array.from(slice, function (r) {
      return card(r, byChunk.get(Math.floor(r / I.chunkRows))[r % I.chunkRows]);
    });
    $("grid").replaceChildren.apply($("grid"), cards);
    try {
      if (!(await renderCompare(mine))) return;
    } catch (error) {
      $("problem").textContent = error.message;
      return;
    }
    $("grid").dataset.view = hashOf({ page: page });
    $("problem").textContent = "";
    performance.mark("diffedit-rendered");  // for timing the report (scripts/report_benchmark.py)
  }

  function syncControls(page, pages, matches) {
    $("status").value = state.status;
    $("error_class").value = state.error_class;
    $("settings").value = state.settings;
    if ($("fate")) $("fate").value = state.fate;
    $("sort").value = state.sort;
    $("dir").value = state.dir;
    $("page").value = String(page);
    $("page").max = String(pages);
    $("pages").textContent = "of " + pages;
    $("matches").textContent = matches + (matches === 1 ? " record" : " records");
    $("prev").disabled = page <= 1;
    $("next").disabled = page >= pages;
    state.page = page;
  }

  function fill(select, values, counts) {
    for (const value of values) {
      const option = el("option", null, counts ? value + " (" + counts[value] + ")" : value);
      option.value = value;
      select.append(option);
    }
  }
  function count(codes, names) {
    const counts = {};
    names.forEach(function (name) { counts[name] = 0; });
    for (let i = 0; i < codes.length; i++) if (codes[i] >= 0) counts[names[codes[i]]] += 1;
    return counts;
  }

  function setup() {
    fill($("status"), I.statuses, count(I.status, I.statuses));
    fill($("error_class"), I.errorClasses, count(I.errorClass, I.errorClasses));
    fill($("settings"), I.settingsPrints, count(I.settings, I.settingsPrints));
    if ($("fate") && I.fates) {
      fill($("fate"), I.fates, count(I.fate, I.fates));
      $("fate").onchange = function () { go({ fate: this.value, page: 1 }); };
    }
    for (const name in I.metrics) {
      const option = el("option", null, I.metricLabels[name]);
      option.value = name;
      $("sort").append(option);
    }
    $("status").onchange = function () { go({ status: this.value, page: 1 }); };
    $("error_class").onchange = function () { go({ error_class: this.value, page: 1 }); };
    $("settings").onchange = function () { go({ settings: this.value, page: 1 }); };
    $("sort").onchange = function () { go({ sort: this.value, page: 1 }); };
    $("dir").onchange = function () { go({ dir: this.value, page: 1 }); };
    $("page").onchange = function () { go({ page: Math.max(1, parseInt(this.value, 10) || 1) }); };
    $("prev").onclick = function () { go({ page: state.page - 1 }); };
    $("next").onclick = function () { go({ page: state.page + 1 }); };
    window.addEventListener("hashchange", function () { readHash(); render(); });
    readHash();
    render();
  }
  setup();
})();
"""
