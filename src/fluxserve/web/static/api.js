// fluxserve's public API, as the studio uses it. The key lives in this browser's localStorage and
// goes only to this server's own /v1/ paths (relative URLs, never a URL taken from a response).

import { SseParser } from "./sse.js";

const KEY_STORAGE = "fluxserve.studio.apiKey";
const TERMINAL = new Set(["completed", "failed", "canceled"]);

export const apiKey = {
  get() {
    try { return localStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
  },
  set(value) {
    try { localStorage.setItem(KEY_STORAGE, value); } catch { /* private mode: kept for this page only */ }
    memoryKey = value;
  },
  clear() {
    try { localStorage.removeItem(KEY_STORAGE); } catch { /* nothing kept */ }
    memoryKey = "";
  },
};
let memoryKey = null;

function currentKey() {
  return memoryKey ?? apiKey.get();
}

/** An error answer of the API: OpenAI's {"error": {message, type, param, code}}. */
export class ApiError extends Error {
  constructor(status, error = {}, headers = null) {
    super(error.message || `the server answered ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.type = error.type ?? null;
    this.param = error.param ?? null;
    this.code = error.code ?? null;
    this.retryAfter = headers?.get("retry-after") ?? null;
  }
}

function apiPath(path) {
  if (!path.startsWith("/v1/")) throw new Error(`not a fluxserve API path: ${path}`);
  return path;
}

function headersWith(extra = {}) {
  const headers = new Headers(extra);
  const key = currentKey().trim();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

async function errorOf(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const error = body && typeof body.error === "object" && body.error
    ? body.error
    : { message: `the server answered ${response.status} ${response.statusText}`.trim() };
  return new ApiError(response.status, error, response.headers);
}

function unreachable() {
  return new ApiError(0, { message: "Could not reach the server: check that fluxserve is running, then try again." });
}

/** Call the API; resolves with the JSON body (null for 204), rejects with ApiError. */
export async function api(path, { method = "GET", json, form, signal, headers } = {}) {
  const init = { method, headers: headersWith(headers), signal, cache: "no-store", credentials: "same-origin" };
  if (json !== undefined) {
    init.headers.set("content-type", "application/json");
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(apiPath(path), init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw unreachable();
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

const sleep = (ms, signal) => new Promise((resolve, reject) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(timer); reject(new DOMException("aborted", "AbortError")); }, { once: true });
});

const jobPath = (id) => `/v1/jobs/${encodeURIComponent(id)}`;

/**
 * Follow a job's event stream until its final event; resolves with the finished job.
 * onEvent(type, data) sees queued, started, progress, completed, failed, canceled.
 * A dropped stream is resumed with Last-Event-ID; after repeated failures the job is polled.
 */
export async function watchJob(id, onEvent, signal) {
  let lastId = null;
  let failures = 0;
  while (failures < 4) {
    const headers = headersWith({ accept: "text/event-stream" });
    if (lastId) headers.set("Last-Event-ID", lastId);
    let response = null;
    try {
      response = await fetch(apiPath(`${jobPath(id)}/events`), { headers, signal, cache: "no-store" });
    } catch (error) {
      if (signal?.aborted) throw error;
    }
    if (response?.status === 204) break; // the final event was already sent
    if (response && !response.ok && response.status < 500) throw await errorOf(response);
    if (response?.ok) {
      const parser = new SseParser();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const event of parser.feed(value)) {
            if (event.id) lastId = event.id;
            failures = 0;
            let data = null;
            try { data = JSON.parse(event.data); } catch { /* not JSON: ignored */ }
            onEvent(event.event, data);
            if (TERMINAL.has(event.event)) return data;
          }
        }
      } catch (error) {
        if (signal?.aborted) throw error;
      }
    }
    failures += 1;
    await sleep(500 * failures, signal);
  }
  return pollJob(id, onEvent, signal);
}

async function pollJob(id, onEvent, signal) {
  for (;;) {
    const job = await api(jobPath(id), { signal });
    if (["succeeded", "failed", "canceled"].includes(job.status)) {
      onEvent(job.status === "succeeded" ? "completed" : job.status, job);
      return job;
    }
    if (job.status === "queued") onEvent("queued", { position: job.position });
    else if (job.progress) onEvent("progress", job.progress);
    await sleep(1000, signal);
  }
}

export const jobs = {
  submit: (body, signal) => api("/v1/jobs", body instanceof FormData ? { method: "POST", form: body, signal } : { method: "POST", json: body, signal }),
  get: (id) => api(jobPath(id)),
  cancel: (id) => api(`${jobPath(id)}/cancel`, { method: "POST" }),
  list: (cursor) => api(`/v1/jobs?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`),
};

export const models = () => api("/v1/models");

/** The LoRA adapters this key may name, each with its family, and how many and what scales a request may use. */
export const loras = () => api("/v1/loras");

/** The rules every request is checked against: limits and the structured prompt's JSON Schema. */
export const rules = () => api("/v1/rules");

/** A signed image link as a path on this server (the page's CSP allows images from 'self' only). */
export function localUrl(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.pathname + parsed.search;
  } catch {
    return url;
  }
}

const AUTH_TEXT = {
  missing_api_key: "This server needs an API key. Enter yours above and press “Use key”.",
  invalid_api_key: "That API key is not valid. Check it for typos, or ask the server's admin for a new one.",
  revoked_api_key: "This API key was revoked. Ask the server's admin for a new one.",
  expired_api_key: "This API key has expired. Ask the server's admin for a new one.",
  insufficient_scope: "This API key may not do that.",
};

/** Human text for an error of the key (401, or a 403 of scope), else null. */
export function keyProblem(error) {
  if (!(error instanceof ApiError)) return null;
  if (error.status === 401) return AUTH_TEXT[error.code] ?? `The server refused the key: ${error.message}`;
  if (error.status === 403 && error.code === "insufficient_scope") return AUTH_TEXT.insufficient_scope;
  return null;
}

/** Human text for any API error, with what to do next where the status says it. */
export function describe(error) {
  if (!(error instanceof ApiError)) return error?.message || String(error);
  const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
  switch (error.code) {
    case "rate_limit_exceeded": return `Too many requests for this key.${wait}`;
    case "concurrency_limit_exceeded": return `This key already has as many jobs running as it may.${wait}`;
    case "quota_exceeded": return `This key's quota is used up. ${error.message}`;
    default: break;
  }
  if (error.status === 429) return `The server is busy: ${error.message}.${wait}`;
  if (error.status === 413) return `Too large: ${error.message}`;
  if (error.status === 503) return `The model is not ready: ${error.message}.${wait}`;
  const text = error.message.charAt(0).toUpperCase() + error.message.slice(1);
  return text;
}
