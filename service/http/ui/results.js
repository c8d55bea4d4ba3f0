// One card per classified image (probability bars, top-k, thresholded labels), and the table
// and PR curves that show where each class's threshold moved.

import { fmt, pointAt, prCurveSvg } from "./curves.js";
import { h } from "./models.js";

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

function imageCard(file, url, prediction, thresholds) {
  const ranked = Object.entries(prediction.probabilities).sort((a, b) => b[1] - a[1]);
  const chips = prediction.labels.length
    ? prediction.labels.map((label) => h("span", { class: "chip" }, label))
    : [h("span", { class: "chip none" }, "none above its threshold")];
  const topK = h("ol", { class: "top-k" }, prediction.top_k.map((c) => h("li", {}, h("strong", {}, c.label), ` ${fmt(c.score)}`)));
  return h("article", { class: "result", dataset: { file: file.name }, "aria-label": `Result for ${file.name}` },
    h("header", {}, h("img", { src: url, alt: file.name, class: "thumb" }),
      h("div", {}, h("h3", {}, file.name), h("div", { class: "chips", dataset: { field: "labels" } }, "labels: ", chips),
        h("div", { class: "hint" }, "top-k"), topK)),
    h("div", { class: "bars" }, ranked.map(([label, p]) => bar(label, p, thresholds[label]))));
}

export function renderResults(container, files, urls, body) {
  container.replaceChildren(...body.predictions.map((p, i) => imageCard(files[i], urls[i], p, body.thresholds)));
}

// The calibrated point: what training stored for the class (falls back to the curve).
function calibratedPoint(entry, curve) {
  if (entry.val_precision === null || entry.val_precision === undefined) return pointAt(curve, entry.threshold);
  return { threshold: entry.threshold, precision: entry.val_precision, recall: entry.val_recall };
}

export function renderThresholds(table, curvesBox, thresholds, applied) {
  const rows = [];
  const plots = [];
  for (const entry of thresholds.per_class) {
    const curve = thresholds.curves[entry.label];
    const calibrated = curve ? calibratedPoint(entry, curve) : { threshold: entry.threshold, precision: entry.val_precision, recall: entry.val_recall };
    const appliedT = applied ? applied[entry.label] : undefined;
    const moved = appliedT === undefined ? null : curve ? pointAt(curve, appliedT) : { threshold: appliedT, precision: null, recall: null };
    if (moved) moved.threshold = appliedT;
    rows.push(h("tr", { dataset: { label: entry.label, calibrated: String(entry.threshold), applied: appliedT === undefined ? "" : String(appliedT) } },
      h("th", { scope: "row" }, entry.label), h("td", {}, fmt(entry.threshold)), h("td", {}, fmt(calibrated.precision)),
      h("td", {}, fmt(calibrated.recall)), h("td", { dataset: { field: "applied" } }, moved ? fmt(moved.threshold) : "–"),
      h("td", { dataset: { field: "precision" } }, moved ? fmt(moved.precision) : "–"),
      h("td", { dataset: { field: "recall" } }, moved ? fmt(moved.recall) : "–")));
    if (curve) plots.push(prCurveSvg(entry.label, curve, calibrated, moved));
  }
  table.querySelector("tbody").replaceChildren(...rows);
  curvesBox.replaceChildren(...(plots.length ? plots : [h("p", { class: "hint" }, "This version stores no calibration curves.")]));
}
