// The API key: saved in this browser, sent only to this server, forgotten on request.

import { apiKey } from "./api.js";
import { $ } from "./dom.js";
import { showKeyProblem } from "./errors.js";

function keyStatus() {
  $("key-status").textContent = apiKey.get()
    ? "A key is saved in this browser and sent only to this server."
    : "No key saved: fine on a server that runs without keys.";
  $("forget-key").disabled = !apiKey.get();
}

/** Wire the key form; `changed` runs after the key is set or forgotten. */
export function setupKey(changed) {
  $("api-key").value = apiKey.get();
  keyStatus();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("api-key").value.trim();
    if (value) apiKey.set(value); else apiKey.clear();
    showKeyProblem("");
    keyStatus();
    changed();
  });
  $("forget-key").addEventListener("click", () => {
    apiKey.clear();
    $("api-key").value = "";
    showKeyProblem("");
    keyStatus();
    $("key-status").textContent = "Key forgotten: it is no longer kept in this browser.";
    $("api-key").focus();
    changed();
  });
}
