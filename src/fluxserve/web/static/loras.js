// LoRA adapters: those GET /v1/loras lists for the chosen model's family, each with a scale in the
// server's range, at most the server's number per request; sent as `loras`. Adapters put back from
// a job or the last visit stay as they were, listed or not (a repo id is never listed, a key may
// have changed): the server decides, and its refusal shows like any other error.

import { describe, loras as listLoras } from "./api.js";
import { $, el } from "./dom.js";
import { clearFieldError, showFieldError } from "./errors.js";
import { state } from "./state.js";

const familyName = (family) => family.replace("flux", "FLUX");
const UNKNOWN_FAMILY = "Its file does not say which models it is for: the model checks it when used.";
const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;

/** "style 0.8, ink -0.5": the adapters and scales a request used ("" for none). */
export const loraSummary = (loras) => (loras || []).map((lora) => `${lora.name} ${lora.scale}`).join(", ");

export class Loras {
  constructor() {
    this.choice = $("lora-choice");
    this.addButton = $("lora-add");
    this.list = $("loras");
    this.listing = null; // GET /v1/loras: {data, max_per_request, min_scale, max_scale}
    this.problem = ""; // why the list could not be loaded
    this.note = ""; // what the last change of model removed
    this.picks = []; // {name, scale: the text typed}, in the order sent
    this.addButton.addEventListener("click", () => this.add(this.choice.value));
  }

  /** Fetch the list; update() shows it once the model is known. */
  async load() {
    try {
      this.listing = await listLoras();
      this.problem = "";
    } catch (error) {
      this.listing = null;
      this.problem = `Could not list the adapters: ${describe(error)}`;
    }
  }

  get family() {
    return state.caps?.lora_family ?? null;
  }

  card(name) {
    return this.listing?.data.find((card) => card.id === name) ?? null;
  }

  /** An adapter fits the chosen model when it is of the model's family, or its file does not say. */
  fits(card) {
    return this.family !== null && (card.family === null || card.family === this.family);
  }

  /** Follow the chosen model: offer what fits, and remove picks that cannot fit it, saying so. */
  update() {
    const model = $("model").value;
    const misfits = !state.caps ? [] : this.picks.filter((pick) => {
      const card = this.card(pick.name);
      return this.family === null || (card !== null && !this.fits(card));
    });
    this.picks = this.picks.filter((pick) => !misfits.includes(pick));
    const names = misfits.map((pick) => pick.name).join(", ");
    if (!misfits.length) this.note = "";
    else if (this.family === null) this.note = `Removed ${names}.`; // status() says why
    else this.note = `Removed ${names}: not for ${familyName(this.family)} models like ${model}.`;
    this.render();
  }

  add(name, scale = 1) {
    if (!name || this.picks.length >= this.max) return;
    this.picks.push({ name, scale: String(scale) });
    this.note = "";
    clearFieldError("loras");
    this.render();
    this.list.lastElementChild.querySelector("input").focus();
  }

  remove(index) {
    this.picks.splice(index, 1);
    this.note = "";
    clearFieldError("loras");
    this.render();
    (this.list.querySelectorAll("button")[Math.min(index, this.picks.length - 1)] || this.choice).focus();
  }

  /** Put a job's (or the last visit's) adapters back, exactly. */
  set(loras) {
    this.picks = (loras || []).map((lora) => ({ name: lora.name, scale: String(lora.scale ?? 1) }));
    this.update();
  }

  get max() {
    return this.listing?.max_per_request ?? 0;
  }

  render() {
    const all = this.listing?.data || [];
    const fitting = all.filter((card) => this.fits(card));
    const offered = fitting.filter((card) => !this.picks.some((pick) => pick.name === card.id));
    this.choice.replaceChildren(...offered.map((card) => (card.family
      ? el("option", { value: card.id, textContent: card.id })
      : el("option", { value: card.id, textContent: `${card.id} (family not known)`, title: UNKNOWN_FAMILY }))));
    const full = this.picks.length >= this.max;
    this.choice.disabled = offered.length === 0 || full;
    this.addButton.disabled = this.choice.disabled;
    this.list.replaceChildren(...this.picks.map((pick, index) => this.row(pick, index)));
    $("loras-limit").textContent = this.listing ? `(up to ${this.max})` : "";
    $("loras-info").textContent = [this.note, this.status(all, fitting, full)].filter(Boolean).join(" ");
  }

  /** What the picker offers, and why nothing when it offers nothing. */
  status(all, fitting, full) {
    if (this.problem) return this.problem;
    if (!this.listing) return "";
    const model = $("model").value;
    if (this.family === null) return `${model} takes no LoRA adapters.`;
    if (all.length === 0) return "The server lists no LoRA adapters for you: it has none in its lora_dir, or your key may use none.";
    const others = [...new Set(all.filter((card) => !this.fits(card)).map((card) => familyName(card.family)))].join(" or ");
    if (fitting.length === 0) return `None of the server's adapters fits ${model}, a ${familyName(this.family)} model: they are for ${others}.`;
    const { min_scale: low, max_scale: high } = this.listing;
    const limit = full ? `At most ${plural(this.max, "adapter")} per request.` : `Up to ${plural(this.max, "adapter")}, scales ${low} to ${high}.`;
    const hidden = all.length - fitting.length;
    return hidden ? `${limit} ${plural(hidden, "adapter")} for ${others} not shown.` : limit;
  }

  row(pick, index) {
    const scale = el("input", { type: "number", inputMode: "decimal", step: "0.05", value: pick.scale, className: "lora-scale" });
    if (this.listing) Object.assign(scale, { min: this.listing.min_scale, max: this.listing.max_scale });
    scale.setAttribute("aria-label", `Scale of ${pick.name}`);
    scale.addEventListener("input", () => { pick.scale = scale.value; clearFieldError("loras"); });
    const remove = el("button", { type: "button", className: "icon secondary", textContent: "✕", title: `Remove ${pick.name}` });
    remove.setAttribute("aria-label", `Remove ${pick.name}`);
    remove.addEventListener("click", () => this.remove(index));
    const unlisted = this.listing && !this.card(pick.name)
      ? el("small", { className: "hint-inline", textContent: "not in the server's list for you: it decides" })
      : null;
    return el("li", { className: "lora" }, el("span", { className: "lora-name" }, pick.name, unlisted), scale, remove);
  }

  /** The adapters to send ([] for none), or null after showing what is wrong. */
  body() {
    const low = this.listing?.min_scale ?? -Infinity;
    const high = this.listing?.max_scale ?? Infinity;
    if (this.listing && this.picks.length > this.max) {
      showFieldError("loras", `This server applies at most ${plural(this.max, "adapter")} per request: remove ${this.picks.length - this.max}.`);
      return null;
    }
    const loras = [];
    for (const pick of this.picks) {
      const scale = Number(pick.scale);
      if (pick.scale.trim() === "" || !(scale >= low && scale <= high)) {
        showFieldError("loras", `The scale of ${pick.name} must be a number${this.listing ? ` from ${low} to ${high}` : ""}.`);
        return null;
      }
      loras.push({ name: pick.name, scale });
    }
    return loras;
  }
}
