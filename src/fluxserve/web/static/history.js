// The key's past jobs, newest first, paged; one reopens with its exact settings and images.

import { describe, jobs, keyProblem, localUrl } from "./api.js";
import { $, el } from "./dom.js";
import { clearErrors, showError, showKeyProblem } from "./errors.js";
import { fillForm } from "./form.js";
import { loraSummary } from "./loras.js";
import { showResults } from "./results.js";
import { state } from "./state.js";

function historyItem(job) {
  const request = job.request || {};
  const first = job.images?.[0];
  const thumb = first
    ? el("img", { src: localUrl(first.url), alt: "", loading: "lazy" })
    : el("span", { className: `thumb-placeholder ${job.status}`, textContent: job.status });
  if (first) thumb.addEventListener("error", () => thumb.replaceWith(el("span", { className: "thumb-placeholder", textContent: "link expired" })));
  const prompt = typeof request.prompt === "string" ? request.prompt : JSON.stringify(request.prompt ?? "");
  const when = new Date((job.created_at || job.created) * 1000);
  const loras = loraSummary(request.loras);
  const button = el("button", { type: "button", className: "history-item", title: prompt },
    thumb,
    el("span", { className: "history-text" },
      el("span", { className: "history-prompt", textContent: prompt }),
      el("span", { className: "history-meta", textContent: `${job.status} · ${job.model} · ${request.width}×${request.height} · ${when.toLocaleString()}` }),
      loras ? el("span", { className: "history-meta history-loras", textContent: `LoRA ${loras}` }) : null));
  button.setAttribute("aria-label", `Reopen ${job.status} job: ${prompt.slice(0, 80)}`);
  button.addEventListener("click", () => openJob(job.id));
  return el("li", {}, button);
}

export async function loadHistory(reset = false) {
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

export function addToHistory(job) {
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
  await reopen(job);
}

/** Put a job's exact settings back into the form, and show its images. */
async function reopen(job) {
  await fillForm(job);
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

export function setupHistory() {
  $("history-more").addEventListener("click", () => loadHistory(false));
  $("history-refresh").addEventListener("click", () => loadHistory(true));
}
