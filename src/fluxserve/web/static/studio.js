// The studio page: starts each part and loads what the server publishes.
// Modules, one concern each: state.js (the page's state and saved settings), api.js (the API
// client and the key), key.js (the key form), errors.js (messages by the controls), form.js
// (the model, sizes, seed, and the request), prompt.js with structured.js (text and JSON
// prompts), sizes.js (sizes), refs.js (reference images), job.js (generating), results.js,
// history.js, snippets.js (curl / Python), sse.js (event streams), dom.js (element helpers),
// mask.js (the mask painter), loras.js (LoRA adapters and their scales).
// The rules input is checked against come from the server: GET /v1/rules and GET /v1/models.

import { $ } from "./dom.js";
import { checkReferences, loadModels, restoreSettings, setupForm } from "./form.js";
import { loadHistory, setupHistory } from "./history.js";
import { setupJob } from "./job.js";
import { setupKey } from "./key.js";
import { setupPrompt } from "./prompt.js";
import { Loras } from "./loras.js";
import { MaskPainter } from "./mask.js";
import { References } from "./refs.js";
import { state } from "./state.js";

async function reload() {
  await loadModels();
  await loadHistory(true);
}

async function main() {
  state.refs = new References({
    list: $("refs"), input: $("refs-input"), drop: $("refs-drop"), error: $("refs-error"),
    limitLabel: $("refs-limit"), hint: $("refs-formats"),
    onChange: () => { state.mask?.update(); checkReferences(); },
  });
  state.mask = new MaskPainter({ onChange: checkReferences });
  state.loras = new Loras();
  setupKey(reload);
  setupPrompt();
  setupForm();
  setupJob();
  setupHistory();

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
