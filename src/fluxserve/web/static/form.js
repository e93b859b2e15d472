// The settings form: the model and the controls that follow its capabilities, sizes, seed,
// the server's published rules, and the request the form builds.

import { describe, keyProblem, models, rules } from "./api.js";
import { $, el } from "./dom.js";
import { clearFieldError, say, showError, showFieldError, showKeyProblem } from "./errors.js";
import { checkJson, isStructured, promptValue, setMode } from "./prompt.js";
import { PRESETS, Sizes, parseSize } from "./sizes.js";
import { loadSettings, state } from "./state.js";
import { promptRules } from "./structured.js";

// -- the server's rules and models ------------------------------------------------------------

/** Use the rules every request is checked against (GET /v1/rules). */
function applyRules(published) {
  state.rules = published;
  state.prompts = promptRules(published.prompt);
  state.refs.setRules(published.uploads);
  $("seed").max = published.max_seed;
  if (state.jsonMode) checkJson();
}

/** Load the server's rules and its models; the controls follow the chosen model. */
export async function loadModels() {
  let list;
  try {
    [list] = await Promise.all([models(), rules().then(applyRules), state.loras.load()]);
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

export function currentModel() {
  return state.models.find((model) => model.id === $("model").value) || null;
}

const inRange = (value, low, high) => value !== "" && Number(value) >= low && Number(value) <= high;

function applyModel({ keepSettings = false } = {}) {
  const model = currentModel();
  if (!model) return;
  const caps = model.capabilities;
  state.caps = caps;
  state.sizes = new Sizes(caps, state.rules.megapixel);
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

  const references = caps.max_reference_images || 0;
  if (references === 0 && caps.masks) { // FLUX.1: no references, but image 1 to edit
    state.refs.setLimit(1, "(image 1 only: the image to edit, with a mask or a strength)");
  } else {
    state.refs.setLimit(references);
  }
  state.mask?.update();
  checkReferences();
  state.loras.update();
  renderPresets();
  const width = Number($("width").value);
  const height = Number($("height").value);
  if (!keepSettings || !width || !height || state.sizes.problem(width, height)) {
    const [w, h] = parseSize(caps.default_size) || state.sizes.preset(PRESETS[0]);
    setSize(w, h);
  } else {
    setSize(width, height);
  }
}

// -- sizes ------------------------------------------------------------------------------------

function renderPresets() {
  const radios = PRESETS.map((preset) => {
    const [w, h] = state.sizes.preset(preset);
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
  const { caps, sizes } = state;
  if (!caps) return;
  const width = Number($("width").value);
  const height = Number($("height").value);
  const preset = sizes.match(width, height);
  const radio = $(preset ? `aspect-${preset.id.replace(":", "-")}` : "aspect-custom");
  if (radio) radio.checked = true;
  const megapixels = sizes.megapixels(width, height);
  const mp = width && height ? megapixels.toFixed(megapixels < 0.1 ? 3 : 2) : "–";
  $("size-info").textContent = `${width || "?"}×${height || "?"} px · ${mp} MP of ${caps.max_megapixels} · sides ${caps.min_side}-${caps.max_side}, multiples of ${caps.size_multiple}`;
  const problem = width && height ? sizes.problem(width, height) : null;
  if (problem) showFieldError("size", problem.message); else clearFieldError("size");
}

function snapSizeInput(id) {
  const input = $(id);
  if (input.value === "" || !state.sizes) return;
  const snapped = state.sizes.snap(input.value);
  if (snapped !== Number(input.value)) {
    input.value = snapped;
    $("size-info").dataset.snapped = "true";
  }
  sizeChanged();
}

// -- seed -------------------------------------------------------------------------------------

export const randomSeed = () => crypto.getRandomValues(new Uint32Array(1))[0];

function setupSeed() {
  $("seed").addEventListener("input", () => {
    if ($("seed").value !== "") $("seed-lock").checked = true;
    seedInfo();
    clearFieldError("seed");
  });
  $("seed-lock").addEventListener("change", () => seedInfo());
  $("seed-new").addEventListener("click", () => {
    $("seed").value = randomSeed();
    seedInfo();
  });
}

export function seedInfo(used = null) {
  const locked = $("seed-lock").checked;
  const last = used === null ? "" : `Last image used seed ${used}. `;
  $("seed-info").textContent = last + (locked
    ? "Locked: every generation uses this seed."
    : "Unlocked: a new random seed for each generation.");
}

// -- what the reference images can do with this model -----------------------------------------

const imageNames = (first, last) => (first === last ? `image ${first}` : `images ${first}-${last}`);
/** "1, 2 and 3" */
const listed = (names) => (names.length > 1 ? `${names.slice(0, -1).join(", ")} and ${names.at(-1)}` : names[0] || "");

/**
 * Why the form cannot be sent with its reference images as they are, or null. Nothing is dropped
 * silently: a reopened job's images (or mask) that the page no longer has, images the model does
 * not take, and an image 1 that a FLUX.1 model cannot use without a mask or a strength, are
 * explained here and keep the form from being sent until resolved.
 */
export function referencesProblem() {
  const { caps, refs, mask } = state;
  const model = currentModel();
  if (!caps || !model) return null;
  const problems = [];
  const count = refs.items.length;
  const references = caps.max_reference_images || 0;
  const missing = refs.items.flatMap((item, index) => (item.file ? [] : [index + 1]));
  if (missing.length) {
    const names = missing.length === 1 ? `image ${missing[0]}` : `images ${listed(missing)}`;
    problems.push(`This job used ${count} reference image${count === 1 ? "" : "s"}; this page no longer has ${names} (it keeps a job's images only while it stays open). Add ${missing.length === 1 ? "it" : "them"} again (each image added takes the first missing place), or press “Go on without the missing images”.`);
  }
  if (count > refs.limit) {
    const extra = imageNames(refs.limit + 1, count);
    if (refs.limit === 0) {
      problems.push(`${model.id} takes no reference images: remove ${count === 1 ? "it" : "them"} (marked “not sent”), or choose a model that takes them.`);
    } else if (references === 0) {
      problems.push(`${model.id} edits image 1 alone and takes no other images: remove ${extra} (marked “not sent”), or choose a FLUX.2 model to use them all.`);
    } else {
      problems.push(`${model.id} takes at most ${refs.limit} reference image${refs.limit === 1 ? "" : "s"}: remove ${extra} (marked “not sent”), or choose a model that takes more.`);
    }
  }
  const edit = mask?.missingEdit();
  if (edit) {
    const without = references ? `, or press “Go on without the ${edit === "mask" ? "mask" : "edit"}” to use the images as they are` : "";
    const what = edit === "mask" ? "image 1 inside a mask" : "all of image 1 (image to image)";
    if (!caps.masks) {
      problems.push(`This job edited ${what}, and ${model.id} makes no such edits: choose a model that does${without}.`);
    } else {
      problems.push(`This job edited image 1 inside a mask, which this page no longer has: paint it again over image 1 below, or choose “All of image 1” with a strength${without}.`);
    }
  } else if (references === 0 && caps.masks && refs.items[0]?.file && !mask?.edits()) {
    problems.push(`${model.id} uses image 1 only to edit it: paint a mask over it below (where it may change), or choose “All of image 1” with a strength. To generate from the prompt alone, remove image 1.`);
  }
  return problems.length ? problems.join(" ") : null;
}

/** Show, next to the reference images, why the form cannot be sent with them (or nothing). */
export function checkReferences() {
  const note = $("refs-note");
  const problem = referencesProblem();
  note.textContent = problem || "";
  note.hidden = !problem;
  $("refs-drop-missing").hidden = !state.refs.missing;
  const edit = state.mask?.missingEdit();
  $("mask-drop-required").hidden = !(edit && state.caps?.max_reference_images);
  $("mask-drop-required").textContent = `Go on without the ${edit === "strength" ? "edit" : "mask"}`;
  if (!problem) {
    note.classList.remove("field-error");
    $("refs-drop").removeAttribute("aria-invalid");
  }
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

/** The request body from the form, or null after showing what is wrong next to each control. */
export function buildBody() {
  const { caps } = state;
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
  const problem = state.sizes.problem(width, height);
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
  body.seed = integer("seed", "seed", 0, state.rules.max_seed, "The seed");
  body.n = integer("n", "n", 1, caps.max_images, "The number of images");
  if (body.seed === null || body.n === null) ok = false;
  body.output_format = $("output-format").value;
  body.response_format = "url";
  const loras = state.loras.body();
  if (loras === null) ok = false;
  else if (loras.length) body.loras = loras;
  if (referencesProblem()) { // said next to the references, now as an error: nothing is sent
    checkReferences();
    $("refs-note").classList.add("field-error");
    $("refs-drop").setAttribute("aria-invalid", "true");
    ok = false;
  }
  return ok ? body : null;
}

/** The body as multipart form data, with the reference images as image[]. */
export function asForm(body, files) {
  const form = new FormData();
  for (const [key, value] of Object.entries(body)) {
    form.append(key, typeof value === "object" ? JSON.stringify(value) : String(value));
  }
  files.forEach((file, index) => form.append("image[]", file, file.name || `image-${index + 1}.png`));
  return form;
}

// -- settings put back: from the last visit, or from a job ------------------------------------

export function restoreSettings() {
  const saved = loadSettings();
  if (!saved || !state.caps || saved.model !== $("model").value) return;
  if (saved.width && saved.height && !state.sizes.problem(saved.width, saved.height)) setSize(saved.width, saved.height);
  if (saved.steps && !$("steps").disabled) $("steps").value = saved.steps;
  if (saved.guidance !== undefined && state.caps.guidance) $("guidance").value = saved.guidance;
  if (saved.n) $("n").value = saved.n;
  if (saved.output_format) $("output-format").value = saved.output_format;
  state.loras.set(saved.loras);
  if (saved.locked) {
    $("seed").value = saved.seed;
    $("seed-lock").checked = true;
  }
  seedInfo();
}

/** Put a job's exact settings back into the form, its reference images and mask too (see below). */
export async function fillForm(job) {
  const request = job.request || {};
  if (state.models.some((model) => model.id === job.model)) {
    $("model").value = job.model;
    applyModel({ keepSettings: true });
  } else {
    say(`Model ${job.model} is not served now; the settings are shown for ${$("model").value}.`, "info");
  }
  const text = typeof request.prompt === "string" ? request.prompt : JSON.stringify(request.prompt ?? "");
  const structured = isStructured(text);
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
  state.loras.set(request.loras);
  await restoreReferences(job);
}

/**
 * Put back a job's reference images and its edit of image 1. The page keeps the images (and mask)
 * each job it sent used while it stays open, and puts those exact ones back; otherwise each image
 * becomes a missing place, and a mask must be painted again: the form is not sent until they are
 * added again, or the user goes on without them (see referencesProblem). A job without images
 * leaves the form's images as they are.
 */
async function restoreReferences(job) {
  const request = job.request || {};
  const count = request.references || 0;
  const sent = state.sent.get(job.id);
  const known = Boolean(sent && sent.files.length === count);
  const { refs } = state;
  if (count === 0) {
    refs.dropMissing(); // another job's missing images: not this one's
  } else if (known) {
    refs.setFiles(sent.files, job.id);
  } else if (refs.job !== job.id || refs.items.length !== count) { // else: its images, being added again
    refs.expect(count, job.id);
  }
  state.mask?.setEdit({ mask: request.mask, strength: request.strength, required: count > 0 });
  if (count && known && sent.mask) await state.mask.restore(sent.mask);
  checkReferences();
}

/** Wire the controls: the model, sizes, seed and the fields whose message clears as they change. */
export function setupForm() {
  setupSeed();
  $("model").addEventListener("change", () => { clearFieldError("model"); applyModel({ keepSettings: true }); });
  for (const id of ["width", "height"]) {
    $(id).addEventListener("input", sizeChanged);
    $(id).addEventListener("change", () => snapSizeInput(id));
  }
  $("swap-size").addEventListener("click", () => setSize(Number($("height").value), Number($("width").value)));
  $("refs-drop-missing").addEventListener("click", () => { state.refs.dropMissing(); $("refs-drop").focus(); });
  $("mask-drop-required").addEventListener("click", () => { state.mask.required = null; checkReferences(); $("refs-drop").focus(); });
  for (const [id, field] of [["steps", "steps"], ["guidance", "guidance"], ["n", "n"], ["output-format", "format"]]) {
    $(id).addEventListener("input", () => clearFieldError(field));
  }
}
