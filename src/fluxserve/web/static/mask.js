// The mask painter: paint over reference image 1 where it may change (brush, eraser, size, clear).
// The mask sent is OpenAI's form: a PNG the size of image 1, opaque where it is kept and
// transparent where it was painted. Shown for models whose capabilities have masks. Instead of a
// mask, "All of image 1" edits the whole image from the strength given (image to image).
//
// The canvas holds the mask at image 1's own pixel size and is laid exactly over the image (the
// stage shrinks to the image, see studio.css), so a pointer position maps to an image pixel by the
// ratio of the canvas's pixel size to its size on screen.

import { $ } from "./dom.js";
import { state } from "./state.js";

const PAINT = "rgba(60, 190, 255, 1)";

const HELP = {
  painted: "Strength 1 repaints the painted area; lower keeps more of it. Outside it, image 1 is kept as it is; the result has image 1's size.",
  whole: "Image to image: the edit starts from image 1. Strength 1 repaints all of it, 0 keeps it; lower keeps more. The result has image 1's size.",
};

export class MaskPainter {
  /** onChange: called when what the edit sends may have changed (strokes, clear, scope, image 1). */
  constructor({ onChange = () => {} } = {}) {
    this.onChange = onChange;
    this.field = $("mask-field");
    this.image = $("mask-image");
    this.canvas = $("mask-canvas");
    this.context = this.canvas.getContext("2d", { willReadFrequently: true });
    this.url = null;
    this.loaded = Promise.resolve(); // settles once image 1 is loaded and the canvas sized to it
    this.settle = null;
    this.required = null; // a reopened job's edit still to be made again: "mask", "strength" or null
    this.last = null; // the previous point of the stroke in progress, in canvas pixels; null when none
    this.canvas.width = 0;
    this.canvas.height = 0;
    this.canvas.addEventListener("pointerdown", (event) => this.start(event));
    this.canvas.addEventListener("pointermove", (event) => this.stroke(event));
    for (const end of ["pointerup", "pointercancel", "lostpointercapture"]) {
      this.canvas.addEventListener(end, () => {
        if (this.last !== null) this.onChange();
        this.last = null;
      });
    }
    $("mask-clear").addEventListener("click", () => this.clear());
    for (const radio of document.querySelectorAll("input[name=mask-scope]")) {
      radio.addEventListener("change", () => this.scopeChanged());
    }
    $("strength").addEventListener("input", () => this.onChange());
  }

  /** "painted": the edit changes where the mask is painted; "whole": all of image 1 (no mask). */
  scope() {
    return document.querySelector("input[name=mask-scope]:checked")?.value === "whole" ? "whole" : "painted";
  }

  /**
   * Put back a job's edit: its strength, and whether it was inside a mask or of all of image 1.
   * `required`: the job's edit must be made again before the form is sent (see missingEdit): the
   * job used images, and its mask, unless restored (see restore), must be painted again.
   */
  setEdit({ mask, strength, required = false }) {
    const edit = mask || (strength !== undefined && strength !== null);
    this.required = required && edit ? (mask ? "mask" : "strength") : null;
    if (!edit) return;
    if (strength !== undefined && strength !== null) $("strength").value = strength;
    document.querySelector(`input[name=mask-scope][value=${mask ? "painted" : "whole"}]`).checked = true;
    this.scopeChanged();
  }

  /**
   * The reopened job's edit that the form would not send now: "mask" (it edited inside a mask, and
   * none is painted, nor all of image 1 chosen instead), "strength" (it edited all of image 1, and
   * the model chosen takes no such edit), or null. Only while image 1 is there (else it is missing).
   */
  missingEdit() {
    if (!this.required || !state.refs?.items[0]?.file) return null;
    if (this.required === "mask") return (this.scope() === "whole" ? this.usable() : this.painted()) ? null : "mask";
    return this.usable() ? null : "strength"; // the painter is there: the scope shown is the user's
  }

  /** Paint a job's mask back (the PNG it sent: transparent where painted), once image 1 is loaded. */
  async restore(mask) {
    const url = this.url;
    await this.loaded;
    if (!this.usable() || !this.canvas.width || this.url !== url) return; // still required, and said so
    const bitmap = await createImageBitmap(mask);
    const context = this.context;
    context.clearRect(0, 0, this.canvas.width, this.canvas.height);
    context.fillStyle = PAINT;
    context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    context.globalCompositeOperation = "destination-out"; // kept where the mask is opaque
    context.drawImage(bitmap, 0, 0, this.canvas.width, this.canvas.height);
    context.globalCompositeOperation = "source-over";
    bitmap.close();
    this.required = null;
    this.onChange();
  }

  /** Whether the painter can be used: the model takes masks and image 1 is there. */
  usable() {
    return Boolean(state.caps?.masks && state.refs?.items[0]?.file);
  }

  scopeChanged() {
    const whole = this.scope() === "whole";
    this.canvas.closest(".mask-stage").classList.toggle("whole", whole); // the mask is kept, not shown
    for (const id of ["mask-size", "mask-clear"]) $(id).disabled = whole;
    for (const radio of document.querySelectorAll("input[name=mask-tool]")) radio.disabled = whole;
    $("mask-help").textContent = HELP[whole ? "whole" : "painted"];
    this.onChange();
  }

  /** Follow the model and reference image 1: shown only when both allow a mask. */
  update() {
    const usable = this.usable();
    this.field.hidden = !usable;
    const first = state.refs.items[0];
    if (!usable || this.url === first.url) return;
    this.url = first.url;
    this.canvas.width = 0; // nothing to paint on until the new image 1 is loaded
    this.canvas.height = 0;
    this.settle?.(); // a wait for the previous image 1 ends: it was replaced
    this.loaded = new Promise((resolve) => { this.settle = resolve; });
    this.image.onload = () => {
      if (this.image.src !== this.url) return; // a later image 1 replaced this one
      this.canvas.width = this.image.naturalWidth;
      this.canvas.height = this.image.naturalHeight;
      this.clear();
      this.settle();
    };
    this.image.onerror = () => this.settle();
    this.onChange(); // a new image 1 has no mask yet
    this.image.src = first.url;
  }

  clear() {
    this.last = null;
    this.context.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.onChange();
  }

  /** Canvas pixels per screen pixel, or null while the canvas is not laid out (hidden, not loaded). */
  scale() {
    const box = this.canvas.getBoundingClientRect();
    return box.width > 0 && box.height > 0 && this.canvas.width > 0 ? [box, this.canvas.width / box.width, this.canvas.height / box.height] : null;
  }

  point(event) {
    const [box, sx, sy] = this.scale();
    return [(event.clientX - box.left) * sx, (event.clientY - box.top) * sy];
  }

  start(event) {
    if (event.button !== 0 || !this.scale()) return;
    event.preventDefault(); // no text selection or image drag while painting
    try {
      this.canvas.setPointerCapture(event.pointerId); // keep the stroke when the pointer leaves the canvas
    } catch {
      // a pointer that is no longer active: the stroke still paints while over the canvas
    }
    this.last = this.point(event);
    this.paint(this.last, this.last);
  }

  stroke(event) {
    if (this.last === null || !this.scale()) return;
    const next = this.point(event);
    this.paint(this.last, next);
    this.last = next;
  }

  /** A round-ended line from `from` to `to` (a dot when they are the same), painted or erased. */
  paint(from, to) {
    const context = this.context;
    const eraser = document.querySelector("input[name=mask-tool]:checked")?.value === "eraser";
    const width = Math.max(1, Number($("mask-size").value) || 1) * this.scale()[1];
    context.globalCompositeOperation = eraser ? "destination-out" : "source-over";
    context.strokeStyle = PAINT;
    context.fillStyle = PAINT;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.lineWidth = width;
    context.beginPath();
    if (from[0] === to[0] && from[1] === to[1]) {
      context.arc(from[0], from[1], width / 2, 0, 2 * Math.PI);
      context.fill();
    } else {
      context.moveTo(...from);
      context.lineTo(...to);
      context.stroke();
    }
    context.globalCompositeOperation = "source-over";
  }

  /** Whether a mask is to be sent: the field is in use, the edit is where painted, and something is. */
  painted() {
    if (this.field.hidden || this.scope() !== "painted" || !this.canvas.width) return false;
    const { data } = this.context.getImageData(0, 0, this.canvas.width, this.canvas.height);
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) return true;
    return false;
  }

  /** The mask as a PNG blob the size of image 1: opaque black, transparent where painted. */
  async blob() {
    const out = document.createElement("canvas");
    out.width = this.canvas.width;
    out.height = this.canvas.height;
    const context = out.getContext("2d");
    context.fillStyle = "#000";
    context.fillRect(0, 0, out.width, out.height);
    context.globalCompositeOperation = "destination-out";
    context.drawImage(this.canvas, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }

  /** Whether image 1 is to be edited: a mask is painted, or all of image 1 is to change. */
  edits() {
    return !this.field.hidden && (this.scope() === "whole" || this.painted());
  }

  /**
   * What the edit sends besides image 1: {mask, strength} (mask true when painted; strength null
   * for the server's default, 1 with a mask), or null when image 1 is not edited. Throws a message
   * for a strength out of range, or none for all of image 1 (which has no default).
   */
  edit() {
    if (!this.edits()) return null;
    const mask = this.scope() === "painted";
    const strength = this.strength();
    if (strength === null && !mask) throw new Error("Changing all of image 1 needs a strength from 0 to 1.");
    return { mask, strength };
  }

  /** The strength typed in (0-1), null when left empty; throws a message when it is out of range. */
  strength() {
    const text = $("strength").value.trim();
    if (text === "") return null;
    const value = Number(text);
    if (!(value >= 0 && value <= 1)) throw new Error("Strength is a number from 0 to 1.");
    return value;
  }
}
