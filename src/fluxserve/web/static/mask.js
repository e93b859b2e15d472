// The mask painter: paint over reference image 1 where it may change (brush, eraser, size, clear).
// The mask sent is OpenAI's form: a PNG the size of image 1, opaque where it is kept and
// transparent where it was painted. Shown for models whose capabilities have masks.

import { $ } from "./dom.js";
import { state } from "./state.js";

export class MaskPainter {
  constructor() {
    this.field = $("mask-field");
    this.image = $("mask-image");
    this.canvas = $("mask-canvas");
    this.context = this.canvas.getContext("2d");
    this.url = null;
    this.drawing = false;
    this.canvas.addEventListener("pointerdown", (event) => this.start(event));
    this.canvas.addEventListener("pointermove", (event) => this.stroke(event));
    for (const end of ["pointerup", "pointerleave", "pointercancel"]) {
      this.canvas.addEventListener(end, () => { this.drawing = false; this.last = null; });
    }
    $("mask-clear").addEventListener("click", () => this.clear());
  }

  /** Follow the model and reference image 1: shown only when both allow a mask. */
  update() {
    const first = state.refs?.items[0];
    const usable = Boolean(state.caps?.masks && first);
    this.field.hidden = !usable;
    if (!usable) return;
    if (this.url === first.url) return;
    this.url = first.url;
    this.image.onload = () => {
      this.canvas.width = this.image.naturalWidth;
      this.canvas.height = this.image.naturalHeight;
      this.clear();
    };
    this.image.src = first.url;
  }

  clear() {
    this.context.clearRect(0, 0, this.canvas.width, this.canvas.height);
  }

  point(event) {
    const box = this.canvas.getBoundingClientRect();
    return [
      ((event.clientX - box.left) * this.canvas.width) / box.width,
      ((event.clientY - box.top) * this.canvas.height) / box.height,
    ];
  }

  start(event) {
    this.drawing = true;
    this.canvas.setPointerCapture?.(event.pointerId);
    this.last = this.point(event);
    this.stroke(event);
  }

  stroke(event) {
    if (!this.drawing) return;
    const [x, y] = this.point(event);
    const context = this.context;
    const eraser = document.querySelector("input[name=mask-tool]:checked")?.value === "eraser";
    context.globalCompositeOperation = eraser ? "destination-out" : "source-over";
    context.strokeStyle = "rgba(60, 190, 255, 1)";
    context.lineCap = "round";
    context.lineJoin = "round";
    context.lineWidth = Number($("mask-size").value) * (this.canvas.width / this.canvas.getBoundingClientRect().width);
    context.beginPath();
    context.moveTo(...this.last);
    context.lineTo(x, y);
    context.stroke();
    this.last = [x, y];
  }

  /** Whether anything is painted (and the field is in use). */
  painted() {
    if (this.field.hidden || !this.canvas.width) return false;
    const { data } = this.context.getImageData(0, 0, this.canvas.width, this.canvas.height);
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) return true;
    return false;
  }

  /** The mask as a PNG blob: opaque black, transparent where painted. */
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

  strength() {
    const value = Number($("strength").value);
    return $("strength").value === "" || !(value >= 0 && value <= 1) ? null : value;
  }
}
