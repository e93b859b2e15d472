// The studio page: wires the form, the job's live progress, results and history together.
// Modules: api.js (the API and the key), sse.js (event streams), sizes.js (sizes),
// structured.js (JSON prompts), refs.js (reference images), snippets.js (curl / Python).

import { apiKey, ApiError, describe, jobs, keyProblem, localUrl, models, watchJob } from "./api.js";
import { References } from "./refs.js";
import { PRESETS, matchPreset, megapixels, parseSize, presetSize, sizeProblem, snapSide } from "./sizes.js";
import { curl, python } from "./snippets.js";
import { TEMPLATE, coloursInText, validate } from "./structured.js";

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((child) => child !== null && child !== undefined && child !== false));
  return node;
};
const SETTINGS_STORAGE = "fluxserve.studio.settings";
const MAX_SEED = 4294967295;

const state = {
  models: [],
  caps: null,
  jsonMode: false,
  buffers: { text: "", json: "" },
  job: null, // {id, abort, cancelRequested}
  historyCursor: null,
  historyIds: new Set(),
};
let refs;

// -- messages next to the controls ------------------------------------------------------------

const FIELDS = {
  key: { error: "key-error", controls: ["api-key"] },
  model: { error: "model-error", controls: ["model"] },
  prompt: { error: "prompt-error", controls: ["prompt"] },
  size: { error: "size-error", controls: ["width", "height"] },
  width: { error: "size-error", controls: ["width"] },
  height: { error: "size-error", controls: ["height"] },
  steps: { error: "steps-error", controls: ["steps"] },
  guidance: { error: "guidance-error", controls: ["guidance"] },
  seed: { error: "seed-error", controls: ["seed"] },
  n: { error: "n-error", controls: ["n"] },
  format: { error: "format-error", controls: ["output-format"] },
  refs: { error: "refs-error", controls: ["refs-drop"] },
};

/** The studio field an API error's `param` names, or null. */
function fieldOf(param) {
  if (!param) return null;
  const name = String(param);
  if (name === "prompt" || name === "input" || name.startsWith("prompt.") || name.startsWith("prompt[")) return "prompt";
  if (/^(image|images|input_image)/.test(name)) return "refs";
  if (name === "output_format" || name === "output_compression") return "format";
  if (name === "quality") return "steps";
  return FIELDS[name] ? name : null;
}

function showFieldError(field, message) {
  const spec = FIELDS[field];
  const box = $(spec.error);
  box.textContent = message;
  box.hidden = false;
  spec.controls.forEach((id) => $(id).setAttribute("aria-invalid", "true"));
}

function clearFieldError(field) {
  const spec = FIELDS[field];
  $(spec.error).hidden = true;
  $(spec.error).textContent = "";
  spec.controls.forEach((id) => $(id).removeAttribute("aria-invalid"));
}

function clearErrors() {
  for (const field of Object.keys(FIELDS)) if (field !== "key" && field !== "refs") clearFieldError(field);
  $("refs-error").hidden = true;
  say("");
}

function say(message, kind = "error") {
  const box = $("message");
  box.textContent = message;
  box.className = `message ${kind}`;
  box.hidden = !message;
}

function showKeyProblem(message) {
  const box = $("key-error");
  box.textContent = message;
  box.hidden = !message;
  if (message) $("api-key").setAttribute("aria-invalid", "true");
  else $("api-key").removeAttribute("aria-invalid");
}

/** Show an API error (an ApiError or a job's error object) where it belongs; true if it was the key. */
function showError(error, { focus = true } = {}) {
  const problem = keyProblem(error);
  if (problem) {
    showKeyProblem(problem);
    if (focus) $("api-key").focus();
    return true;
  }
  const message = error instanceof ApiError ? describe(error) : capitalise(error?.message || String(error));
  const field = fieldOf(error?.param);
  if (field) {
    showFieldError(field, message);
    if (focus) $(FIELDS[field].controls[0]).focus();
  } else {
    say(message);
  }
  return false;
}

const capitalise = (text) => text.charAt(0).toUpperCase() + text.slice(1);

// -- the key ----------------------------------------------------------------------------------

function keyStatus() {
  $("key-status").textContent = apiKey.get()
    ? "A key is saved in this browser and sent only to this server."
    : "No key saved: fine on a server that runs without keys.";
  $("forget-key").disabled = !apiKey.get();
}

function setupKey() {
  $("api-key").value = apiKey.get();
  keyStatus();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("api-key").value.trim();
    if (value) apiKey.set(value); else apiKey.clear();
    showKeyProblem("");
    keyStatus();
    reload();
  });
  $("forget-key").addEventListener("click", () => {
    apiKey.clear();
    $("api-key").value = "";
    showKeyProblem("");
    keyStatus();
    $("key-status").textContent = "Key forgotten: it is no longer kept in this browser.";
    $("api-key").focus();
    reload();
  });
}

async function reload() {
  await loadModels();
  await loadHistory(true);
}

// -- models and their capabilities ------------------------------------------------------------

async function loadModels() {
  let list;
  try {
    list = await models();
  } catch (error) {
    showError(error, { focus: false });
    if (!keyProblem(error)) showFieldError("model", `Could not list the models: ${describe(error)}`);
    return;
  }
  showKeyProblem("");
  clearFieldError("model");
  state.models = list.data;
  const select = $("model");
  const previous = select.value || loadSettings()?.model;
  select.replaceChildren(...state.models.map((model) => {
    const unusable = model.configured === false;
    const note = model.status === "ready" ? "" : ` (${model.status})`;
    return el("option", { value: model.id, textContent: `${model.id}${unusable ? " (not configured)" : note}`, disabled: unusable });
  }));
  if (state.models.some((model) => model.id === previous)) select.value = previous;
  if (state.models.length === 0) showFieldError("model", "This server serves no models.");
  applyModel({ keepSettings: true });
}

function currentModel() {
  return state.models.find((model) => model.id === $("model").value) || null;
}

function applyModel({ keepSettings = false } = {}) {
  const model = currentModel();
  if (!model) return;
  const caps = model.capabilities;
  state.caps = caps;
  const provider = model.provider && model.provider !== "local" ? `${model.provider} · ` : "";
  const status = model.status === "ready" ? "ready" : `${model.status}: it may take a while to start`;
  $("model-info").textContent = `${provider}${status} · up to ${caps.max_megapixels} MP`;

  const steps = $("steps");
  steps.min = caps.min_steps;
  steps.max = caps.max_steps;
  const fixed = caps.min_steps === caps.max_steps;
  steps.disabled = fixed;
  if (fixed || !keepSettings || !inRange(steps.value, caps.min_steps, caps.max_steps)) steps.value = caps.default_steps;
  $("steps-info").textContent = fixed
    ? `Fixed at ${caps.default_steps} for this model.`
    : `${caps.min_steps}-${caps.max_steps}, default ${caps.default_steps}.`;

  $("guidance-field").hidden = !caps.guidance;
  const guidance = $("guidance");
  guidance.disabled = !caps.guidance;
  if (caps.guidance) {
    guidance.min = caps.min_guidance;
    guidance.max = caps.max_guidance;
    if (!keepSettings || !inRange(guidance.value, caps.min_guidance, caps.max_guidance)) guidance.value = caps.default_guidance;
    $("guidance-info").textContent = `${caps.min_guidance}-${caps.max_guidance}, default ${caps.default_guidance}.`;
  }

  const n = $("n");
  n.max = caps.max_images;
  if (!inRange(n.value, 1, caps.max_images)) n.value = 1;
  $("n-info").textContent = `1-${caps.max_images}.`;

  refs.setLimit(caps.max_reference_images || 0);
  renderPresets();
  const width = Number($("width").value);
  const height = Number($("height").value);
  if (!keepSettings || !width || !height || sizeProblem(width, height, caps)) {
    const [w, h] = parseSize(caps.default_size) || presetSize(PRESETS[0], caps);
    setSize(w, h);
  } else {
    setSize(width, height);
  }
}

const inRange = (value, low, high) => value !== "" && Number(value) >= low && Number(value) <= high;

// -- sizes ------------------------------------------------------------------------------------

function renderPresets() {
  const caps = state.caps;
  const radios = PRESETS.map((preset) => {
    const [w, h] = presetSize(preset, caps);
    const input = el("input", { type: "radio", name: "aspect", value: preset.id, id: `aspect-${preset.id.replace(":", "-")}` });
    input.addEventListener("change", () => { setSize(w, h); clearFieldError("size"); });
    const shape = el("span", { className: "shape", ariaHidden: "true" });
    const scale = 18 / Math.max(preset.w, preset.h);
    shape.style.width = `${Math.round(preset.w * scale)}px`;
    shape.style.height = `${Math.round(preset.h * scale)}px`;
    return el("label", { className: "preset", title: `${preset.label}: ${w}×${h}` },
      input, shape, el("span", { textContent: preset.id }), el("small", { textContent: `${w}×${h}` }));
  });
  const custom = el("input", { type: "radio", name: "aspect", value: "custom", id: "aspect-custom" });
  custom.addEventListener("change", () => $("width").focus());
  radios.push(el("label", { className: "preset" }, custom, el("span", { textContent: "Custom" })));
  $("size-presets").replaceChildren(...radios);
}

function setSize(width, height) {
  $("width").value = width;
  $("height").value = height;
  sizeChanged();
}

function sizeChanged() {
  const caps = state.caps;
  if (!caps) return;
  const width = Number($("width").value);
  const height = Number($("height").value);
  const preset = matchPreset(width, height, caps);
  const radio = $(preset ? `aspect-${preset.id.replace(":", "-")}` : "aspect-custom");
  if (radio) radio.checked = true;
  const mp = width && height ? megapixels(width, height).toFixed(megapixels(width, height) < 0.1 ? 3 : 2) : "–";
  $("size-info").textContent = `${width || "?"}×${height || "?"} px · ${mp} MP of ${caps.max_megapixels} · sides ${caps.min_side}-${caps.max_side}, multiples of ${caps.size_multiple}`;
  const problem = width && height ? sizeProblem(width, height, caps) : null;
  if (problem) showFieldError("size", problem.message); else clearFieldError("size");
}

function snapSizeInput(id) {
  const input = $(id);
  if (input.value === "" || !state.caps) return;
  const snapped = snapSide(input.value, state.caps);
  if (snapped !== Number(input.value)) {
    input.value = snapped;
    $("size-info").dataset.snapped = "true";
  }
  sizeChanged();
}

// -- the prompt: text and JSON modes ----------------------------------------------------------

function setMode(json) {
  if (json === state.jsonMode) return;
  const prompt = $("prompt");
  state.buffers[state.jsonMode ? "json" : "text"] = prompt.value;
  state.jsonMode = json;
  prompt.value = state.buffers[json ? "json" : "text"];
  $("mode-text").setAttribute("aria-pressed", String(!json));
  $("mode-json").setAttribute("aria-pressed", String(json));
  $("json-tools").hidden = !json;
  $("json-status").hidden = !json;
  prompt.spellcheck = !json;
  prompt.classList.toggle("code", json);
  prompt.placeholder = json ? '{"scene": "...", "subjects": [{"description": "..."}]}' : "a red fox in fresh snow, golden hour";
  clearFieldError("prompt");
  if (json) checkJson();
  renderPalette();
}

function checkJson() {
  const source = $("prompt").value;
  renderPalette();
  if (!source.trim()) {
    $("json-status").textContent = "Write a JSON object, or insert the starter template.";
    clearFieldError("prompt");
    return null;
  }
  const result = validate(source);
  if (result.ok) {
    $("json-status").textContent = "✓ Valid structured prompt.";
    clearFieldError("prompt");
    return result.value;
  }
  $("json-status").textContent = "";
  showFieldError("prompt", result.message);
  return null;
}

function renderPalette() {
  const list = $("palette");
  const colours = state.jsonMode ? coloursInText($("prompt").value) : [];
  list.replaceChildren(...colours.map(({ text, valid }) => {
    const swatch = el("span", { className: `swatch${valid ? "" : " invalid"}`, ariaHidden: "true" });
    if (valid) swatch.style.backgroundColor = text;
    return el("li", { className: "palette-item", title: valid ? text : `${text} is not a valid #RRGGBB colour` },
      swatch, el("span", { textContent: valid ? text : `${text} (invalid)` }));
  }));
  list.hidden = colours.length === 0;
}

function setupPrompt() {
  const prompt = $("prompt");
  $("mode-text").addEventListener("click", () => setMode(false));
  $("mode-json").addEventListener("click", () => setMode(true));
  prompt.addEventListener("input", () => {
    if (state.jsonMode) checkJson(); else clearFieldError("prompt");
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("generate-form").requestSubmit();
    }
  });
  $("json-template").addEventListener("click", () => {
    prompt.value = JSON.stringify(TEMPLATE, null, 2);
    checkJson();
    prompt.focus();
  });
  $("json-format").addEventListener("click", () => {
    try {
      prompt.value = JSON.stringify(JSON.parse(prompt.value), null, 2);
    } catch { /* left as is: the message says what is wrong */ }
    checkJson();
  });
}

/** The prompt for the request, or null after showing what is wrong. */
function promptValue() {
  if (state.jsonMode) {
    const value = checkJson();
    if (!value && !$("prompt").value.trim()) showFieldError("prompt", "The prompt is empty: write a JSON object, or insert the starter template.");
    return value;
  }
  const text = $("prompt").value;
  if (!text.trim()) {
    showFieldError("prompt", "The prompt is empty: describe the image you want.");
    return null;
  }
  return text;
}

// -- seed -------------------------------------------------------------------------------------

const randomSeed = () => crypto.getRandomValues(new Uint32Array(1))[0];

function setupSeed() {
  $("seed").addEventListener("input", () => {
    if ($("seed").value !== "") $("seed-lock").checked = true;
    seedInfo();
    clearFieldError("seed");
  });
  $("seed-lock").addEventListener("change", seedInfo);
  $("seed-new").addEventListener("click", () => {
    $("seed").value = randomSeed();
    seedInfo();
  });
}

function seedInfo(used = null) {
  const locked = $("seed-lock").checked;
  const last = used === null ? "" : `Last image used seed ${used}. `;
  $("seed-info").textContent = last + (locked
    ? "Locked: every generation uses this seed."
    : "Unlocked: a new random seed for each generation.");
}

// -- building the request ---------------------------------------------------------------------

function integer(id, field, low, high, label) {
  const raw = $(id).value.trim();
  const value = Number(raw);
  if (raw === "" || !Number.isInteger(value) || value < low || value > high) {
    showFieldError(field, `${label} must be a whole number from ${low} to ${high}.`);
    return null;
  }
  return value;
}

function buildBody() {
  const caps = state.caps;
  const model = currentModel();
  if (!model || !caps) {
    showFieldError("model", "No model to use: check the key, then reload the page.");
    return null;
  }
  let ok = true;
  const prompt = promptValue();
  if (prompt === null) ok = false;
  const width = Number($("width").value);
  const height = Number($("height").value);
  const problem = sizeProblem(width, height, caps);
  if (problem) { showFieldError("size", problem.message); ok = false; }
  const body = { prompt, model: model.id, width, height };
  if (caps.min_steps !== caps.max_steps) {
    body.steps = integer("steps", "steps", caps.min_steps, caps.max_steps, "Steps");
    if (body.steps === null) ok = false;
  }
  if (caps.guidance) {
    const guidance = Number($("guidance").value);
    if ($("guidance").value === "" || !(guidance >= caps.min_guidance && guidance <= caps.max_guidance)) {
      showFieldError("guidance", `Guidance must be from ${caps.min_guidance} to ${caps.max_guidance}.`);
      ok = false;
    }
    body.guidance = guidance;
  }
  if (!$("seed-lock").checked || $("seed").value === "") $("seed").value = randomSeed();
  body.seed = integer("seed", "seed", 0, MAX_SEED, "The seed");
  body.n = integer("n", "n", 1, caps.max_images, "The number of images");
  if (body.seed === null || body.n === null) ok = false;
  body.output_format = $("output-format").value;
  body.response_format = "url";
  if (refs.items.length > refs.limit) {
    refs.say(`This model takes at most ${refs.limit} reference images.`);
    ok = false;
  }
  return ok ? body : null;
}

function asForm(body, files) {
  const form = new FormData();
  for (const [key, value] of Object.entries(body)) {
    form.append(key, typeof value === "object" ? JSON.stringify(value) : String(value));
  }
  files.forEach((file, index) => form.append("image[]", file, file.name || `image-${index + 1}.png`));
  return form;
}

// -- generating and following a job -----------------------------------------------------------

function setBusy(busy) {
  $("generate").disabled = busy;
  $("generate").textContent = busy ? "Generating…" : "Generate";
  $("cancel").hidden = !busy;
  $("cancel").disabled = false;
  document.body.classList.toggle("busy", busy);
}

function setProgress(step, total, text) {
  const bar = $("progress");
  bar.setAttribute("aria-valuemax", String(total));
  bar.setAttribute("aria-valuenow", String(step));
  bar.setAttribute("aria-valuetext", text);
  bar.classList.remove("indeterminate");
  bar.firstElementChild.style.width = `${total ? (100 * step) / total : 0}%`;
}

function jobStatus(text) {
  $("job-status").textContent = text;
}

function onJobEvent(type, data) {
  if (!data) return;
  if (type === "queued") {
    jobStatus(data.position ? `Queued: position ${data.position} in line.` : "Queued.");
    $("progress").classList.add("indeterminate");
  } else if (type === "started") {
    jobStatus("Started.");
    $("progress").classList.remove("indeterminate");
  } else if (type === "progress") {
    const text = `Step ${data.step} of ${data.total}`;
    const image = data.images > 1 ? ` (image ${data.image + 1} of ${data.images})` : "";
    const stage = data.stage ? ` · ${data.stage}` : "";
    jobStatus(`${text}${image}${stage}`);
    setProgress(data.step, data.total, text);
    if (data.preview) {
      $("preview").src = data.preview;
      $("preview").hidden = false;
    }
  }
}

async function generate(event) {
  event.preventDefault();
  if (state.job) return;
  clearErrors();
  const body = buildBody();
  if (!body) {
    document.querySelector("[aria-invalid=true]")?.focus();
    return;
  }
  saveSettings(body);
  const files = refs.files;
  const payload = files.length ? asForm(body, files) : body;
  const abort = new AbortController();
  state.job = { id: null, abort, body, references: files.length };
  setBusy(true);
  $("output").hidden = false;
  $("job-panel").hidden = false;
  $("preview").hidden = true;
  $("preview").removeAttribute("src");
  setProgress(0, 1, "Submitting");
  jobStatus("Submitting…");
  $("job-panel").scrollIntoView({ block: "nearest" });
  const started = performance.now();
  try {
    const job = await jobs.submit(payload, abort.signal);
    state.job.id = job.id;
    if (job.status === "queued") onJobEvent("queued", job);
    const finished = await watchJob(job.id, onJobEvent, abort.signal);
    finish(finished, (performance.now() - started) / 1000);
  } catch (error) {
    if (error.name === "AbortError") return;
    jobStatus("Not generated.");
    showError(error);
  } finally {
    state.job = null;
    setBusy(false);
  }
}

function finish(job, seconds) {
  $("preview").hidden = true;
  const body = state.job?.body;
  if (job.status === "succeeded") {
    const total = Number($("progress").getAttribute("aria-valuemax")) || 1;
    setProgress(total, total, "Done");
    jobStatus(`Done in ${seconds.toFixed(1)} s.`);
    seedInfo(job.images?.[0]?.seed ?? body?.seed ?? null);
    showResults(job, { body, references: state.job?.references ?? 0 });
  } else if (job.status === "canceled") {
    jobStatus("Canceled: no image was kept.");
  } else {
    jobStatus("Failed.");
    showError(job.error || { message: "the job failed" });
  }
  addToHistory(job);
}

async function cancel() {
  const job = state.job;
  if (!job?.id) {
    job?.abort.abort();
    return;
  }
  $("cancel").disabled = true;
  jobStatus("Canceling…");
  try {
    await jobs.cancel(job.id);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 409)) showError(error);
  }
}

// -- results ----------------------------------------------------------------------------------

function requestBodyOf(job) {
  const request = job.request || {};
  const body = { prompt: request.prompt, model: job.model, width: request.width, height: request.height };
  if (request.steps !== undefined && request.steps !== null) body.steps = request.steps;
  if (request.guidance !== undefined && request.guidance !== null) body.guidance = request.guidance;
  Object.assign(body, { seed: request.seed, n: request.n, output_format: request.output_format, response_format: "url" });
  return body;
}

function copyButton(label, text) {
  const button = el("button", { type: "button", className: "secondary", textContent: label });
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied ✓";
    } catch {
      button.textContent = "Select the text below and copy it";
    }
    setTimeout(() => { button.textContent = label; }, 2000);
  });
  return button;
}

function showResults(job, { body = null, references = null } = {}) {
  const request = job.request || {};
  const sent = body || requestBodyOf(job);
  const refCount = references ?? request.references ?? 0;
  const ext = request.output_format === "jpeg" ? "jpg" : request.output_format || "png";
  const figures = (job.images || []).map((image, index) => {
    const url = localUrl(image.url);
    const img = el("img", { src: url, alt: `Generated image ${index + 1}, seed ${image.seed}`, loading: "lazy", width: request.width, height: request.height });
    const vary = el("button", { type: "button", className: "secondary", textContent: "Vary seed" });
    vary.addEventListener("click", () => { reopen(job, { images: false }); $("seed").value = randomSeed(); $("seed-lock").checked = true; $("generate-form").requestSubmit(); });
    const reference = el("button", { type: "button", className: "secondary", textContent: "Use as reference", disabled: !refs.limit });
    reference.addEventListener("click", async () => {
      try {
        await refs.addFromUrl(url, `seed-${image.seed}.${ext}`);
        $("refs-drop").focus();
      } catch (error) {
        refs.say(`Could not use this image: ${error.message}`);
      }
    });
    return el("figure", { className: "result" },
      el("a", { href: url, target: "_blank", rel: "noopener", title: "Open full size" }, img),
      el("figcaption", {},
        el("span", { className: "seed" }, "Seed ", el("output", { className: "seed-value", textContent: String(image.seed) })),
        el("span", { className: "result-actions" },
          el("a", { href: url, download: `fluxserve-${image.seed}.${ext}`, className: "button", textContent: "Download" }),
          vary, reference)));
  });
  const promptText = typeof sent.prompt === "string" ? sent.prompt : JSON.stringify(sent.prompt);
  const details = [`${job.model}`, `${request.width}×${request.height}`];
  if (request.steps) details.push(`${request.steps} steps`);
  if (request.guidance !== undefined && request.guidance !== null) details.push(`guidance ${request.guidance}`);
  if (refCount) details.push(`${refCount} reference${refCount === 1 ? "" : "s"}`);
  const curlText = curl(sent, location.origin, refCount);
  const pythonText = python(sent, location.origin, refCount);
  const code = el("pre", { className: "code-block", tabIndex: 0 }, el("code", { textContent: curlText }));
  const showCode = (text) => { code.firstChild.textContent = text; };
  const curlButton = copyButton("Copy as curl", curlText);
  curlButton.addEventListener("click", () => showCode(curlText));
  const pythonButton = copyButton("Copy as Python", pythonText);
  pythonButton.addEventListener("click", () => showCode(pythonText));
  $("results").replaceChildren(
    el("p", { className: "result-meta" }, el("span", { className: "result-prompt", textContent: promptText }), ` · ${details.join(" · ")}`),
    el("div", { className: "result-grid" }, ...figures),
    el("details", { className: "code" }, el("summary", { textContent: "Settings as code" }),
      el("div", { className: "row wrap" }, curlButton, pythonButton), code),
  );
  $("results-empty").hidden = true;
  $("output").hidden = false;
}

// -- history ----------------------------------------------------------------------------------

function historyItem(job) {
  const request = job.request || {};
  const first = job.images?.[0];
  const thumb = first
    ? el("img", { src: localUrl(first.url), alt: "", loading: "lazy" })
    : el("span", { className: `thumb-placeholder ${job.status}`, textContent: job.status });
  if (first) thumb.addEventListener("error", () => thumb.replaceWith(el("span", { className: "thumb-placeholder", textContent: "link expired" })));
  const prompt = typeof request.prompt === "string" ? request.prompt : JSON.stringify(request.prompt ?? "");
  const when = new Date((job.created_at || job.created) * 1000);
  const button = el("button", { type: "button", className: "history-item", title: prompt },
    thumb,
    el("span", { className: "history-text" },
      el("span", { className: "history-prompt", textContent: prompt }),
      el("span", { className: "history-meta", textContent: `${job.status} · ${job.model} · ${request.width}×${request.height} · ${when.toLocaleString()}` })));
  button.setAttribute("aria-label", `Reopen ${job.status} job: ${prompt.slice(0, 80)}`);
  button.addEventListener("click", () => openJob(job.id));
  return el("li", {}, button);
}

async function loadHistory(reset = false) {
  const list = $("history");
  if (reset) {
    state.historyCursor = null;
    state.historyIds.clear();
  }
  let page;
  try {
    page = await jobs.list(reset ? null : state.historyCursor);
  } catch (error) {
    const problem = keyProblem(error);
    if (problem) showKeyProblem(problem);
    $("history-error").textContent = problem
      ? "Your history shows here once the server accepts your key."
      : `Could not load the history: ${describe(error)}`;
    $("history-error").hidden = false;
    return;
  }
  $("history-error").hidden = true;
  const items = page.data.filter((job) => !state.historyIds.has(job.id));
  items.forEach((job) => state.historyIds.add(job.id));
  const nodes = items.map(historyItem);
  if (reset) list.replaceChildren(...nodes); else list.append(...nodes);
  state.historyCursor = page.has_more ? page.next_cursor : null;
  $("history-more").hidden = !state.historyCursor;
  $("history-empty").hidden = list.children.length > 0;
}

function addToHistory(job) {
  if (state.historyIds.has(job.id)) return;
  state.historyIds.add(job.id);
  $("history").prepend(historyItem(job));
  $("history-empty").hidden = true;
}

async function openJob(id) {
  clearErrors();
  let job;
  try {
    job = await jobs.get(id); // fresh image links
  } catch (error) {
    showError(error);
    return;
  }
  reopen(job);
}

/** Put a job's exact settings back into the form, and show its images. */
function reopen(job, { images = true } = {}) {
  const request = job.request || {};
  if (state.models.some((model) => model.id === job.model)) {
    $("model").value = job.model;
    applyModel({ keepSettings: true });
  } else {
    say(`Model ${job.model} is not served now; the settings are shown for ${$("model").value}.`, "info");
  }
  const text = typeof request.prompt === "string" ? request.prompt : JSON.stringify(request.prompt ?? "");
  const structured = text.trimStart().startsWith("{") && validate(text).ok;
  setMode(structured);
  $("prompt").value = structured ? JSON.stringify(JSON.parse(text), null, 2) : text;
  if (structured) checkJson();
  setSize(request.width, request.height);
  if (request.steps && !$("steps").disabled) $("steps").value = request.steps;
  if (request.guidance !== undefined && request.guidance !== null && state.caps?.guidance) $("guidance").value = request.guidance;
  if (request.seed !== undefined && request.seed !== null) {
    $("seed").value = request.seed;
    $("seed-lock").checked = true;
    seedInfo();
  }
  if (request.n) $("n").value = request.n;
  if (request.output_format) $("output-format").value = request.output_format;
  if (request.references) {
    say(`This job used ${request.references} reference image${request.references === 1 ? "" : "s"}; add ${request.references === 1 ? "it" : "them"} again to repeat it exactly.`, "info");
  }
  if (!images) return;
  $("job-panel").hidden = true;
  if (job.status === "succeeded") {
    showResults(job);
  } else {
    $("results").replaceChildren(el("p", { className: "hint", textContent: `This job ${job.status === "failed" ? "failed" : `is ${job.status}`}${job.error?.message ? `: ${job.error.message}` : "."}` }));
    $("output").hidden = false;
  }
  $("prompt").focus();
  $("generate-form").scrollIntoView({ block: "start", behavior: "smooth" });
}

// -- settings kept between visits (never the key's business) ----------------------------------

function saveSettings(body) {
  const { prompt, ...rest } = body;
  try {
    localStorage.setItem(SETTINGS_STORAGE, JSON.stringify({ ...rest, json: state.jsonMode, locked: $("seed-lock").checked }));
  } catch { /* not kept */ }
}

function loadSettings() {
  try {
    return JSON.parse(localStorage.getItem(SETTINGS_STORAGE) || "null");
  } catch {
    return null;
  }
}

function restoreSettings() {
  const saved = loadSettings();
  if (!saved || !state.caps || saved.model !== $("model").value) return;
  if (saved.width && saved.height && !sizeProblem(saved.width, saved.height, state.caps)) setSize(saved.width, saved.height);
  if (saved.steps && !$("steps").disabled) $("steps").value = saved.steps;
  if (saved.guidance !== undefined && state.caps.guidance) $("guidance").value = saved.guidance;
  if (saved.n) $("n").value = saved.n;
  if (saved.output_format) $("output-format").value = saved.output_format;
  if (saved.locked) {
    $("seed").value = saved.seed;
    $("seed-lock").checked = true;
  }
  seedInfo();
}

// -- start ------------------------------------------------------------------------------------

async function main() {
  refs = new References({
    list: $("refs"), input: $("refs-input"), drop: $("refs-drop"), error: $("refs-error"), limitLabel: $("refs-limit"),
  });
  setupKey();
  setupPrompt();
  setupSeed();
  $("model").addEventListener("change", () => { clearFieldError("model"); applyModel({ keepSettings: true }); });
  for (const id of ["width", "height"]) {
    $(id).addEventListener("input", sizeChanged);
    $(id).addEventListener("change", () => snapSizeInput(id));
  }
  $("swap-size").addEventListener("click", () => setSize(Number($("height").value), Number($("width").value)));
  for (const [id, field] of [["steps", "steps"], ["guidance", "guidance"], ["n", "n"], ["output-format", "format"]]) {
    $(id).addEventListener("input", () => clearFieldError(field));
  }
  $("generate-form").addEventListener("submit", generate);
  $("cancel").addEventListener("click", cancel);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.job) cancel();
  });
  $("history-more").addEventListener("click", () => loadHistory(false));
  $("history-refresh").addEventListener("click", () => loadHistory(true));

  $("loading").remove();
  $("generate-form").hidden = false;
  $("output").hidden = false;
  $("history-section").hidden = false;
  await loadModels();
  restoreSettings();
  await loadHistory(true);
  document.body.dataset.ready = "true";
}

main();
