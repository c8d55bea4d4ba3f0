// Precision–recall curves drawn as SVG from the calibration curves in the model's metadata.

const SVG = "http://www.w3.org/2000/svg";
const SIZE = { width: 220, height: 180, left: 34, right: 10, top: 22, bottom: 30 };

// The validation precision/recall of predicting "positive" when p >= threshold: the first curve
// point whose threshold reaches it (curve thresholds ascend, one per distinct validation score).
export function pointAt(curve, threshold) {
  if (!curve || !curve.thresholds.length) return null;
  const t = curve.thresholds;
  let i = t.findIndex((value) => value >= threshold - 1e-6);
  if (i < 0) i = t.length - 1;
  return { threshold: t[i], precision: curve.precision[i], recall: curve.recall[i] };
}

function el(name, attrs = {}, text = "") {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

function scales() {
  const w = SIZE.width - SIZE.left - SIZE.right;
  const h = SIZE.height - SIZE.top - SIZE.bottom;
  return {
    x: (recall) => SIZE.left + recall * w,
    y: (precision) => SIZE.top + (1 - precision) * h,
  };
}

function axes(svg, { x, y }) {
  svg.append(el("rect", { x: x(0), y: y(1), width: x(1) - x(0), height: y(0) - y(1), class: "frame" }));
  for (const v of [0, 0.5, 1]) {
    svg.append(el("text", { x: x(v), y: y(0) + 13, class: "tick", "text-anchor": "middle" }, String(v)));
    svg.append(el("text", { x: x(0) - 4, y: y(v) + 3, class: "tick", "text-anchor": "end" }, String(v)));
  }
  svg.append(el("text", { x: x(0.5), y: SIZE.height - 3, class: "axis", "text-anchor": "middle" }, "recall"));
  svg.append(el("text", { x: 9, y: y(0.5), class: "axis", transform: `rotate(-90 9 ${y(0.5)})`, "text-anchor": "middle" }, "precision"));
}

function marker(svg, { x, y }, point, kind) {
  const dot = el("circle", { cx: x(point.recall), cy: y(point.precision), r: 4.5, class: kind });
  dot.append(el("title", {}, `${kind}: threshold ${fmt(point.threshold)}, precision ${fmt(point.precision)}, recall ${fmt(point.recall)}`));
  svg.append(dot);
}

export function fmt(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(3);
}

// One class's curve, its calibrated point and (when a request applied one) the applied point.
// ``verdict``: whether the applied target is certified for the class, and in words.
export function prCurveSvg(label, curve, calibrated, applied, verdict) {
  const s = scales();
  const certified = verdict ? verdict.certified : true;
  const svg = el("svg", { viewBox: `0 0 ${SIZE.width} ${SIZE.height}`, role: "img", "data-label": label,
    class: `pr-curve ${certified ? "certified" : "uncertified"}`, "data-certified": String(certified) });
  const moved = applied ? ` → ${fmt(applied.threshold)}` : "";
  svg.append(el("title", {}, `Class ${label}: precision–recall curve, threshold ${fmt(calibrated?.threshold)}${moved}${verdict ? `; ${verdict.text}` : ""}`));
  axes(svg, s);
  const points = curve.recall.map((r, i) => `${s.x(r).toFixed(1)},${s.y(curve.precision[i]).toFixed(1)}`);
  svg.append(el("polyline", { points: points.join(" "), class: "curve" }));
  if (calibrated && applied) {
    svg.append(el("line", { x1: s.x(calibrated.recall), y1: s.y(calibrated.precision), x2: s.x(applied.recall), y2: s.y(applied.precision), class: "move" }));
  }
  if (calibrated) marker(svg, s, calibrated, "calibrated");
  if (applied) marker(svg, s, applied, "applied");
  svg.append(el("text", { x: SIZE.left, y: 14, class: "label" }, `${label}  t=${fmt(calibrated?.threshold)}${moved}${certified ? "" : "  ✗"}`));
  return svg;
}
