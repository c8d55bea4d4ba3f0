// One card per classified image (probability bars, top-k, thresholded labels, a "true label"
// control that sends feedback), and the table and PR curves that show where each class's
// threshold is, what its bound is and whether its target is certified.

import { postJson } from "./api.js";
import { fmt, pointAt, prCurveSvg } from "./curves.js";
import { h } from "./models.js";

// The /classify rule, from stored probabilities: the classes reaching their threshold, highest
// first, and the k most probable.
export function relabel(predictions, thresholds, k) {
  return predictions.map((p) => {
    const ranked = Object.entries(p.probabilities).sort((a, b) => b[1] - a[1]);
    return {
      probabilities: p.probabilities,
      top_k: ranked.slice(0, k).map(([label, score]) => ({ label, score })),
      labels: ranked.filter(([label, score]) => score >= thresholds[label]).map(([label]) => label),
    };
  });
}

function bar(label, probability, threshold) {
  const above = probability >= threshold;
  const percent = (probability * 100).toFixed(1);
  return h("div", { class: `bar-row${above ? " above" : ""}`, dataset: { label, probability: String(probability), threshold: String(threshold) } },
    h("span", { class: "bar-label" }, label),
    h("div", { class: "bar", role: "meter", "aria-valuemin": "0", "aria-valuemax": "1", "aria-valuenow": String(probability),
      "aria-label": `${label}: ${percent}%, threshold ${fmt(threshold)}${above ? ", above" : ""}` },
      h("span", { class: "fill", style: `width: ${Math.max(probability * 100, 0.5)}%` }),
      h("span", { class: "tick", style: `left: ${threshold * 100}%`, title: `threshold ${fmt(threshold)}` })),
    h("span", { class: "bar-value" }, `${percent}%`));
}

// "True label": sends POST /feedback for this image (its request id and index) once.
function truthControl(file, receipt, labels) {
  const id = `truth-${receipt.request_id.slice(-12)}-${receipt.index}`;
  const select = h("select", { id, class: "truth", "aria-label": `True label of ${file.name}` },
    h("option", { value: "" }, "true label…"), labels.map((l) => h("option", { value: l }, l)));
  const note = h("span", { class: "hint", dataset: { field: "feedback" } });
  select.addEventListener("change", async () => {
    if (!select.value) return;
    select.disabled = true;
    try {
      await postJson("feedback", { request_id: receipt.request_id, index: receipt.index, labels: [select.value] });
      note.textContent = " sent";
      select.closest(".result").dataset.truth = select.value;
    } catch (err) {
      note.textContent = ` ${err.message}`;
      select.disabled = false;
    }
  });
  return h("div", { class: "feedback" }, select, note);
}

function imageCard(file, url, prediction, thresholds, receipt, labels) {
  const ranked = Object.entries(prediction.probabilities).sort((a, b) => b[1] - a[1]);
  const chips = prediction.labels.length
    ? prediction.labels.map((label) => h("span", { class: "chip" }, label))
    : [h("span", { class: "chip none" }, "none above its threshold")];
  const topK = h("ol", { class: "top-k" }, prediction.top_k.map((c) => h("li", {}, h("strong", {}, c.label), ` ${fmt(c.score)}`)));
  return h("article", { class: "result", dataset: { file: file.name }, "aria-label": `Result for ${file.name}` },
    h("header", {}, h("img", { src: url, alt: file.name, class: "thumb", loading: "lazy" }),
      h("div", {}, h("h3", {}, file.name), h("div", { class: "chips", dataset: { field: "labels" } }, "labels: ", chips),
        h("div", { class: "hint" }, "top-k"), topK, receipt ? truthControl(file, receipt, labels) : null)),
    h("div", { class: "bars" }, ranked.map(([label, p]) => bar(label, p, thresholds[label]))));
}

export function renderResults(container, files, urls, predictions, thresholds, receipts, model) {
  const labels = Object.keys(thresholds);
  container.replaceChildren(...predictions.map((p, i) => imageCard(files[i], urls[i], p, thresholds, receipts?.[i], labels)));
  container.dataset.model = model ? `${model.name}:${model.version}` : "";
}

// The calibrated point: what training stored for the class (falls back to the curve).
function calibratedPoint(entry, curve) {
  if (entry.val_precision === null || entry.val_precision === undefined) return pointAt(curve, entry.threshold);
  return { threshold: entry.threshold, precision: entry.val_precision, recall: entry.val_recall };
}

// Certified or not, and for an uncertified class the best level it certifies and the images
// it would need.
export function verdict(choice, target) {
  if (!choice || choice.lower_bound === null || choice.lower_bound === undefined) return { certified: false, text: "no bound" };
  if (choice.certified) return { certified: true, text: `certified ≥ ${target}` };
  const best = choice.best_certified === null || choice.best_certified === undefined ? "" : `best certified ${fmt(choice.best_certified)}`;
  const needed = choice.needed ? `needs ≈${choice.needed} images` : "more data at this error rate cannot certify it";
  return { certified: false, text: `not certified: ${[best, needed].filter(Boolean).join(", ")}` };
}

function verdictCell(choice, target, field) {
  const v = verdict(choice, target);
  return h("td", { class: v.certified ? "certified" : "uncertified", dataset: { field, certified: String(v.certified) } },
    h("span", { class: `mark ${v.certified ? "yes" : "no"}`, "aria-hidden": "true" }, v.certified ? "✓" : "✗"), " ", v.text);
}

function boundCells(choice, prefix) {
  return [h("td", { dataset: { field: `${prefix}bound` } }, fmt(choice?.lower_bound)),
    h("td", { dataset: { field: `${prefix}support` } }, choice?.support === null || choice?.support === undefined ? "–" : String(choice.support))];
}

export function renderThresholds(table, curvesBox, thresholds, applied) {
  const rows = [];
  const plots = [];
  const chosen = Object.fromEntries((applied?.choices || []).map((c) => [c.label, c]));
  for (const entry of thresholds.per_class) {
    const curve = thresholds.curves[entry.label];
    const calibrated = curve ? calibratedPoint(entry, curve) : { threshold: entry.threshold, precision: entry.val_precision, recall: entry.val_recall };
    const appliedT = applied ? applied.thresholds[entry.label] : undefined;
    const moved = appliedT === undefined || appliedT === null ? null : curve ? pointAt(curve, appliedT) : { threshold: appliedT, precision: null, recall: null };
    if (moved) moved.threshold = appliedT;
    const choice = chosen[entry.label];
    const certified = verdict(choice, applied?.target).certified;
    rows.push(h("tr", { class: certified ? "certified" : "uncertified",
      dataset: { label: entry.label, calibrated: String(entry.threshold), applied: moved ? String(appliedT) : "", certified: String(certified) } },
      h("th", { scope: "row" }, entry.label), h("td", {}, fmt(entry.threshold)), h("td", {}, fmt(calibrated.precision)),
      h("td", {}, fmt(calibrated.recall)), ...boundCells(entry, "calibrated-"), verdictCell(entry, thresholds.target, "calibrated-verdict"),
      h("td", { dataset: { field: "applied" } }, moved ? fmt(moved.threshold) : "–"),
      h("td", { dataset: { field: "precision" } }, moved ? fmt(moved.precision) : "–"),
      h("td", { dataset: { field: "recall" } }, moved ? fmt(moved.recall) : "–"),
      ...boundCells(choice, ""), verdictCell(choice, applied?.target, "verdict")));
    if (curve) plots.push(prCurveSvg(entry.label, curve, calibrated, moved, verdict(choice, applied?.target)));
  }
  table.querySelector("tbody").replaceChildren(...rows);
  curvesBox.replaceChildren(...(plots.length ? plots : [h("p", { class: "hint" }, "This version stores no calibration curves.")]));
}
