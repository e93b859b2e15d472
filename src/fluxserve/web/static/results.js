// A finished job's images, with their seed, their actions, and the settings as code.

import { localUrl } from "./api.js";
import { $, el } from "./dom.js";
import { fillForm, randomSeed } from "./form.js";
import { loraSummary } from "./loras.js";
import { curl, python } from "./snippets.js";
import { state } from "./state.js";

/** The request body that would make a stored job again. */
function requestBodyOf(job) {
  const request = job.request || {};
  const body = { prompt: request.prompt, model: job.model, width: request.width, height: request.height };
  if (request.steps !== undefined && request.steps !== null) body.steps = request.steps;
  if (request.guidance !== undefined && request.guidance !== null) body.guidance = request.guidance;
  Object.assign(body, { seed: request.seed, n: request.n, output_format: request.output_format, response_format: "url" });
  if (request.loras?.length) body.loras = request.loras;
  return body;
}

/** A job's edit of image 1, as its request records it: {mask, strength}, or null for none. */
function editOf(request) {
  const strength = request.strength ?? null;
  return request.mask || strength !== null ? { mask: Boolean(request.mask), strength } : null;
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

function figure(job, image, index, ext) {
  const request = job.request || {};
  const { refs } = state;
  const url = localUrl(image.url);
  const img = el("img", { src: url, alt: `Generated image ${index + 1}, seed ${image.seed}`, loading: "lazy", width: request.width, height: request.height });
  const vary = el("button", { type: "button", className: "secondary", textContent: "Vary seed" });
  vary.addEventListener("click", async () => {
    await fillForm(job); // its images and mask back, or the form explains what is missing and sends nothing
    $("seed").value = randomSeed();
    $("seed-lock").checked = true;
    $("generate-form").requestSubmit();
  });
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
}

/** Show a job's images; `body` is the request as sent (else rebuilt from the job). */
export function showResults(job, { body = null, references = null } = {}) {
  const request = job.request || {};
  const sent = body || requestBodyOf(job);
  const refCount = references ?? request.references ?? 0;
  const ext = request.output_format === "jpeg" ? "jpg" : request.output_format || "png";
  const figures = (job.images || []).map((image, index) => figure(job, image, index, ext));
  const promptText = typeof sent.prompt === "string" ? sent.prompt : JSON.stringify(sent.prompt);
  const details = [`${job.model}`, `${request.width}×${request.height}`];
  if (request.steps) details.push(`${request.steps} steps`);
  if (request.guidance !== undefined && request.guidance !== null) details.push(`guidance ${request.guidance}`);
  if (refCount) details.push(`${refCount} reference${refCount === 1 ? "" : "s"}`);
  const edit = editOf(request);
  if (edit?.mask) details.push("masked edit");
  if (edit && edit.strength !== null) details.push(`strength ${edit.strength}`);
  const loras = loraSummary(request.loras);
  const curlText = curl(sent, location.origin, refCount, edit);
  const pythonText = python(sent, location.origin, refCount, edit);
  const code = el("pre", { className: "code-block", tabIndex: 0 }, el("code", { textContent: curlText }));
  const showCode = (text) => { code.firstChild.textContent = text; };
  const curlButton = copyButton("Copy as curl", curlText);
  curlButton.addEventListener("click", () => showCode(curlText));
  const pythonButton = copyButton("Copy as Python", pythonText);
  pythonButton.addEventListener("click", () => showCode(pythonText));
  $("results").replaceChildren(
    el("p", { className: "result-meta" }, el("span", { className: "result-prompt", textContent: promptText }), ` · ${details.join(" · ")}`,
      loras ? el("span", { className: "result-loras" }, " · LoRA ", el("output", { textContent: loras })) : null),
    el("div", { className: "result-grid" }, ...figures),
    el("details", { className: "code" }, el("summary", { textContent: "Settings as code" }),
      el("div", { className: "row wrap" }, curlButton, pythonButton), code),
  );
  $("results-empty").hidden = true;
  $("output").hidden = false;
}
