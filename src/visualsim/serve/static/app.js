// visualsim search-by-photo page: plain JS, no build step. Every URL is relative,
// so the page works wherever the app is mounted.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  // box: [left, top, right, bottom] in the uploaded photo's own pixels, "locate" (the
  // server finds it, and answers the box it searched), or null
  const state = { query: null, fields: {}, browseOffset: 0, seq: 0, box: null };
  const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

  function status(text, isError) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", Boolean(isError));
  }

  async function getJSON(url, options) {
    const res = await fetch(url, options);
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      const detail = body && body.detail ? body.detail : res.status + " " + res.statusText;
      throw new Error(detail);
    }
    return body;
  }

  function itemURL(id, tail) {
    return "items/" + encodeURIComponent(String(id)) + (tail || "");
  }

  function quote(value) {
    return "'" + String(value).replace(/\\/g, "\\\\").replace(/'/g, "\\'") + "'";
  }

  function whereString() {
    const parts = [];
    for (const [name, info] of Object.entries(state.fields)) {
      if (!NAME.test(name)) continue;
      if (info.type === "int" || info.type === "float") {
        const lo = $("f-" + name + "-min").value, hi = $("f-" + name + "-max").value;
        if (lo !== "") parts.push(name + " >= " + Number(lo));
        if (hi !== "") parts.push(name + " <= " + Number(hi));
      } else {
        const el = $("f-" + name);
        if (!el || el.value === "") continue;
        if (info.type === "bool") parts.push(name + " == " + el.value);
        else parts.push(name + " == " + quote(el.value));
      }
    }
    return parts.join(" and ");
  }

  function buildFilters(fields) {
    state.fields = fields;
    const box = $("filters");
    const KINDS = ["str", "int", "float", "bool"];
    const names = Object.keys(fields).filter((n) => NAME.test(n) && KINDS.includes(fields[n].type));
    $("no-filters").hidden = names.length > 0;
    for (const name of names) {
      const info = fields[name];
      const wrap = document.createElement("div");
      if (info.type === "int" || info.type === "float") {
        const lab = document.createElement("label");
        lab.textContent = humanName(name);
        lab.htmlFor = "f-" + name + "-min";
        const range = document.createElement("div");
        range.className = "range";
        for (const end of ["min", "max"]) {
          const input = document.createElement("input");
          input.type = "number";
          input.id = "f-" + name + "-" + end;
          input.step = info.type === "int" ? "1" : "any";
          input.placeholder = end === "min" ? (info.min ?? "min") : (info.max ?? "max");
          input.setAttribute("aria-label", humanName(name) + " " + (end === "min" ? "at least" : "at most"));
          input.addEventListener("change", rerun);
          range.appendChild(input);
        }
        wrap.append(lab, range);
      } else {
        const lab = document.createElement("label");
        lab.textContent = humanName(name);
        lab.htmlFor = "f-" + name;
        let control;
        const values = info.type === "bool" ? [true, false] : info.values;
        if (values) {
          control = document.createElement("select");
          const any = document.createElement("option");
          any.value = ""; any.textContent = "any";
          control.appendChild(any);
          for (const v of values) {
            const opt = document.createElement("option");
            opt.value = String(v);
            opt.textContent = typeof v === "boolean" ? (v ? "yes" : "no") : String(v);
            control.appendChild(opt);
          }
        } else {
          // too many values for a drop-down: a text box that suggests them as you type
          control = document.createElement("input");
          control.type = "text";
          control.placeholder = "type to see values";
          const list = document.createElement("datalist");
          list.id = "dl-" + name;
          control.setAttribute("list", list.id);
          control.setAttribute("autocomplete", "off");
          let timer = null;
          control.addEventListener("input", () => {
            clearTimeout(timer);
            timer = setTimeout(() => suggest(name, control.value, list), 120);
          });
          control.addEventListener("focus", () => suggest(name, control.value, list));
          wrap.appendChild(list);
        }
        control.id = "f-" + name;
        control.name = name;
        control.addEventListener("change", rerun);
        wrap.append(lab, control);
      }
      box.appendChild(wrap);
    }
  }

  async function suggest(name, prefix, list) {
    try {
      const params = new URLSearchParams({ prefix, limit: "20" });
      const body = await getJSON("fields/" + encodeURIComponent(name) + "/values?" + params);
      list.replaceChildren(...body.values.map((v) => {
        const opt = document.createElement("option");
        opt.value = v.value;
        opt.label = v.value + " (" + v.count + ")";
        return opt;
      }));
    } catch (err) {
      list.replaceChildren(); // suggestions are a help, never an error on the page
    }
  }

  // -- cards that read like a shop's: people's words, not the catalogue's raw fields ------
  const TITLE_FIELDS = ["name", "title", "product_name", "productDisplayName", "display_name"];
  const HIDDEN_FIELDS = /^(_.*|id|.*_id|path|image|image_path|image_url|url|filename|file)$/i;
  const MAX_FACTS = 4;
  const MONEY = /(price|cost|amount|total|msrp)/i;

  function humanName(name) {
    // in_stock -> "In stock", productColour -> "Product colour", MRP stays "MRP"
    const words = String(name).replace(/[_-]+/g, " ")
      .replace(/([a-z0-9])([A-Z])/g, "$1 $2").trim().split(/\s+/)
      .map((w, i) => (/^[A-Z0-9]+$/.test(w) && w.length > 1 ? w : (i ? w.toLowerCase() : w)));
    const text = words.join(" ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function humanValue(name, value) {
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "number" && Number.isFinite(value)) {
      const fraction = Number.isInteger(value) && !MONEY.test(name) ? 0 : 2;
      return value.toLocaleString(undefined, {
        minimumFractionDigits: MONEY.test(name) ? 2 : 0,
        maximumFractionDigits: fraction,
        useGrouping: MONEY.test(name), // a year or a code reads 2012, not 2,012
      });
    }
    const text = String(value).trim();
    return text.length > 40 ? text.slice(0, 39) + "…" : text;
  }

  function facts(metadata, most) {
    const out = [];
    // a price (or cost...) first: what a shopper looks for; then the catalogue's order
    const entries = Object.entries(metadata || {});
    entries.sort((a, b) => Number(MONEY.test(b[0])) - Number(MONEY.test(a[0])));
    for (const [k, v] of entries) {
      if (out.length >= most) break;
      if (TITLE_FIELDS.includes(k) || HIDDEN_FIELDS.test(k)) continue;
      if (v === null || v === undefined || v === "" || typeof v === "object") continue;
      if (typeof v === "number" && !Number.isFinite(v)) continue;
      out.push({ field: k, label: humanName(k), value: humanValue(k, v) });
    }
    return out;
  }

  function titleOf(item) {
    const md = item.metadata || {};
    for (const k of TITLE_FIELDS) {
      if (typeof md[k] === "string" && md[k].trim()) return md[k].trim();
    }
    return null;
  }

  function scoresShown() { return $("show-scores").checked; }

  function cardLabel(btn) {
    const score = btn.dataset.score !== undefined && scoresShown()
      ? ", match score " + Number(btn.dataset.score).toFixed(3) : "";
    return "Show items similar to " + btn.dataset.name + (btn.dataset.facts ? ": " + btn.dataset.facts : "") + score;
  }

  function card(item, onPick, withScore) {
    const li = document.createElement("li");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "item";
    btn.dataset.id = String(item.id);
    const title = titleOf(item);
    const shown = facts(item.metadata, withScore ? MAX_FACTS : 2); // the browse strip: two
    btn.dataset.name = title || String(item.id);
    btn.dataset.facts = shown.map((f) => f.label + " " + f.value).join(", ");
    // the cosine, for developers and tests; on the card only with "Show scores" ticked
    if (withScore) btn.dataset.score = String(item.score);
    if (item.has_image) {
      const img = document.createElement("img");
      img.src = itemURL(item.id, "/image");
      img.alt = "";  // the button's label names the item
      if (!withScore) img.loading = "lazy"; // results load at once, the browse strip lazily
      btn.appendChild(img);
    } else {
      const none = document.createElement("span");
      none.className = "noimg";
      none.textContent = "no image";
      btn.appendChild(none);
    }
    if (title) {
      const t = document.createElement("span");
      t.className = "name";
      t.textContent = title;
      btn.appendChild(t);
    }
    const id = document.createElement("span");
    id.className = title ? "id sub" : "id";
    id.textContent = String(item.id);
    btn.appendChild(id);
    if (shown.length) {
      const m = document.createElement("span");
      m.className = "meta";
      for (const f of shown) {
        const row = document.createElement("span");
        row.className = "fact";
        row.dataset.field = f.field;
        const k = document.createElement("span");
        k.className = "k";
        k.textContent = f.label + ":";
        row.append(k, " " + f.value);
        m.appendChild(row);
      }
      btn.appendChild(m);
    }
    if (withScore) {
      const sc = document.createElement("span");
      sc.className = "score";
      sc.textContent = "Match " + item.score.toFixed(3);
      btn.appendChild(sc);
    }
    btn.setAttribute("aria-label", cardLabel(btn));
    btn.addEventListener("click", () => onPick(item));
    li.appendChild(btn);
    return li;
  }

  function showScores() {
    const on = scoresShown();
    $("results").classList.toggle("scores", on);
    for (const btn of $("results").querySelectorAll("button.item")) {
      btn.setAttribute("aria-label", cardLabel(btn));
    }
  }

  function showResults(results, hints) {
    const list = $("results");
    list.replaceChildren(...results.map((r) => card(r, (it) => similarTo(it.id, it.has_image), true)));
    list.hidden = results.length === 0;
    $("score-toggle").hidden = results.length === 0;
    const where = whereString();
    const boxed = state.query && state.query.kind === "photo" && state.box;
    const missed = state.notFound ? " (no product region found: the whole photo)" : "";
    state.notFound = false;
    // a filter on a value no item has: say what was likely meant ("did you mean ...")
    const hint = hints && hints.length ? " — " + hints.join("; ") : "";
    status(results.length + " result" + (results.length === 1 ? "" : "s") +
      (boxed ? " for the boxed region" : "") + missed + (where ? " matching " + where : "") + hint);
  }

  async function run() {
    if (!state.query) return;
    const seq = ++state.seq;
    // one result per photo (the server's default), or every item, repeats included
    const params = new URLSearchParams({ k: $("k").value, distinct: String($("distinct").checked) });
    const where = whereString();
    if (where) params.set("where", where);
    if (state.query.kind === "photo" && state.box) {
      params.set("box", state.box === "locate" ? "locate" : state.box.join(","));
    }
    status("Searching…");
    $("results").setAttribute("aria-busy", "true");
    try {
      let body;
      if (state.query.kind === "photo") {
        const form = new FormData();
        form.append("image", state.query.file);
        body = await getJSON("query?" + params, { method: "POST", body: form });
      } else {
        body = await getJSON(itemURL(state.query.id, "/similar?" + params));
      }
      if (seq === state.seq) {
        if (state.box === "locate") {
          // the region the server found (null: none stood out, the whole photo was searched)
          state.box = Array.isArray(body.box) ? body.box : null;
          state.notFound = !state.box;
          showBox();
        }
        showResults(body.results, body.hints);
        if (state.reveal) reveal();
      }
    } catch (err) {
      if (seq === state.seq) {
        $("results").replaceChildren();
        $("results").hidden = true;
        status(err.message, true);
        if (state.reveal) reveal();
      }
    } finally {
      // the grid holds the last query's results until this one's arrive
      if (seq === state.seq) $("results").setAttribute("aria-busy", "false");
    }
  }

  function rerun() { run(); }

  // -- after a new photo or item: bring the results into view (a phone shows them below
  // the form) and move focus to their heading, so keyboard and screen-reader users land
  // on them too; smooth unless the shopper asked for reduced motion
  function reveal() {
    state.reveal = false;
    const heading = $("results-heading");
    const r = heading.getBoundingClientRect();
    const onScreen = r.top >= 0 && r.bottom <= window.innerHeight;
    const grid = $("results").getBoundingClientRect();
    const gridSeen = $("results").hidden || grid.top < window.innerHeight;
    if (onScreen && gridSeen && !state.focusResults) { state.focusResults = false; return; }
    state.focusResults = false;
    heading.focus({ preventScroll: true });
    if (!onScreen || !gridSeen) {
      const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
      heading.scrollIntoView({ behavior: still ? "auto" : "smooth", block: "start" });
    }
  }

  function showQuery(src, label, drawable) {
    $("query-view").hidden = false;
    $("results-intro").hidden = true;
    const img = $("query-image");
    if (src) { img.src = src; img.hidden = false; img.alt = label; } else { img.hidden = true; }
    $("query-label").textContent = label;
    $("stage").classList.toggle("draw", Boolean(drawable));
    $("box-help").hidden = !drawable;
    $("locate-box").hidden = !drawable;
    $("find-regions").hidden = !drawable;
    clearRegions();
    state.box = null;
    showBox();
  }

  // -- a box drawn on the uploaded photo (mouse, pen and touch: Pointer Events) --------
  const drag = { id: null, x0: 0, y0: 0 };

  function placeOverlay(left, top, right, bottom, width, height) {
    // in percent of the shown image, so the box follows the image when the page reflows
    const o = $("box-overlay");
    o.style.left = (100 * left / width) + "%";
    o.style.top = (100 * top / height) + "%";
    o.style.width = (100 * (right - left) / width) + "%";
    o.style.height = (100 * (bottom - top) / height) + "%";
    o.hidden = false;
  }

  function showBox() {
    const img = $("query-image");
    const b = Array.isArray(state.box) ? state.box : null;
    $("clear-box").hidden = !b;
    $("box-text").hidden = !b;
    if (!b) { $("box-overlay").hidden = true; $("box-text").textContent = ""; return; }
    placeOverlay(b[0], b[1], b[2], b[3], img.naturalWidth, img.naturalHeight);
    const r = b.map((v) => Math.round(v));
    $("box-text").textContent = "Searching inside the box " + r[0] + "," + r[1] + " – " +
      r[2] + "," + r[3] + " (photo pixels).";
  }

  function pointIn(e) {
    const r = $("query-image").getBoundingClientRect();
    return {
      x: Math.min(Math.max(e.clientX - r.left, 0), r.width),
      y: Math.min(Math.max(e.clientY - r.top, 0), r.height),
      w: r.width, h: r.height,
    };
  }

  function drawable() {
    const img = $("query-image");
    return state.query && state.query.kind === "photo" && img.complete && img.naturalWidth > 0;
  }

  const stage = $("stage");
  stage.addEventListener("pointerdown", (e) => {
    if (!drawable() || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    try { stage.setPointerCapture(e.pointerId); } catch (err) { /* keeps working uncaptured */ }
    const p = pointIn(e);
    drag.id = e.pointerId; drag.x0 = p.x; drag.y0 = p.y;
    placeOverlay(p.x, p.y, p.x, p.y, p.w, p.h);
  });
  stage.addEventListener("pointermove", (e) => {
    if (e.pointerId !== drag.id) return;
    const p = pointIn(e);
    placeOverlay(Math.min(drag.x0, p.x), Math.min(drag.y0, p.y),
      Math.max(drag.x0, p.x), Math.max(drag.y0, p.y), p.w, p.h);
  });
  stage.addEventListener("pointerup", (e) => {
    if (e.pointerId !== drag.id) return;
    drag.id = null;
    const p = pointIn(e);
    const img = $("query-image");
    // display pixels -> the photo's own pixels (the image is shown scaled to fit)
    const sx = img.naturalWidth / p.w, sy = img.naturalHeight / p.h;
    const x0 = Math.min(drag.x0, p.x), x1 = Math.max(drag.x0, p.x);
    const y0 = Math.min(drag.y0, p.y), y1 = Math.max(drag.y0, p.y);
    if (x1 - x0 < 4 || y1 - y0 < 4) { showBox(); return; } // a click, not a box: keep the last
    const left = Math.max(0, Math.floor(x0 * sx)), top = Math.max(0, Math.floor(y0 * sy));
    const right = Math.min(img.naturalWidth, Math.max(left + 1, Math.ceil(x1 * sx)));
    const bottom = Math.min(img.naturalHeight, Math.max(top + 1, Math.ceil(y1 * sy)));
    state.box = [left, top, right, bottom];
    showBox();
    run();
  });
  stage.addEventListener("pointercancel", (e) => {
    if (e.pointerId !== drag.id) return;
    drag.id = null;
    showBox();
  });
  stage.addEventListener("dragstart", (e) => e.preventDefault());
  $("locate-box").addEventListener("click", () => {
    if (!drawable()) return;
    state.box = "locate";
    run();
  });
  // -- several products in one photo: the server finds them, the shopper picks one ------
  function clearRegions() {
    $("region-marks").replaceChildren();
    $("regions").replaceChildren();
    $("regions").hidden = true;
  }

  function showRegions(regions) {
    const img = $("query-image");
    clearRegions();
    regions.forEach((r, i) => {
      const [left, top, right, bottom] = r.box;
      const mark = document.createElement("span");
      mark.className = "region-mark";
      mark.textContent = String(i + 1);
      mark.style.left = (100 * left / img.naturalWidth) + "%";
      mark.style.top = (100 * top / img.naturalHeight) + "%";
      mark.style.width = (100 * (right - left) / img.naturalWidth) + "%";
      mark.style.height = (100 * (bottom - top) / img.naturalHeight) + "%";
      $("region-marks").appendChild(mark);
      const pick = document.createElement("button");
      pick.type = "button";
      pick.className = "region-pick";
      pick.dataset.box = r.box.join(",");
      pick.textContent = "Product " + (i + 1) + " (" + Math.round(100 * r.score) + " %)";
      pick.addEventListener("click", () => { state.box = r.box.slice(); showBox(); run(); });
      $("regions").appendChild(pick);
    });
    $("regions").hidden = regions.length === 0;
  }

  $("find-regions").addEventListener("click", async () => {
    if (!drawable()) return;
    const seq = ++state.seq;
    const params = new URLSearchParams({
      k: $("k").value, distinct: String($("distinct").checked), max_regions: "5",
    });
    const where = whereString();
    if (where) params.set("where", where);
    status("Looking for the products in the photo…");
    $("results").setAttribute("aria-busy", "true");
    try {
      const form = new FormData();
      form.append("image", state.query.file);
      const body = await getJSON("query/regions?" + params, { method: "POST", body: form });
      if (seq !== state.seq) return;
      showRegions(body.regions);
      if (body.regions.length) {
        // the strongest product's results at once; the others one click away
        state.box = body.regions[0].box.slice();
        showBox();
        showResults(body.regions[0].results);
        status(body.regions.length + " product" + (body.regions.length === 1 ? "" : "s") +
          " found; showing product 1 — pick another below the photo");
      }
    } catch (err) {
      if (seq === state.seq) status(err.message, true);
    } finally {
      if (seq === state.seq) $("results").setAttribute("aria-busy", "false");
    }
  });
  $("clear-box").addEventListener("click", () => {
    state.box = null;
    showBox();
    run();
  });

  function searchPhoto(file) {
    if (!file) return;
    if (!file.type.startsWith("image/") && file.type !== "") {
      status("That file is not an image.", true);
      reveal();
      return;
    }
    if (state.objectURL) URL.revokeObjectURL(state.objectURL);
    state.objectURL = URL.createObjectURL(file);
    state.query = { kind: "photo", file };
    state.reveal = true;
    showQuery(state.objectURL, "Your photo", true);
    run();
  }

  function similarTo(id, hasImage) {
    state.query = { kind: "item", id };
    state.reveal = true;
    state.focusResults = true; // the clicked card is gone from the grid: focus follows
    showQuery(hasImage ? itemURL(id, "/image") : null, "Similar to " + id, false);
    run();
  }

  async function browse() {
    try {
      const body = await getJSON("items?limit=24&offset=" + state.browseOffset);
      state.browseOffset += body.items.length;
      for (const it of body.items) $("browse").appendChild(card(it, (x) => similarTo(x.id, x.has_image), false));
      $("more").hidden = state.browseOffset >= body.total;
    } catch (err) {
      status(err.message, true);
    }
  }

  async function start() {
    try {
      const health = await getJSON("health");
      $("summary").textContent = health.items + " items in the catalogue" +
        (health.read_only ? "" : " (writable)");
      const f = await getJSON("fields");
      buildFilters(f.fields);
    } catch (err) {
      $("summary").textContent = "The catalogue is not available: " + err.message;
    }
    browse();
  }

  $("photo").addEventListener("change", (e) => searchPhoto(e.target.files[0]));
  $("k").addEventListener("change", rerun);
  $("distinct").addEventListener("change", rerun);
  $("show-scores").addEventListener("change", showScores);
  $("more").addEventListener("click", browse);
  $("clear-filters").addEventListener("click", () => {
    for (const el of $("filters").querySelectorAll("input, select")) el.value = "";
    rerun();
  });
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); run(); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) searchPhoto(e.dataTransfer.files[0]);
  });
  start();
})();
