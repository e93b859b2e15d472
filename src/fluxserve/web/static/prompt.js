// The prompt: text, or a structured JSON prompt checked as it is typed with the server's rules.

import { $, el } from "./dom.js";
import { capitalise, clearFieldError, showFieldError } from "./errors.js";
import { state } from "./state.js";
import { TEMPLATE } from "./structured.js";

export function setMode(json) {
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

/** Is this text a structured prompt the server accepts (a JSON object, before the rules load)? */
export function isStructured(text) {
  if (!text.trimStart().startsWith("{")) return false;
  if (state.prompts) return state.prompts.validate(text).ok;
  try { return typeof JSON.parse(text) === "object"; } catch { return false; }
}

/** The JSON prompt's value once it is valid, else null (and the message says why). */
export function checkJson() {
  const source = $("prompt").value;
  renderPalette();
  if (!source.trim()) {
    $("json-status").textContent = "Write a JSON object, or insert the starter template.";
    clearFieldError("prompt");
    return null;
  }
  if (!state.prompts) {
    $("json-status").textContent = "The server's rules are not loaded yet: it checks the prompt when you generate.";
    try { return JSON.parse(source); } catch { return null; }
  }
  const result = state.prompts.validate(source);
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
  const colours = state.jsonMode && state.prompts ? state.prompts.coloursInText($("prompt").value) : [];
  list.replaceChildren(...colours.map(({ text, valid }) => {
    const swatch = el("span", { className: `swatch${valid ? "" : " invalid"}`, ariaHidden: "true" });
    if (valid) swatch.style.backgroundColor = text;
    return el("li", { className: "palette-item", title: valid ? text : `${text} is not a valid #RRGGBB colour` },
      swatch, el("span", { textContent: valid ? text : `${text} (invalid)` }));
  }));
  list.hidden = colours.length === 0;
}

export function setupPrompt() {
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
export function promptValue() {
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
  const problem = state.prompts?.textProblem(text, state.caps?.max_prompt_chars ?? null);
  if (problem) {
    showFieldError("prompt", capitalise(problem));
    return null;
  }
  return text;
}
