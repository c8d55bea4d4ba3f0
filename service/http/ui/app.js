// Wires the page: load /models, pick a version, show its card, classify dropped or chosen images
// (in parts within the server's per-request limit), and re-label them from their stored
// probabilities when the precision/recall target or top-k moves: images are sent only once.

import { ApiError, apiKey, classify, getJson, inParts, setApiKey } from "./api.js";
import { renderCard, renderModels, renderRollouts } from "./models.js";
import { relabel, renderResults, renderThresholds } from "./results.js";
import { startLive, stopLive, wireEvaluate } from "./live.js";

const $ = (id) => document.getElementById(id);
const state = {
  models: [], limit: 0, selected: null, card: null, files: [], urls: [],
  answer: null, applied: null, runs: 0, targets: 0,
};

export function say(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

export function explain(err) {
  if (err instanceof ApiError && err.status === 401) return `${err.message} Enter the key above.`;
  return err.message || String(err);
}

function count(name) {
  document.body.dataset[name] = String(Number(document.body.dataset[name] || 0) + 1);
}

async function loadModels() {
  try {
    const listing = await getJson("models");
    state.models = listing.models;
    state.limit = listing.limits ? listing.limits.max_images_per_request : 0;
    renderRollouts($("rollouts"), listing.rollouts || {});
  } catch (err) {
    say(explain(err), true);
    return;
  }
  const ready = state.models.find((m) => m.status === "ready");
  const keep = state.selected && state.models.find((m) => m.name === state.selected.name && m.version === state.selected.version);
  await select(keep || ready || state.models[0] || null);
}

async function select(entry) {
  const rerun = state.files.length > 0; // images already shown are classified again by this one
  state.selected = entry;
  state.answer = null;
  state.applied = null;
  renderModels($("models").querySelector("tbody"), state.models, entry, select);
  $("selected-name").textContent = entry ? `${entry.name} v${entry.version}` : "no model";
  stopLive();
  if (!entry) return;
  try {
    state.card = await getJson(`models/${encodeURIComponent(entry.name)}/${entry.version}/card`);
    await retarget();
    await renderCard($("card"), state.card);
    say(entry.status === "ready" ? "" : `${entry.name} v${entry.version} is ${entry.status}: ${entry.reason || ""}`, entry.status !== "ready");
  } catch (err) {
    say(explain(err), true);
  }
  startLive(entry);
  if (rerun) await run();
}

function target() {
  const policy = document.querySelector('input[name="policy"]:checked').value;
  return { policy, value: Number($("target-value").value).toFixed(2) };
}

function describe({ policy, value }) {
  return policy === "calibrated" ? "calibrated thresholds" : `target ${policy} ${Number(value)}`;
}

// The thresholds to apply now, and per class what holds there (bound, support, certified).
async function appliedThresholds() {
  const wanted = target();
  const perClass = state.card?.thresholds?.per_class || [];
  if (wanted.policy === "calibrated") {
    const fromAnswer = state.answer ? state.answer.thresholds : null;
    const thresholds = Object.fromEntries(perClass.map((c) => [c.label, fromAnswer ? fromAnswer[c.label] : c.threshold]));
    return { wanted, thresholds, choices: perClass, target: state.card?.thresholds?.target };
  }
  const { name, version } = state.selected;
  const body = await getJson(`models/${encodeURIComponent(name)}/${version}/thresholds?target_${wanted.policy}=${wanted.value}`);
  const thresholds = Object.fromEntries(body.per_class.map((c) => [c.label, c.threshold]));
  return { wanted, thresholds, choices: body.per_class, target: body.target };
}

async function retarget() {
  if (!state.card || !state.card.thresholds) return;
  const ticket = ++state.targets;
  let applied;
  try {
    applied = await appliedThresholds();
  } catch (err) {
    if (ticket === state.targets) say(explain(err), true);
    return;
  }
  if (ticket !== state.targets) return; // a newer target is on its way
  state.applied = applied;
  renderThresholds($("threshold-table"), $("pr-curves"), state.card.thresholds, applied);
  $("threshold-source").textContent = `Applied: ${describe(applied.wanted)}.`;
  if (state.answer) draw();
}

function draw() {
  const k = Number($("top-k").value) || 1;
  const predictions = relabel(state.answer.predictions, state.applied.thresholds, k);
  renderResults($("results"), state.files, state.urls, predictions, state.applied.thresholds, state.answer.receipts, state.selected);
  count("relabels");
}

function progress(done, total) {
  const bar = $("progress");
  bar.hidden = done >= total;
  bar.max = total;
  bar.value = done;
  say(`Classified ${done} of ${total} image(s)…`);
}

async function run() {
  if (!state.files.length || !state.selected) return;
  const files = state.files;
  const ticket = ++state.runs;
  const { name, version } = state.selected;
  const size = state.limit > 0 ? state.limit : files.length;
  progress(0, files.length);
  try {
    const answers = await inParts(files, size, (part) => classify(part, { model: name, version, top_k: 1 }), progress);
    if (ticket !== state.runs || files !== state.files) return;
    // One receipt per part: an image is named by its request id and its index in that part.
    const receipts = answers.flatMap((a) => a.predictions.map((_, index) => ({ request_id: a.request_id, index })));
    state.answer = { thresholds: answers[0].thresholds, predictions: answers.flatMap((a) => a.predictions), receipts };
    if (!state.applied || state.applied.wanted.policy === "calibrated") state.applied = await appliedThresholds();
    draw();
    renderThresholds($("threshold-table"), $("pr-curves"), state.card.thresholds, state.applied);
    $("threshold-source").textContent = `Applied: ${describe(state.applied.wanted)} (${answers[0].model} v${answers[0].version}).`;
    say(`Classified ${files.length} image(s) with ${answers[0].model} v${answers[0].version} in ${answers.length} request(s).`);
    count("requests");
  } catch (err) {
    $("progress").hidden = true;
    if (ticket === state.runs) say(explain(err), true);
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
  state.answer = null;
  run();
}

let timer = 0;
function later() {
  clearTimeout(timer);
  timer = setTimeout(retarget, 150);
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
  $("top-k").addEventListener("change", () => { if (state.answer) draw(); });
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
wireEvaluate(() => state.selected, () => state.limit);
loadModels();
