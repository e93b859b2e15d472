// The page's one state, and the settings it keeps between visits (never the key's business).

export const state = {
  rules: null, // GET /v1/rules: the limits every request is checked against
  prompts: null, // the structured prompt checks made from rules.prompt (structured.js)
  models: [],
  caps: null, // the chosen model's capabilities
  sizes: null, // its sizes (sizes.js)
  refs: null, // the reference images (refs.js)
  mask: null, // the mask painted over reference image 1 (mask.js)
  loras: null, // the LoRA adapters picked, with their scales (loras.js)
  jsonMode: false,
  buffers: { text: "", json: "" },
  job: null, // {id, abort, body, references}
  sent: new Map(), // job id -> {files, mask}: the images (and mask PNG) each job sent used, while the page is open
  historyCursor: null,
  historyIds: new Set(),
};

const SENT_KEPT = 50;

/** Keep the images (and mask) a job was sent with, so that reopening it puts the same ones back. */
export function rememberSent(id, files, mask) {
  state.sent.delete(id);
  state.sent.set(id, { files: [...files], mask });
  while (state.sent.size > SENT_KEPT) state.sent.delete(state.sent.keys().next().value);
}

const SETTINGS_STORAGE = "fluxserve.studio.settings";

export function saveSettings(body, { locked }) {
  const { prompt, ...rest } = body;
  try {
    localStorage.setItem(SETTINGS_STORAGE, JSON.stringify({ ...rest, json: state.jsonMode, locked }));
  } catch { /* not kept */ }
}

export function loadSettings() {
  try {
    return JSON.parse(localStorage.getItem(SETTINGS_STORAGE) || "null");
  } catch {
    return null;
  }
}
