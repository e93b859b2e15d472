// Structured JSON prompts, checked as they are typed with the rules the server publishes
// (GET /v1/rules: the prompt's JSON Schema and its limits), in the server's words: the schema
// is pydantic's, so a mistake is worded as pydantic words it. Nothing here knows the prompt's
// fields; tests/test_studio_rules.py checks that this agrees with the server.

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
  /** `path: what`, or `path what` for a message that reads on from the path ("is required"). */
  constructor(path, what, { after = ": " } = {}) {
    super(`${path}${after}${what}`);
    this.path = path;
  }
}
const reading = { after: " " };

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;
// Python's repr of a string, as the server quotes a value.
const repr = (text) => (text.includes("'") && !text.includes('"') ? `"${text}"` : `'${text.replaceAll("'", "\\'")}'`);
const choices = (values) => {
  const quoted = values.map((value) => (typeof value === "string" ? repr(value) : String(value)));
  return quoted.length > 1 ? `${quoted.slice(0, -1).join(", ")} or ${quoted.at(-1)}` : quoted[0];
};

/** Refuse what the server refuses before it reads the schema: too deep, too many values, not finite. */
function checkShape(value, root, { max_depth: maxDepth, max_values: maxValues }) {
  const where = (parts) => parts.reduce((path, part) => path + (typeof part === "number" ? `[${part}]` : `.${part}`), root);
  const stack = [[value, []]]; // walked in the server's order (jsonvalues.check_value), so the first fault is the same
  let seen = 0;
  while (stack.length) {
    const [item, parts] = stack.pop();
    seen += 1;
    if (seen > maxValues) throw new Invalid(root, `holds too many values; the limit is ${maxValues.toLocaleString("en-US")}`, reading);
    if (parts.length > maxDepth) throw new Invalid(where(parts.slice(0, maxDepth)), `nests too deeply; the limit is ${maxDepth} levels`, reading);
    if (typeof item === "number" && !Number.isFinite(item)) throw new Invalid(where(parts), `is ${item > 0 ? "inf" : "-inf"}; send a finite number`, reading);
    if (Array.isArray(item)) item.forEach((child, index) => stack.push([child, [...parts, index]]));
    else if (isObject(item)) Object.entries(item).forEach(([key, child]) => stack.push([child, [...parts, key]]));
  }
}

/** Checks a value against one node of a JSON Schema made by pydantic, with pydantic's messages. */
class SchemaChecker {
  constructor(schema) {
    this.schema = schema;
    this.defs = schema.$defs || {};
  }

  resolve(node) {
    return node.$ref ? this.defs[node.$ref.split("/").pop()] : node;
  }

  check(value, node, path) {
    const resolved = this.resolve(node);
    if (resolved.anyOf) return this.checkAny(value, resolved.anyOf, path);
    if (resolved.enum && !resolved.enum.includes(value)) throw new Invalid(path, `input should be ${choices(resolved.enum)}`);
    const check = {
      string: this.checkString, integer: this.checkInteger, number: this.checkNumber,
      array: this.checkArray, object: this.checkObject, null: this.checkNull,
    }[resolved.type];
    return check?.call(this, value, resolved, path);
  }

  /** The first option's message when none fits, as pydantic reports a union. */
  checkAny(value, options, path) {
    if (value === null && options.some((option) => option.type === "null")) return;
    let first = null;
    for (const option of options.filter((each) => each.type !== "null")) {
      try {
        this.check(value, option, path);
        return;
      } catch (error) {
        if (!(error instanceof Invalid)) throw error;
        first ??= error;
      }
    }
    throw first;
  }

  checkString(value, node, path) {
    if (typeof value !== "string") throw new Invalid(path, "input should be a valid string");
    if (node.minLength !== undefined && [...value].length < node.minLength) {
      throw new Invalid(path, `string should have at least ${plural(node.minLength, "character")}`);
    }
    if (node.pattern !== undefined && !new RegExp(node.pattern, "u").test(value)) {
      throw new Invalid(path, node["x-message"] ? `${repr(value)} ${node["x-message"]}` : `string should match pattern '${node.pattern}'`);
    }
  }

  checkInteger(value, node, path) {
    if (!Number.isInteger(value)) throw new Invalid(path, "input should be a valid integer");
  }

  checkNumber(value, node, path) {
    if (typeof value !== "number") throw new Invalid(path, "input should be a valid number");
  }

  checkNull(value, node, path) {
    if (value !== null) throw new Invalid(path, "input should be None");
  }

  checkArray(value, node, path) {
    if (!Array.isArray(value)) throw new Invalid(path, "input should be a valid list");
    if (node.maxItems !== undefined && value.length > node.maxItems) {
      throw new Invalid(path, `list should have at most ${plural(node.maxItems, "item")} after validation, not ${value.length}`);
    }
    if (node.items) value.forEach((item, index) => this.check(item, node.items, `${path}[${index}]`));
    if (node.minItems !== undefined && value.length < node.minItems) {
      throw new Invalid(path, `list should have at least ${plural(node.minItems, "item")} after validation, not ${value.length}`);
    }
  }

  checkObject(value, node, path) {
    if (!isObject(value)) throw new Invalid(path, `input should be a valid dictionary or instance of ${node.title}`);
    const required = node.required || [];
    for (const [key, property] of Object.entries(node.properties || {})) {
      if (value[key] !== undefined) this.check(value[key], property, `${path}.${key}`);
      else if (required.includes(key)) throw new Invalid(`${path}.${key}`, "is required", reading);
    }
  }
}

/** Every `pattern` in the schema: the colour rule is the only one. */
function colourPattern(schema) {
  const found = [];
  const visit = (node) => {
    if (Array.isArray(node)) node.forEach(visit);
    else if (isObject(node)) {
      if (typeof node.pattern === "string") found.push(node.pattern);
      Object.values(node).forEach(visit);
    }
  };
  visit(schema);
  return found.length ? new RegExp(found[0], "u") : null;
}

/**
 * The checks for the prompt rules the server publishes (GET /v1/rules, `prompt`).
 * validate(source) returns {ok: true, value} or {ok: false, message, path}, in the server's words.
 */
export function promptRules(rules) {
  const checker = new SchemaChecker(rules.structured_schema);
  const colour = colourPattern(rules.structured_schema);
  const isHex = (text) => typeof text === "string" && text.startsWith("#") && (!colour || colour.test(text));

  function validate(source, root = "prompt") {
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
      checkShape(value, root, rules);
      checker.check(value, rules.structured_schema, root);
    } catch (error) {
      if (error instanceof Invalid) return { ok: false, path: error.path, message: `invalid structured prompt: ${error.message}` };
      throw error;
    }
    return { ok: true, value };
  }

  /** Hex colours in possibly unfinished JSON text, valid or not: {text, valid}. */
  function coloursInText(source) {
    return [...source.matchAll(/"(#[^"]{0,12})"/g)].map((match) => ({ text: match[1], valid: isHex(match[1]) }));
  }

  /** What is wrong with a text prompt's length, or null; `limit` is the model's own, if any. */
  function textProblem(text, limit = null) {
    const length = [...text].length;
    if (length > rules.max_chars) return `prompt is ${length} characters long; the limit is ${rules.max_chars}`;
    if (limit !== null && length > limit) return `the prompt is ${length} characters; this model takes at most ${limit}`;
    return null;
  }

  return { validate, coloursInText, textProblem };
}
