// The search page: sends queries to the JSON API and shows the results as a grid.
// Text from the server is only ever inserted with textContent, never parsed as HTML.
"use strict";

const el = (id) => document.getElementById(id);
let busy = false;

function showError(message) {
  el("error").textContent = message;
  el("error").hidden = !message;
}

async function readError(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
  } catch (ignored) { /* not JSON: fall back to the status line */ }
  return `${response.status} ${response.statusText}`;
}

function resultCount() {
  const value = parseInt(el("result-count").value, 10);
  return Number.isFinite(value) && value > 0 ? value : 12;
}

function setBusy(state) {
  busy = state;
  for (const id of ["text-submit", "image-submit"]) el(id).disabled = state;
}

async function run(description, request) {
  if (busy) return;
  setBusy(true);
  showError("");
  el("status").textContent = `searching ${description}…`;
  try {
    const response = await request();
    if (!response.ok) throw new Error(await readError(response));
    const body = await response.json();
    render(body.results);
    el("status").textContent =
      `${body.results.length} results for ${description} (${body.took_ms.toFixed(0)} ms)`;
  } catch (error) {
    el("status").textContent = "";
    showError(error.message);
  } finally {
    setBusy(false);
  }
}

function postJson(path, body) {
  return fetch(path, { method: "POST", headers: { "content-type": "application/json" },
                       body: JSON.stringify(body) });
}

function searchSimilar(id) {
  return run(`images like #${id}`, () => postJson("/search/similar", { id, k: resultCount() }));
}

function render(results) {
  const list = el("results");
  const template = el("result-template");
  list.replaceChildren();
  results.forEach((hit, rank) => {
    const item = template.content.firstElementChild.cloneNode(true);
    item.dataset.id = hit.id;
    const image = item.querySelector("img");
    image.src = `/images/${hit.id}`;
    image.alt = hit.captions.length ? hit.captions[0] : hit.path;
    item.querySelector(".similar").addEventListener("click", () => searchSimilar(hit.id));
    item.querySelector(".score").textContent = `#${rank + 1} · ${hit.score.toFixed(3)}`;
    const ids = [];
    if (hit.pid !== null) ids.push(`person ${hit.pid}`);
    if (hit.camid !== null) ids.push(`camera ${hit.camid}`);
    item.querySelector(".ids").textContent = ids.join(" · ");
    item.querySelector(".path").textContent = hit.path;
    const caption = item.querySelector(".caption");
    caption.textContent = hit.captions[0] || "";
    caption.title = hit.captions.join("\n");
    list.appendChild(item);
  });
}

async function loadInfo() {
  try {
    const response = await fetch("/health");
    if (!response.ok) throw new Error(await readError(response));
    const info = await response.json();
    el("gallery-info").textContent =
      `${info.images} images · ${info.backend} search · model ${info.model}`;
    el("query-text").maxLength = info.limits.max_query_chars;
    el("result-count").max = info.limits.max_k;
  } catch (error) {
    el("gallery-info").textContent = "";
    showError(error.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  el("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = el("query-text").value.trim();
    if (text) run(`“${text}”`, () => postJson("/search/text", { text, k: resultCount() }));
  });
  el("image-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const file = el("query-image").files[0];
    if (!file) { showError("choose an image first"); return; }
    const form = new FormData();
    form.append("file", file);
    form.append("k", String(resultCount()));
    run(`images like ${file.name}`, () => fetch("/search/image", { method: "POST", body: form }));
  });
  loadInfo();
});
