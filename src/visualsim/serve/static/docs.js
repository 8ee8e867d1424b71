// The API reference at /docs: this server's openapi.json as a list of endpoints.
// Served from the package (no third-party script); text only, never HTML from the spec.
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function describeParams(op) {
  const list = el("ul");
  for (const p of op.parameters || []) {
    const schema = p.schema || {};
    const bits = [p.name + " (" + p.in + (p.required ? ", required" : "") + ")"];
    if (schema.type) bits.push(schema.type);
    if (p.description || schema.description) bits.push(p.description || schema.description);
    list.appendChild(el("li", bits.join(": ")));
  }
  const body = op.requestBody && op.requestBody.content;
  if (body) list.appendChild(el("li", "body: " + Object.keys(body).join(" or ")));
  return list;
}

async function main() {
  const target = document.getElementById("endpoints");
  try {
    const response = await fetch("openapi.json");
    const spec = await response.json();
    document.getElementById("title").textContent =
      (spec.info && spec.info.title ? spec.info.title + " " : "") + "API reference";
    target.replaceChildren();
    for (const [path, methods] of Object.entries(spec.paths || {})) {
      for (const [method, op] of Object.entries(methods)) {
        const section = el("section", undefined, "panel");
        section.appendChild(el("h2", method.toUpperCase() + " " + path));
        if (op.summary) section.appendChild(el("p", op.summary));
        section.appendChild(describeParams(op));
        target.appendChild(section);
      }
    }
  } catch (err) {
    target.replaceChildren(el("p", "Could not load openapi.json: " + err));
  }
}

main();
