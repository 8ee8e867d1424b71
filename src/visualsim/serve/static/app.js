// visualsim search-by-photo page: plain JS, no build step. Every URL is relative,
// so the page works wherever the app is mounted.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = { query: null, fields: {}, browseOffset: 0, seq: 0 };
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
        lab.textContent = name;
        lab.htmlFor = "f-" + name + "-min";
        const range = document.createElement("div");
        range.className = "range";
        for (const end of ["min", "max"]) {
          const input = document.createElement("input");
          input.type = "number";
          input.id = "f-" + name + "-" + end;
          input.step = info.type === "int" ? "1" : "any";
          input.placeholder = end === "min" ? (info.min ?? "min") : (info.max ?? "max");
          input.setAttribute("aria-label", name + " " + (end === "min" ? "at least" : "at most"));
          input.addEventListener("change", rerun);
          range.appendChild(input);
        }
        wrap.append(lab, range);
      } else {
        const lab = document.createElement("label");
        lab.textContent = name;
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
            opt.value = String(v); opt.textContent = String(v);
            control.appendChild(opt);
          }
        } else {
          control = document.createElement("input");
          control.type = "text";
          control.placeholder = "exact value";
        }
        control.id = "f-" + name;
        control.name = name;
        control.addEventListener("change", rerun);
        wrap.append(lab, control);
      }
      box.appendChild(wrap);
    }
  }

  function card(item, onPick, withScore) {
    const li = document.createElement("li");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "item";
    btn.dataset.id = String(item.id);
    btn.setAttribute("aria-label", "Show items similar to " + item.id +
      (withScore ? " (score " + item.score.toFixed(3) + ")" : ""));
    if (item.has_image) {
      const img = document.createElement("img");
      img.src = itemURL(item.id, "/image");
      img.alt = "Item " + item.id;
      if (!withScore) img.loading = "lazy"; // results load at once, the browse strip lazily
      btn.appendChild(img);
    } else {
      const none = document.createElement("span");
      none.className = "noimg";
      none.textContent = "no image";
      btn.appendChild(none);
    }
    const id = document.createElement("span");
    id.className = "id";
    id.textContent = String(item.id);
    btn.appendChild(id);
    if (withScore) {
      const sc = document.createElement("span");
      sc.className = "score";
      sc.textContent = "score " + item.score.toFixed(3);
      btn.appendChild(sc);
    }
    const meta = Object.entries(item.metadata || {}).slice(0, 4)
      .map(([k, v]) => k + ": " + v).join(" · ");
    if (meta) {
      const m = document.createElement("span");
      m.className = "meta";
      m.textContent = meta;
      btn.appendChild(m);
    }
    btn.addEventListener("click", () => onPick(item));
    li.appendChild(btn);
    return li;
  }

  function showResults(results) {
    const list = $("results");
    list.replaceChildren(...results.map((r) => card(r, (it) => similarTo(it.id, it.has_image), true)));
    const where = whereString();
    status(results.length + " result" + (results.length === 1 ? "" : "s") +
      (where ? " matching " + where : ""));
  }

  async function run() {
    if (!state.query) return;
    const seq = ++state.seq;
    // one result per photo (the server's default), or every item, repeats included
    const params = new URLSearchParams({ k: $("k").value, distinct: String($("distinct").checked) });
    const where = whereString();
    if (where) params.set("where", where);
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
      if (seq === state.seq) showResults(body.results);
    } catch (err) {
      if (seq === state.seq) { $("results").replaceChildren(); status(err.message, true); }
    } finally {
      // the grid holds the last query's results until this one's arrive
      if (seq === state.seq) $("results").setAttribute("aria-busy", "false");
    }
  }

  function rerun() { run(); }

  function showQuery(src, label) {
    $("query-view").hidden = false;
    const img = $("query-image");
    if (src) { img.src = src; img.hidden = false; img.alt = label; } else { img.hidden = true; }
    $("query-label").textContent = label;
  }

  function searchPhoto(file) {
    if (!file) return;
    if (!file.type.startsWith("image/") && file.type !== "") {
      status("That file is not an image.", true);
      return;
    }
    if (state.objectURL) URL.revokeObjectURL(state.objectURL);
    state.objectURL = URL.createObjectURL(file);
    state.query = { kind: "photo", file };
    showQuery(state.objectURL, "Your photo");
    run();
  }

  function similarTo(id, hasImage) {
    state.query = { kind: "item", id };
    showQuery(hasImage ? itemURL(id, "/image") : null, "Similar to " + id);
    run().then(() => $("results-heading").focus());
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
