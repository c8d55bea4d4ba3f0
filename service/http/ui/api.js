// Calls to Visor's HTTP API, with the API key the user typed (kept in sessionStorage).

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

async function send(path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...headers(), ...(init.headers || {}) } });
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

// POST /classify as multipart/form-data: one "image" part per file, options as fields.
export async function classify(files, options) {
  const form = new FormData();
  for (const file of files) form.append("image", file, file.name);
  for (const [name, value] of Object.entries(options)) {
    if (value !== undefined && value !== null && value !== "") form.append(name, String(value));
  }
  return (await send("/classify", { method: "POST", body: form })).json();
}
