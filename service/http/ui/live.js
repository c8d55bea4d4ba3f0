// The live view of the selected version (GET models/{name}/{version}/live, refreshed while the
// page is open) and the evaluation of a labelled folder (POST evaluate, in parts).

import { evaluate, getJson, inParts } from "./api.js";
import { fmt } from "./curves.js";
import { h } from "./models.js";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 2000;
let timer = 0;
let current = null;

function estimate(e, target, metric, policy) {
  if (!e || !e.support) return [h("td", {}, "–"), h("td", {}, "–"), h("td", {}, "0")];
  // Read the bounds, not the point: only the targeted metric is compared with the target.
  const judged = metric === policy && target !== null && target !== undefined;
  const state = !judged ? "" : e.upper_bound < target ? "below" : e.lower_bound >= target ? "meets" : "";
  return [h("td", { class: state, dataset: { field: `${metric}` } }, fmt(e.value)),
    h("td", { class: state, dataset: { field: `${metric}-bounds` } }, `${fmt(e.lower_bound)} – ${fmt(e.upper_bound)}`),
    h("td", { dataset: { field: `${metric}-support` } }, String(e.support))];
}

function psi(value) {
  if (value === null || value === undefined) return "–";
  const reading = value < 0.1 ? "stable" : value <= 0.2 ? "a shift" : "drift";
  return `${fmt(value)} (${reading})`;
}

function render(view) {
  const box = $("live");
  const drift = view.drift
    ? `drift over ${view.drift.samples} served image(s): labels ${psi(view.drift.label_psi)}, confidence ${psi(view.drift.confidence_psi)}`
      + (view.drift.label_psi === null ? ` (computed from ${view.drift.min_samples} images)` : "")
    : "no drift reference in this version's metadata";
  const target = view.target === null ? "no target" : `target ${view.policy} ≥ ${view.target} at confidence ${view.confidence}`;
  const rows = view.per_class.filter((c) => c.precision.support || c.recall.support).map((c) =>
    h("tr", { dataset: { label: c.label } }, h("th", { scope: "row" }, c.label),
      ...estimate(c.precision, view.target, "precision", view.policy), ...estimate(c.recall, view.target, "recall", view.policy)));
  const head = h("tr", {}, ["class", "precision", "bounds", "n", "recall", "bounds", "n"].map((c) => h("th", { scope: "col" }, c)));
  box.dataset.feedback = String(view.feedback);
  box.replaceChildren(
    h("p", {}, h("strong", { dataset: { field: "feedback" } }, `${view.feedback} feedback image(s)`),
      ` in the window of worker ${view.pid}; ${target}; ${drift}.`),
    rows.length
      ? h("table", { class: "grid compact live" }, h("caption", { class: "sr-only" }, "Live precision and recall per class"), h("thead", {}, head), h("tbody", {}, rows))
      : h("p", { class: "hint" }, "No feedback yet: mark the true label of classified images above."));
}

async function refresh() {
  if (!current) return;
  const entry = current;
  try {
    const view = await getJson(`models/${encodeURIComponent(entry.name)}/${entry.version}/live`);
    if (entry === current) render(view);
  } catch (err) {
    if (entry === current) $("live").replaceChildren(h("p", { class: "hint" }, err.message));
  }
  if (entry === current) timer = setTimeout(refresh, REFRESH_MS);
}

export function startLive(entry) {
  stopLive();
  current = entry;
  if (entry && entry.status === "ready") refresh();
  else $("live").replaceChildren(h("p", { class: "hint" }, "Only a ready version has a live view."));
}

export function stopLive() {
  current = null;
  clearTimeout(timer);
}

// The label of a file in a chosen or dropped folder: the name of the folder it sits in.
function labelOf(file) {
  const parts = (file.relativePath || file.webkitRelativePath || "").split("/");
  return parts.length >= 2 ? parts[parts.length - 2] : "";
}

// Every file under a dropped folder, each with its path (the browser gives entries, not files).
async function filesUnder(entry, path = "") {
  if (entry.isFile) {
    const file = await new Promise((ok, fail) => entry.file(ok, fail));
    file.relativePath = `${path}${entry.name}`;
    return [file];
  }
  const reader = entry.createReader();
  const children = [];
  for (;;) { // readEntries gives the entries in batches, then an empty one
    const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
    if (!batch.length) break;
    children.push(...batch);
  }
  const nested = await Promise.all(children.map((c) => filesUnder(c, `${path}${entry.name}/`)));
  return nested.flat();
}

function summary(answers, total) {
  const merged = {};
  let correct = 0;
  for (const a of answers) {
    correct += Math.round(a.accuracy * a.samples);
    for (const [label, m] of Object.entries(a.per_class)) {
      const sum = merged[label] || (merged[label] = { tp: 0, predicted: 0, support: 0 });
      sum.tp += Math.round(m.recall * m.support);
      sum.support += m.support;
      sum.predicted += m.precision > 0 ? Math.round((m.recall * m.support) / m.precision) : 0;
    }
  }
  const rows = Object.entries(merged).filter(([, m]) => m.support || m.predicted).map(([label, m]) =>
    h("tr", { dataset: { label } }, h("th", { scope: "row" }, label),
      h("td", {}, fmt(m.predicted ? m.tp / m.predicted : 0)), h("td", {}, fmt(m.support ? m.tp / m.support : 0)), h("td", {}, String(m.support))));
  return [h("p", { dataset: { field: "accuracy" } }, `${total} image(s) in ${answers.length} request(s): accuracy ${fmt(correct / total)} (top class).`),
    h("table", { class: "grid compact" }, h("caption", { class: "sr-only" }, "Evaluation per class"),
      h("thead", {}, h("tr", {}, ["class", "precision", "recall", "support"].map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows))];
}

export function wireEvaluate(selected, limit) {
  const run = (chosen) => evaluateFiles(chosen, selected, limit);
  $("eval-files").addEventListener("change", (e) => run([...e.target.files]));
  const zone = $("eval-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const entries = [...e.dataTransfer.items].map((item) => item.webkitGetAsEntry()).filter(Boolean);
    run((await Promise.all(entries.map((entry) => filesUnder(entry)))).flat());
  });
}

async function evaluateFiles(chosen, selected, limit) {
  const files = chosen.filter((f) => labelOf(f) && /\.(png|jpe?g|bmp|gif|webp)$/i.test(f.name));
  const box = $("evaluation");
  const entry = selected();
  if (!files.length || !entry) return box.replaceChildren(h("p", { class: "hint" }, "Choose a folder of class folders of images."));
  const size = limit() > 0 ? limit() : files.length;
  try {
    const answers = await inParts(files, size,
      (part) => evaluate(part, part.map(labelOf), { model: entry.name, version: entry.version }),
      (done, total) => box.replaceChildren(h("p", {}, `Evaluated ${done} of ${total} image(s)…`)));
    box.replaceChildren(...summary(answers, files.length));
    box.dataset.samples = String(files.length);
  } catch (err) {
    box.replaceChildren(h("p", { class: "error" }, err.message));
  }
}
