// Wires the page: load /models, pick a version, show its card, classify dropped or chosen images,
// and re-send them when the precision/recall target moves.

import { ApiError, apiKey, classify, getJson, setApiKey } from "./api.js";
import { renderCard, renderModels } from "./models.js";
import { renderResults, renderThresholds } from "./results.js";

const $ = (id) => document.getElementById(id);
const state = { models: [], selected: null, card: null, files: [], urls: [], last: null, busy: 0 };

function say(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

function explain(err) {
  if (err instanceof ApiError && err.status === 401) return `${err.message} Enter the key above.`;
  return err.message || String(err);
}

async function loadModels() {
  try {
    state.models = (await getJson("/models")).models;
  } catch (err) {
    say(explain(err), true);
    return;
  }
  const ready = state.models.find((m) => m.status === "ready");
  const keep = state.selected && state.models.find((m) => m.name === state.selected.name && m.version === state.selected.version);
  await select(keep || ready || state.models[0] || null);
}

async function select(entry) {
  state.selected = entry;
  state.last = null;
  renderModels($("models").querySelector("tbody"), state.models, entry, select);
  $("selected-name").textContent = entry ? `${entry.name} v${entry.version}` : "no model";
  if (!entry) return;
  try {
    state.card = await getJson(`/models/${encodeURIComponent(entry.name)}/${entry.version}/card`);
    drawThresholds();
    await renderCard($("card"), state.card);
    say(entry.status === "ready" ? "" : `${entry.name} v${entry.version} is ${entry.status}: ${entry.reason || ""}`, entry.status !== "ready");
  } catch (err) {
    say(explain(err), true);
  }
  if (state.files.length) await run();
}

function drawThresholds() {
  if (!state.card || !state.card.thresholds) return;
  renderThresholds($("threshold-table"), $("pr-curves"), state.card.thresholds, state.last ? state.last.thresholds : null);
}

function options() {
  const policy = document.querySelector('input[name="policy"]:checked').value;
  const target = $("target-value").value;
  return {
    model: state.selected?.name,
    version: state.selected?.version,
    top_k: $("top-k").value,
    target_precision: policy === "precision" ? target : undefined,
    target_recall: policy === "recall" ? target : undefined,
  };
}

function describe(opts) {
  if (opts.target_precision) return `target precision ${opts.target_precision}`;
  if (opts.target_recall) return `target recall ${opts.target_recall}`;
  return "calibrated thresholds";
}

async function run() {
  if (!state.files.length || !state.selected) return;
  const ticket = ++state.busy;
  const opts = options(); // what this request asked, whatever the controls say by its answer
  say(`Classifying ${state.files.length} image(s)…`);
  try {
    const body = await classify(state.files, opts);
    if (ticket !== state.busy) return; // a newer request is on its way
    state.last = body;
    renderResults($("results"), state.files, state.urls, body);
    drawThresholds();
    $("threshold-source").textContent = `Applied: ${describe(opts)} (${body.model} v${body.version}).`;
    say(`Classified ${body.predictions.length} image(s) with ${body.model} v${body.version}.`);
    document.body.dataset.requests = String(Number(document.body.dataset.requests || 0) + 1);
  } catch (err) {
    if (ticket === state.busy) say(explain(err), true);
  }
}

function takeFiles(fileList) {
  // The server fills the file input's accept list with the suffixes Pillow decodes.
  const suffixes = $("files").accept.split(",").filter((s) => s.startsWith("."));
  const known = (f) => suffixes.some((s) => f.name.toLowerCase().endsWith(s));
  const files = [...fileList].filter((f) => f.type.startsWith("image/") || known(f));
  if (!files.length) return say("Those are not images: drop PNG, JPEG, TIFF, BMP, GIF, WebP or another format Pillow decodes.", true);
  state.urls.forEach((u) => URL.revokeObjectURL(u));
  state.files = files;
  state.urls = files.map((f) => URL.createObjectURL(f));
  run();
}

let timer = 0;
function later() {
  state.busy++; // answers to requests sent before this change are stale: drop them
  clearTimeout(timer);
  timer = setTimeout(run, 250);
}

function wireTarget() {
  for (const radio of document.querySelectorAll('input[name="policy"]')) {
    radio.addEventListener("change", () => {
      $("target-value").disabled = radio.value === "calibrated" && radio.checked;
      later();
    });
  }
  $("target-value").addEventListener("input", () => {
    $("target-output").value = Number($("target-value").value).toFixed(2);
    later();
  });
  $("top-k").addEventListener("change", later);
}

function wireFiles() {
  const zone = $("drop-zone");
  $("files").addEventListener("change", (e) => takeFiles(e.target.files));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    takeFiles(e.dataTransfer.files);
  });
}

function wireKey() {
  $("api-key").value = apiKey();
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setApiKey($("api-key").value.trim());
    say("Key set for this tab.");
    loadModels();
  });
}

wireKey();
wireFiles();
wireTarget();
loadModels();
