// Calls to Visor's HTTP API, with the API key the user typed (kept in sessionStorage).
// Every URL is relative to the page, so Visor works behind a proxy that serves it under a prefix.

const KEY_STORE = "visor.apiKey";

export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

function headers() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

// "/models/x/1/report/a.png" (as the server writes links) → "models/x/1/report/a.png".
export function relative(path) {
  return path.replace(/^\/+/, "");
}

async function send(path, init = {}) {
  const response = await fetch(relative(path), { ...init, headers: { ...headers(), ...(init.headers || {}) } });
  if (response.ok) return response;
  // Visor answers every refusal with {"error": sentence, "code": reason}.
  let body = {};
  try {
    body = await response.json();
  } catch {
    body = { error: `${response.status} ${response.statusText}` };
  }
  throw new ApiError(body.error || `HTTP ${response.status}`, response.status, body.code || "");
}

export async function getJson(path) {
  return (await send(path)).json();
}

// An object URL for a protected file (an <img src> cannot carry the key header).
export async function blobUrl(path) {
  return URL.createObjectURL(await (await send(path)).blob());
}

export async function getText(path) {
  return (await send(path)).text();
}

function formOf(files, fields) {
  const form = new FormData();
  for (const file of files) form.append("image", file, file.name);
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined && value !== null && value !== "") form.append(name, String(value));
  }
  return form;
}

// POST /classify as multipart/form-data: one "image" part per file, options as fields.
export async function classify(files, options) {
  return (await send("classify", { method: "POST", body: formOf(files, options) })).json();
}

// POST /evaluate: the same form with the true labels, one per image.
export async function evaluate(files, labels, options) {
  return (await send("evaluate", { method: "POST", body: formOf(files, { ...options, labels: labels.join(",") }) })).json();
}

export async function postJson(path, body) {
  return (await send(path, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } })).json();
}

// Runs ``work`` on consecutive parts of ``items`` of at most ``size``, one part at a time;
// ``progress(done, total)`` after each. Returns the answers in order.
export async function inParts(items, size, work, progress) {
  const answers = [];
  for (let start = 0; start < items.length; start += size) {
    answers.push(await work(items.slice(start, start + size), start));
    progress(Math.min(start + size, items.length), items.length);
  }
  return answers;
}
