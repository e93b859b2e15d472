// The settings of a request as a curl command and as Python (the openai client).
// The key is never written out: both read it from $FLUXSERVE_KEY.

const shellQuote = (text) => `'${text.replaceAll("'", "'\\''")}'`;

function pyValue(value) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(pyValue).join(", ")}]`;
  return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pyValue(v)}`).join(", ")}}`;
}

/** The fields of an edit's form: an edit of image 1 (mask or strength) keeps its size, so none is sent. */
function editFields(body, edit) {
  if (!edit) return body;
  const { width, height, ...rest } = body;
  return edit.strength === null ? rest : { ...rest, strength: edit.strength };
}

/**
 * body: the JSON body sent to /v1/jobs; references: how many reference files went with it;
 * edit: {mask, strength} when image 1 was edited (a mask file, or a strength), else null.
 */
export function curl(body, origin, references = 0, edit = null) {
  const lines = [];
  if (references) {
    lines.push(`curl -s ${origin}/v1/images/edits -H "Authorization: Bearer $FLUXSERVE_KEY" \\`);
    for (const [key, value] of Object.entries(editFields(body, edit))) {
      const text = typeof value === "object" ? JSON.stringify(value) : String(value);
      lines.push(`  -F ${shellQuote(`${key}=${text}`)} \\`);
    }
    for (let i = 1; i <= references; i += 1) lines.push(`  -F 'image[]=@image${i}.png' \\`);
    if (edit?.mask) lines.push("  -F 'mask=@mask.png' \\");
    lines.push("  | jq '.data[] | {seed, url}'");
    return lines.join("\n");
  }
  return [
    `curl -s ${origin}/v1/images/generations -H "Authorization: Bearer $FLUXSERVE_KEY" \\`,
    "  -H 'content-type: application/json' \\",
    `  -d ${shellQuote(JSON.stringify(body, null, 2))} \\`,
    "  | jq '.data[] | {seed, url}'",
  ].join("\n");
}

export function python(body, origin, references = 0, edit = null) {
  const { prompt, model, n, width, height, output_format: format, response_format: responseFormat, ...extra } = body;
  if (edit && edit.strength !== null) extra.strength = edit.strength;
  const lines = [
    "import os",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(`${origin}/v1`)}, api_key=os.environ["FLUXSERVE_KEY"])`,
    `result = client.images.${references ? "edit" : "generate"}(`,
    `    model=${pyValue(model)},`,
  ];
  if (references) {
    const files = Array.from({ length: references }, (_, i) => `open("image${i + 1}.png", "rb")`);
    lines.push(`    image=[${files.join(", ")}],`);
    if (edit?.mask) lines.push('    mask=open("mask.png", "rb"),');
  }
  const promptText = typeof prompt === "string" ? prompt : JSON.stringify(prompt);
  // An edit is a multipart form, whose fields are text: a list (loras) goes as its JSON.
  const fields = references
    ? Object.fromEntries(Object.entries(extra).map(([key, value]) => [key, typeof value === "object" ? JSON.stringify(value) : value]))
    : extra;
  lines.push(
    `    prompt=${pyValue(promptText)},`,
    ...(edit ? [] : [`    size="${width}x${height}",`]), // an edit keeps image 1's size
    `    n=${n},`,
    `    output_format=${pyValue(format)},`,
    `    response_format=${pyValue(responseFormat)},`,
    `    extra_body=${pyValue(fields)},  # FLUX controls travel in extra_body`,
    ")",
    "for item in result.data:",
    '    print(item.model_extra["seed"], item.url)',
  );
  return lines.join("\n");
}
