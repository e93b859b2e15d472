// Output sizes: presets by aspect ratio scaled to a model, snapping, and the model's limits.

const MEGAPIXEL = 1024 * 1024;

export const PRESETS = [
  { id: "1:1", w: 1, h: 1, label: "Square 1:1" },
  { id: "4:3", w: 4, h: 3, label: "Landscape 4:3" },
  { id: "3:4", w: 3, h: 4, label: "Portrait 3:4" },
  { id: "16:9", w: 16, h: 9, label: "Wide 16:9" },
  { id: "9:16", w: 9, h: 16, label: "Tall 9:16" },
];

function limits(caps) {
  const multiple = caps.size_multiple || 16;
  return {
    multiple,
    min: Math.ceil((caps.min_side || 64) / multiple) * multiple,
    max: Math.floor((caps.max_side || 4096) / multiple) * multiple,
    maxPixels: (caps.max_megapixels || 4) * MEGAPIXEL,
    maxRatio: caps.max_aspect_ratio || 4,
  };
}

export function parseSize(text) {
  const match = /^(\d+)x(\d+)$/.exec(text || "");
  return match ? [Number(match[1]), Number(match[2])] : null;
}

/** A side rounded to the model's multiple and kept within its side limits. */
export function snapSide(value, caps) {
  const { multiple, min, max } = limits(caps);
  const number = Number(value);
  if (!Number.isFinite(number) || number <= 0) return min;
  return Math.min(max, Math.max(min, Math.round(number / multiple) * multiple));
}

/** The preset's size for this model: the model's default area at the preset's aspect ratio. */
export function presetSize(preset, caps) {
  const { multiple, maxPixels } = limits(caps);
  const [dw, dh] = parseSize(caps.default_size) || [1024, 1024];
  const area = Math.min(dw * dh, maxPixels);
  let width = snapSide(Math.sqrt((area * preset.w) / preset.h), caps);
  let height = snapSide((width * preset.h) / preset.w, caps);
  while (width * height > maxPixels && width > multiple && height > multiple) {
    if (width >= height) width -= multiple; else height -= multiple;
  }
  return [width, height];
}

/** The preset whose size this is for the model, or null (a custom size). */
export function matchPreset(width, height, caps) {
  return PRESETS.find((preset) => {
    const [w, h] = presetSize(preset, caps);
    return w === width && h === height;
  }) || null;
}

export const megapixels = (width, height) => (width * height) / MEGAPIXEL;

/** What is wrong with a size for this model, or null. */
export function sizeProblem(width, height, caps) {
  const { multiple, min, max, maxPixels, maxRatio } = limits(caps);
  for (const [name, side] of [["width", width], ["height", height]]) {
    if (!Number.isInteger(side)) return { param: name, message: `Enter a ${name} in pixels.` };
    if (side < min || side > max) return { param: name, message: `The ${name} must be ${min} to ${max} px.` };
    if (side % multiple) return { param: name, message: `The ${name} must be a multiple of ${multiple}.` };
  }
  if (width * height > maxPixels) {
    return { param: "size", message: `${width}×${height} is ${megapixels(width, height).toFixed(2)} MP; this model makes at most ${caps.max_megapixels} MP.` };
  }
  if (Math.max(width, height) / Math.min(width, height) > maxRatio) {
    return { param: "size", message: `The aspect ratio may be at most ${maxRatio}:1.` };
  }
  return null;
}
