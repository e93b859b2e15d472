// Generating: submit the form as a job, follow its progress live, finish or cancel it.

import { ApiError, jobs, watchJob } from "./api.js";
import { $ } from "./dom.js";
import { clearErrors, showError, showFieldError } from "./errors.js";
import { asForm, buildBody, seedInfo } from "./form.js";
import { addToHistory } from "./history.js";
import { showResults } from "./results.js";
import { rememberSent, saveSettings, state } from "./state.js";

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
  const files = state.refs.files;
  let edit = null; // a masked edit, or one of all of image 1 (image to image)
  try {
    edit = files.length ? state.mask?.edit() ?? null : null;
  } catch (error) {
    showFieldError("strength", error.message);
    $("strength").focus();
    return;
  }
  saveSettings(body, { locked: $("seed-lock").checked });
  const payload = files.length ? asForm(body, files) : body;
  const mask = edit?.mask ? await state.mask.blob() : null;
  if (edit) { // an edit keeps image 1's size: no width/height
    payload.delete("width");
    payload.delete("height");
    if (mask) payload.append("mask", mask, "mask.png");
    if (edit.strength !== null) payload.append("strength", String(edit.strength));
  }
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
    if (files.length) rememberSent(job.id, files, mask);
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

/** Wire Generate, Cancel and Escape. */
export function setupJob() {
  $("generate-form").addEventListener("submit", generate);
  $("cancel").addEventListener("click", cancel);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.job) cancel();
  });
}
