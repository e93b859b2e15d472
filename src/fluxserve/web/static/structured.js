// Structured JSON prompts: the same rules and messages as the server's
// (src/fluxserve/prompts/structured.py), so the editor flags a mistake as it is typed.

const HEX = /^#[0-9A-Fa-f]{6}$/;
const POSITIONS = ["foreground", "midground", "background"];

export const TEMPLATE = {
  scene: "a rainy street market at night",
  subjects: [
    { type: "person", description: "a fruit seller", pose: "smiling", position: "foreground" },
  ],
  style: "cinematic photo",
  color_palette: ["#FF6B35", "#004E89", "warm amber"],
  lighting: "neon reflections",
  mood: "lively",
  background: "wet cobblestones",
  composition: "rule of thirds",
  camera: { angle: "eye level", distance: "medium", focus: "sharp", lens: "35mm", "f-number": "f/2.0", ISO: 800 },
  effects: ["light rain", "bokeh"],
};

class Invalid extends Error {
  constructor(path, message) {
    super(message);
    this.path = path;
  }
}

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
const repr = (text) => (text.includes("'") && !text.includes('"') ? `"${text}"` : `'${text.replaceAll("'", "\\'")}'`);

function text(value, path, { optional = true } = {}) {
  if (value === undefined) {
    if (optional) return;
    throw new Invalid(path, `${path} is required`);
  }
  if (value === null && optional) return;
  if (typeof value !== "string") throw new Invalid(path, `${path}: input should be a valid string`);
  if (value.length < 1) throw new Invalid(path, `${path}: string should have at least 1 character`);
}

function colour(value, path) {
  if (value === undefined || value === null) return;
  if (typeof value !== "string") throw new Invalid(path, `${path}: input should be a valid string`);
  if (value.startsWith("#") && !HEX.test(value)) {
    throw new Invalid(path, `${path}: ${repr(value)} is not a valid hex colour; write it as #RRGGBB, for example #FF8800`);
  }
}

function textOrNumber(value, path) {
  if (value === undefined || value === null) return;
  if (typeof value === "number") return;
  text(value, path);
}

function list(value, path, { min = 0, max = Infinity } = {}) {
  if (!Array.isArray(value)) throw new Invalid(path, `${path}: input should be a valid list`);
  if (value.length < min) {
    throw new Invalid(path, `${path}: list should have at least ${min} item${min === 1 ? "" : "s"} after validation, not ${value.length}`);
  }
  if (value.length > max) {
    throw new Invalid(path, `${path}: list should have at most ${max} items after validation, not ${value.length}`);
  }
}

function subject(value, path) {
  if (!isObject(value)) throw new Invalid(path, `${path}: input should be a valid dictionary or instance of Subject`);
  text(value.type, `${path}.type`);
  text(value.description, `${path}.description`, { optional: false });
  text(value.pose, `${path}.pose`);
  if (value.position !== undefined && value.position !== null && !POSITIONS.includes(value.position)) {
    throw new Invalid(`${path}.position`, `${path}.position: input should be 'foreground', 'midground' or 'background'`);
  }
  colour(value.color, `${path}.color`);
}

function camera(value, path) {
  if (value === undefined || value === null) return;
  if (!isObject(value)) throw new Invalid(path, `${path}: input should be a valid dictionary or instance of Camera`);
  for (const key of ["angle", "distance", "focus"]) text(value[key], `${path}.${key}`);
  for (const key of ["lens", "f-number", "ISO"]) textOrNumber(value[key], `${path}.${key}`);
}

function check(prompt, root) {
  text(prompt.scene, `${root}.scene`, { optional: false });
  if (prompt.subjects === undefined) throw new Invalid(`${root}.subjects`, `${root}.subjects is required`);
  list(prompt.subjects, `${root}.subjects`, { min: 1 });
  prompt.subjects.forEach((item, index) => subject(item, `${root}.subjects[${index}]`));
  text(prompt.style, `${root}.style`);
  if (prompt.color_palette !== undefined && prompt.color_palette !== null) {
    list(prompt.color_palette, `${root}.color_palette`, { min: 1, max: 16 });
    prompt.color_palette.forEach((item, index) => {
      if (typeof item !== "string") throw new Invalid(`${root}.color_palette[${index}]`, `${root}.color_palette[${index}]: input should be a valid string`);
      colour(item, `${root}.color_palette[${index}]`);
    });
  }
  for (const key of ["lighting", "mood", "background", "composition"]) text(prompt[key], `${root}.${key}`);
  camera(prompt.camera, `${root}.camera`);
  if (prompt.effects !== undefined && prompt.effects !== null) {
    list(prompt.effects, `${root}.effects`);
    prompt.effects.forEach((item, index) => text(item, `${root}.effects[${index}]`, { optional: false }));
  }
}

/**
 * Check the editor's text as a structured prompt.
 * Returns {ok: true, value} or {ok: false, message, path}; messages read as the server's.
 */
export function validate(source, root = "prompt") {
  let value;
  try {
    value = JSON.parse(source);
  } catch (error) {
    return { ok: false, path: root, message: `not valid JSON yet: ${error.message}` };
  }
  if (!isObject(value)) {
    return { ok: false, path: root, message: "a JSON prompt must be an object: { \"scene\": ..., \"subjects\": [...] }" };
  }
  try {
    check(value, root);
  } catch (error) {
    if (error instanceof Invalid) return { ok: false, path: error.path, message: `invalid structured prompt: ${error.message}` };
    throw error;
  }
  return { ok: true, value };
}

/** Every #RRGGBB colour in the prompt (palette and subjects), in order, without repeats. */
export function hexColours(value) {
  const found = [];
  const visit = (node) => {
    if (typeof node === "string") {
      if (HEX.test(node) && !found.includes(node.toUpperCase())) found.push(node.toUpperCase());
    } else if (Array.isArray(node)) {
      node.forEach(visit);
    } else if (isObject(node)) {
      Object.values(node).forEach(visit);
    }
  };
  visit(value);
  return found;
}

/** Hex colours in possibly unfinished JSON text, valid or not: {text, valid}. */
export function coloursInText(source) {
  const out = [];
  for (const match of source.matchAll(/"(#[^"]{0,12})"/g)) {
    out.push({ text: match[1], valid: HEX.test(match[1]) });
  }
  return out;
}
