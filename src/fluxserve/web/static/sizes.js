// Output sizes: presets by aspect ratio scaled to a model, snapping, and the model's limits.
// The limits are the model's capabilities (GET /v1/models) and the server's megapixel
// (GET /v1/rules); tests/test_studio_rules.py checks that sizes.problem agrees with the server.

export const PRESETS = [
  { id: "1:1", w: 1, h: 1, label: "Square 1:1" },
  { id: "4:3", w: 4, h: 3, label: "Landscape 4:3" },
  { id: "3:4", w: 3, h: 4, label: "Portrait 3:4" },
  { id: "16:9", w: 16, h: 9, label: "Wide 16:9" },
  { id: "9:16", w: 9, h: 16, label: "Tall 9:16" },
];

export function parseSize(text) {
  const match = /^(\d+)x(\d+)$/.exec(text || "");
  return match ? [Number(match[1]), Number(match[2])] : null;
}

/** One model's sizes: `caps` its capabilities, `megapixel` the pixels in a megapixel. */
export class Sizes {
  constructor(caps, megapixel) {
    const multiple = caps.size_multiple;
    Object.assign(this, {
      caps,
      megapixel,
      multiple,
      min: Math.ceil(caps.min_side / multiple) * multiple,
      max: Math.floor(caps.max_side / multiple) * multiple,
      maxPixels: caps.max_megapixels * megapixel,
      maxRatio: caps.max_aspect_ratio,
    });
  }

  megapixels(width, height) {
    return (width * height) / this.megapixel;
  }

  /** A side rounded to the model's multiple and kept within its side limits. */
  snap(value) {
    const number = Number(value);
    if (!Number.isFinite(number) || number <= 0) return this.min;
    return Math.min(this.max, Math.max(this.min, Math.round(number / this.multiple) * this.multiple));
  }

  /** The preset's size for this model: the model's default area at the preset's aspect ratio. */
  preset(preset) {
    const [dw, dh] = parseSize(this.caps.default_size);
    const area = Math.min(dw * dh, this.maxPixels);
    let width = this.snap(Math.sqrt((area * preset.w) / preset.h));
    let height = this.snap((width * preset.h) / preset.w);
    while (width * height > this.maxPixels && width > this.multiple && height > this.multiple) {
      if (width >= height) width -= this.multiple; else height -= this.multiple;
    }
    return [width, height];
  }

  /** The preset whose size this is for the model, or null (a custom size). */
  match(width, height) {
    return PRESETS.find((preset) => {
      const [w, h] = this.preset(preset);
      return w === width && h === height;
    }) || null;
  }

  /** What is wrong with a size for this model, {param, message}, or null. */
  problem(width, height) {
    const { multiple, min, max, maxPixels, maxRatio } = this;
    for (const [name, side] of [["width", width], ["height", height]]) {
      if (!Number.isInteger(side)) return { param: name, message: `Enter a ${name} in pixels.` };
      if (side < min || side > max) return { param: name, message: `The ${name} must be ${min} to ${max} px.` };
      if (side % multiple) return { param: name, message: `The ${name} must be a multiple of ${multiple}.` };
    }
    if (width * height > maxPixels) {
      return { param: "size", message: `${width}×${height} is ${this.megapixels(width, height).toFixed(2)} MP; this model makes at most ${this.caps.max_megapixels} MP.` };
    }
    if (Math.max(width, height) / Math.min(width, height) > maxRatio) {
      return { param: "size", message: `The aspect ratio may be at most ${maxRatio}:1.` };
    }
    return null;
  }
}
