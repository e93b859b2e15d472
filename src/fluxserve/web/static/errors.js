// Messages next to the controls they concern, and the form-wide message.

import { ApiError, describe, keyProblem } from "./api.js";
import { $ } from "./dom.js";

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
  mask: { error: "mask-error", controls: ["mask-canvas"] },
  strength: { error: "mask-error", controls: ["strength"] },
  loras: { error: "loras-error", controls: ["lora-choice"] },
};

/** The studio field an API error's `param` names, or null. */
function fieldOf(param) {
  if (!param) return null;
  const name = String(param);
  if (name === "prompt" || name === "input" || name.startsWith("prompt.") || name.startsWith("prompt[")) return "prompt";
  if (/^(image|images|input_image)/.test(name)) return "refs";
  if (/^loras\b/.test(name)) return "loras";
  if (name === "output_format" || name === "output_compression") return "format";
  if (name === "quality") return "steps";
  return FIELDS[name] ? name : null;
}

export function showFieldError(field, message) {
  const spec = FIELDS[field];
  const box = $(spec.error);
  box.textContent = message;
  box.hidden = false;
  spec.controls.forEach((id) => $(id).setAttribute("aria-invalid", "true"));
}

export function clearFieldError(field) {
  const spec = FIELDS[field];
  $(spec.error).hidden = true;
  $(spec.error).textContent = "";
  spec.controls.forEach((id) => $(id).removeAttribute("aria-invalid"));
}

export function clearErrors() {
  for (const field of Object.keys(FIELDS)) if (field !== "key" && field !== "refs") clearFieldError(field);
  $("refs-error").hidden = true;
  say("");
}

export function say(message, kind = "error") {
  const box = $("message");
  box.textContent = message;
  box.className = `message ${kind}`;
  box.hidden = !message;
}

export function showKeyProblem(message) {
  const box = $("key-error");
  box.textContent = message;
  box.hidden = !message;
  if (message) $("api-key").setAttribute("aria-invalid", "true");
  else $("api-key").removeAttribute("aria-invalid");
}

export const capitalise = (text) => text.charAt(0).toUpperCase() + text.slice(1);

/** Show an API error (an ApiError or a job's error object) where it belongs; true if it was the key. */
export function showError(error, { focus = true } = {}) {
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
