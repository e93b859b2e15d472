// Reference images: file picker, drag and drop, paste; previews, reordering and removal.
// Files are checked here (type and size) before anything is uploaded, with the server's upload
// rules (GET /v1/rules, `uploads`). A reopened job whose images the page no longer has leaves a
// missing place for each (item.file null): an image added fills the first one, in order.

const REORDER = "application/x-fluxserve-reference";

/** "A, B, C or D" */
const either = (names) => (names.length > 1 ? `${names.slice(0, -1).join(", ")} or ${names.at(-1)}` : names[0] || "");

/** What is wrong with a file as a reference image under the server's upload rules, or null. */
export function fileProblem(file, uploads) {
  if (!uploads.formats.some((format) => format.media_type === file.type)) {
    return `${file.name || "the pasted item"} is not a ${either(uploads.formats.map((format) => format.name))} image`;
  }
  if (file.size > uploads.max_bytes) {
    return `${file.name} is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${uploads.max_mb} MB`;
  }
  return null;
}

export class References {
  constructor({ list, input, drop, error, limitLabel, hint, onChange = () => {} }) {
    Object.assign(this, { list, input, drop, error, limitLabel, hint, onChange });
    this.items = [];
    this.job = null; // the job whose images these are, put back or added again in its places; null once changed otherwise
    this.limit = 0;
    this.uploads = null;
    this.nextId = 1;
    input.addEventListener("change", () => {
      this.add([...input.files]);
      input.value = "";
    });
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
    drop.addEventListener("drop", (event) => this.dropped(event));
    drop.addEventListener("keydown", (event) => {
      if ((event.key === "Enter" || event.key === " ") && event.target === drop) {
        event.preventDefault();
        input.click();
      }
    });
    document.addEventListener("paste", (event) => {
      const files = [...(event.clipboardData?.files || [])];
      if (files.length === 0 || this.limit === 0) return;
      event.preventDefault();
      this.add(files);
    });
  }

  /** The files to send: those within the model's limit (the form refuses to send missing ones). */
  get files() {
    return this.items.slice(0, this.limit).filter((item) => item.file).map((item) => item.file);
  }

  /** How many places wait for an image of a reopened job that the page no longer has. */
  get missing() {
    return this.items.filter((item) => !item.file).length;
  }

  /** Put exactly these files back (job `job`'s own images), in order; nothing changes if they are there. */
  setFiles(files, job) {
    if (files.length !== this.items.length || files.some((file, index) => this.items[index].file !== file)) {
      this.clear();
      this.items = files.map((file) => ({ id: this.nextId++, file, url: URL.createObjectURL(file) }));
      this.say("");
      this.render();
    }
    this.job = job;
  }

  /** Job `job`'s `count` images are to be added again: the list becomes that many missing places. */
  expect(count, job) {
    this.clear();
    this.items = Array.from({ length: count }, () => ({ id: this.nextId++, file: null, url: null }));
    this.say("");
    this.render();
    this.job = job;
  }

  /** Remove the missing places: the user goes on without those images. */
  dropMissing() {
    if (!this.missing) return;
    this.job = null;
    this.items = this.items.filter((item) => item.file);
    this.render();
  }

  /** Take the server's upload rules: which formats, how large. */
  setRules(uploads) {
    this.uploads = uploads;
    this.input.accept = uploads.formats.map((format) => format.media_type).join(",");
    this.hint.textContent = `${either(uploads.formats.map((format) => format.name))}, up to ${uploads.max_mb} MB each.`;
  }

  /**
   * Follow the model: how many images it takes, and the text next to the legend. Images beyond
   * the limit stay in the list, marked as not sent (the form refuses to generate until they are
   * removed), so that switching back to a model that takes them loses nothing.
   */
  setLimit(limit, label = limit ? `(up to ${limit})` : "") {
    this.limit = limit;
    this.limitLabel.textContent = label;
    this.render();
  }

  say(message) {
    this.error.textContent = message;
    this.error.hidden = !message;
  }

  /** Add files, refusing (with a message) what is not an image, too large, or over the limit. */
  add(files) {
    const refused = [];
    for (const file of files) {
      const problem = this.uploads ? fileProblem(file, this.uploads) : "the server's upload rules are not loaded yet";
      if (problem) {
        refused.push(problem);
        continue;
      }
      const place = this.items.findIndex((item) => !item.file); // a reopened job's missing image
      if (place < 0 && this.items.length >= this.limit) {
        refused.push(`${file.name} was not added: this model takes at most ${this.limit} reference image${this.limit === 1 ? "" : "s"}`);
        continue;
      }
      const item = { id: this.nextId++, file, url: URL.createObjectURL(file) };
      if (place >= 0) {
        this.items[place] = item; // still that job's images
      } else {
        this.items.push(item);
        this.job = null;
      }
    }
    this.say(refused.length ? `${refused.join(". ")}.` : "");
    this.render();
  }

  async addFromUrl(url, name) {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(`could not fetch the image (${response.status})`);
    const blob = await response.blob();
    this.add([new File([blob], name, { type: blob.type })]);
  }

  move(index, to) {
    if (to < 0 || to >= this.items.length) return;
    this.job = null;
    const [item] = this.items.splice(index, 1);
    this.items.splice(to, 0, item);
    this.render();
    this.list.querySelectorAll("li")[to]?.querySelector(`[data-action="${index < to ? "later" : "earlier"}"]`)?.focus();
  }

  remove(index) {
    this.job = null;
    const [item] = this.items.splice(index, 1);
    if (item.url) URL.revokeObjectURL(item.url);
    this.say("");
    this.render();
    const buttons = this.list.querySelectorAll("[data-action=remove]");
    (buttons[Math.min(index, buttons.length - 1)] || this.drop).focus();
  }

  clear() {
    this.job = null;
    this.items.forEach((item) => item.url && URL.revokeObjectURL(item.url));
    this.items = [];
    this.render();
  }

  dropped(event) {
    event.preventDefault();
    this.drop.classList.remove("dragging");
    const from = event.dataTransfer.getData(REORDER);
    if (from !== "") {
      const target = event.target.closest?.("li");
      const to = target ? [...this.list.children].indexOf(target) : this.items.length - 1;
      this.move(Number(from), to);
      return;
    }
    this.add([...event.dataTransfer.files]);
  }

  render() {
    this.drop.closest("fieldset").hidden = this.limit === 0 && this.items.length === 0;
    this.list.replaceChildren(...this.items.map((item, index) => this.card(item, index)));
    this.onChange(this.items.length);
  }

  card(item, index) {
    const li = document.createElement("li");
    li.className = "ref";
    li.draggable = true;
    li.dataset.index = String(index);
    li.addEventListener("dragstart", (event) => event.dataTransfer.setData(REORDER, String(index)));
    let img;
    if (item.file) {
      img = document.createElement("img");
      img.src = item.url;
      img.alt = `Reference image ${index + 1}: ${item.file.name}`;
    } else { // a reopened job's image that the page no longer has
      li.classList.add("missing");
      img = document.createElement("span");
      img.className = "ref-missing";
      img.textContent = "Missing: add it again";
    }
    const label = document.createElement("span");
    label.className = "ref-label";
    label.textContent = `image ${index + 1}${item.file ? "" : " · missing"}`;
    if (index >= this.limit) { // kept for a model that takes it, but this one does not
      li.classList.add("unused");
      label.textContent += " · not sent";
      if (item.file) img.alt += " (not sent: this model does not take it)";
    }
    const tools = document.createElement("div");
    tools.className = "ref-tools";
    const button = (action, text, title, disabled, handler) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "icon secondary";
      b.dataset.action = action;
      b.textContent = text;
      b.title = title;
      b.setAttribute("aria-label", title);
      b.disabled = disabled;
      b.addEventListener("click", handler);
      return b;
    };
    tools.append(
      button("earlier", "←", `Move image ${index + 1} earlier`, index === 0, () => this.move(index, index - 1)),
      button("later", "→", `Move image ${index + 1} later`, index === this.items.length - 1, () => this.move(index, index + 1)),
      button("remove", "✕", `Remove image ${index + 1}`, false, () => this.remove(index)),
    );
    li.append(img, label, tools);
    return li;
  }
}
