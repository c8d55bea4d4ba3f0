// The models table (GET /models) and one version's card (GET /models/{name}/{version}/card).

import { blobUrl, getText } from "./api.js";
import { fmt } from "./curves.js";

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function statusCell(entry) {
  const badge = h("span", { class: `badge ${entry.status}` }, entry.status);
  return h("td", { dataset: { field: "status" } }, badge, entry.reason ? h("span", { class: "reason" }, " ", entry.reason) : null);
}

export function renderModels(tbody, models, selected, onSelect) {
  tbody.replaceChildren();
  if (!models.length) {
    tbody.append(h("tr", {}, h("td", { colspan: "6" }, "The model repository is empty.")));
    return;
  }
  for (const entry of models) {
    const isSelected = selected && selected.name === entry.name && selected.version === entry.version;
    const accuracy = entry.test_metrics ? fmt(entry.test_metrics.accuracy) : "–";
    const button = h("button", { type: "button", "aria-pressed": String(Boolean(isSelected)), onclick: () => onSelect(entry) },
      isSelected ? "selected" : "select");
    tbody.append(h("tr", { class: isSelected ? "selected" : "", dataset: { model: entry.name, version: String(entry.version), status: entry.status } },
      h("th", { scope: "row" }, entry.name), h("td", {}, `v${entry.version}`), statusCell(entry),
      h("td", {}, [entry.backend, entry.device].filter(Boolean).join(" · ") || "–"),
      h("td", {}, accuracy), h("td", {}, button)));
  }
}

const STATE_TEXT = { evaluating: "evaluating", promoted: "promoted", rolled_back: "rolled back" };

function estimate(e) {
  if (!e || e.value === null) return "–";
  return `${fmt(e.value)} [${fmt(e.lower_bound)}, ${fmt(e.upper_bound)}] n=${e.support}`;
}

function signed(x) {
  return x === null || x === undefined ? "–" : (x >= 0 ? "+" : "") + fmt(x);
}

function rolloutTable(name, r) {
  const head = h("tr", {}, ["class", `current v${r.current} precision`, `candidate v${r.candidate} precision`,
    "difference (lower / upper)"].map((c) => h("th", { scope: "col" }, c)));
  const rows = r.evidence.per_class.map((c) => h("tr", { dataset: { label: c.label } },
    h("th", { scope: "row" }, c.label), h("td", {}, estimate(c.current.precision)),
    h("td", {}, estimate(c.candidate.precision)),
    h("td", {}, `${signed(c.difference.lower)} / ${signed(c.difference.upper)}`)));
  const o = r.evidence.overall;
  rows.push(h("tr", { class: "overall" }, h("th", { scope: "row" }, "overall"),
    h("td", {}, o.current === null ? "–" : `${fmt(o.current)} n=${o.current_support}`),
    h("td", {}, o.candidate === null ? "–" : `${fmt(o.candidate)} n=${o.candidate_support}`),
    h("td", {}, `${signed(o.lower)} / ${signed(o.upper)}`)));
  return h("table", { class: "grid compact rollout-evidence" },
    h("caption", {}, `${name}: precision of each version's answers, from feedback (bounds at ${r.rule.confidence})`),
    h("thead", {}, head), h("tbody", {}, rows));
}

// Each model's rollout (GET /models "rollouts"): policy, state, the rule's verdict and evidence.
export function renderRollouts(container, rollouts) {
  const parts = Object.entries(rollouts).map(([name, r]) => {
    if (r.state === null) {
      return h("div", { class: "rollout", dataset: { model: name } }, h("p", { class: "reason" }, `${name}: ${r.problem}`));
    }
    const how = r.policy === "canary" ? `canary (${Math.round(r.share * 100)} % to the candidate)` : r.policy;
    const items = [
      ["policy", how],
      ["versions", `v${r.candidate} (candidate) against v${r.current} (current)`],
      ["state", STATE_TEXT[r.state] + (r.auto ? "" : " · report only (auto: false)")],
      ["verdict", r.verdict ? `${r.verdict.action.replace("_", " ")}: ${r.verdict.reason}` : "no feedback yet"],
      ["decision", r.decision ? `${r.decision.action.replace("_", " ")} at ${r.decision.at}` : "–"],
      ["feedback", r.evidence ? `current ${r.evidence.feedback.current} · candidate ${r.evidence.feedback.candidate} images` : "–"],
      ["shadow agreement", r.evidence && r.evidence.agreement ? `top-1 ${fmt(r.evidence.agreement.top1)} · labels ${fmt(r.evidence.agreement.labels)} over ${r.evidence.agreement.compared} images` : "–"],
    ];
    if (r.problem) items.push(["problem", r.problem]);
    return h("div", { class: "rollout", dataset: { model: name, state: r.state } },
      h("h3", {}, `Rollout of ${name}`),
      h("dl", { class: "summary" }, items.map(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { field: k } }, v)])),
      r.evidence ? rolloutTable(name, r) : null);
  });
  container.replaceChildren(...parts);
}

function metricsTable(metrics, labels) {
  const head = h("tr", {}, ["class", "precision", "recall", "F1", "ROC AUC", "support"].map((c) => h("th", { scope: "col" }, c)));
  const rows = labels.map((label) => {
    const m = metrics.per_class[label] || {};
    return h("tr", {}, h("th", { scope: "row" }, label), h("td", {}, fmt(m.precision)), h("td", {}, fmt(m.recall)),
      h("td", {}, fmt(m.f1)), h("td", {}, fmt(m.roc_auc)), h("td", {}, String(m.support ?? "–")));
  });
  return h("table", { class: "grid compact metrics" }, h("caption", {}, "Per class, test split"), h("thead", {}, head), h("tbody", {}, rows));
}

function summary(card) {
  const m = card.test_metrics;
  const t = card.thresholds;
  const items = [
    ["status", card.status + (card.reason ? `: ${card.reason}` : "")],
    ["test images", m ? String(m.samples) : "–"],
    ["accuracy", m ? fmt(m.accuracy) : "–"],
    ["macro precision / recall / F1", m ? `${fmt(m.macro_precision)} / ${fmt(m.macro_recall)} / ${fmt(m.macro_f1)}` : "–"],
    ["thresholds", t ? `${t.policy}${t.target !== null && t.target !== undefined ? ` ≥ ${t.target}` : ""}${t.method ? ` (${t.method})` : ""}` : "–"],
  ];
  return h("dl", { class: "summary" }, items.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

const FIGURE_TITLES = { training_curves: "Training curves", confusion_matrix: "Confusion matrix", pr_curves: "PR curves (test split)" };

async function figures(card) {
  const entries = Object.entries(card.report.images);
  const nodes = await Promise.all(entries.map(async ([stem, url]) => {
    const title = FIGURE_TITLES[stem] || stem.replaceAll("_", " ");
    const src = await blobUrl(url);
    const img = h("img", { alt: `${title} of ${card.name} v${card.version}`, src });
    // A link to the full-size figure (opens in a new tab; the grid shows it small).
    return h("figure", {}, h("a", { href: src, target: "_blank", rel: "noopener" }, img), h("figcaption", {}, title));
  }));
  return h("div", { class: "figures" }, nodes);
}

export async function renderCard(container, card) {
  const parts = [h("h3", {}, `${card.name} v${card.version}`), summary(card)];
  if (card.test_metrics) parts.push(metricsTable(card.test_metrics, card.labels));
  if (Object.keys(card.report.images).length) parts.push(await figures(card));
  else parts.push(h("p", { class: "hint" }, "No report figures in this version's report/ folder."));
  if (card.report.model_card_html) {
    // Rendered by the server (markdown-it-py, raw HTML escaped): safe to insert as markup.
    const body = h("div", { class: "model-card-html" });
    body.innerHTML = await getText(card.report.model_card_html);
    parts.push(h("details", { open: "" }, h("summary", {}, "MODEL_CARD.md"), body));
  }
  container.replaceChildren(...parts);
}
