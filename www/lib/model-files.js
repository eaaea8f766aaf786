// Model files picked by the user (file input, folder input, drag and drop): which of them to
// read, and how to collect the files of a dropped folder.

/** File names webtune reads (the same rule as `is_model_file` in src/io/hf.rs). */
export function isModelFile(name) {
  return (
    [
      "config.json",
      "model.safetensors.index.json",
      "tokenizer.json",
      "tokenizer_config.json",
      "generation_config.json",
      "special_tokens_map.json",
    ].includes(name) ||
    name.endsWith(".safetensors") ||
    name.endsWith(".gguf")
  );
}

function baseName(path) {
  return path.split("/").pop();
}

/**
 * From `[{path, file}]` keep the model files, one per name: when a folder holds several files
 * of one name (e.g. a copy in a subfolder), the one nearest the top wins. Returns
 * `{picked: [{name, path, file}], ignored: [path]}`.
 */
export function pickModelFiles(entries) {
  const byName = new Map();
  const ignored = [];
  for (const entry of entries) {
    const name = baseName(entry.path);
    if (!isModelFile(name)) {
      ignored.push(entry.path);
      continue;
    }
    const depth = entry.path.split("/").length;
    const previous = byName.get(name);
    if (!previous || depth < previous.depth) {
      if (previous) ignored.push(previous.path);
      byName.set(name, { name, path: entry.path, file: entry.file, depth });
    } else {
      ignored.push(entry.path);
    }
  }
  const picked = [...byName.values()].map(({ name, path, file }) => ({ name, path, file }));
  return { picked, ignored };
}

/** `[{path, file}]` for a FileList or array of File (folder inputs set webkitRelativePath). */
export function entriesFromFileList(list) {
  return Array.from(list, (file) => ({ path: file.webkitRelativePath || file.name, file }));
}

/**
 * `[{path, file}]` for what was dropped: files and folders (walked recursively). Must be called
 * synchronously in the drop handler: the DataTransfer is emptied once the handler returns.
 */
export function entriesFromDrop(dataTransfer) {
  const roots = [];
  for (const item of Array.from(dataTransfer.items ?? [])) {
    if (item.kind !== "file") continue;
    const entry = typeof item.webkitGetAsEntry === "function" ? item.webkitGetAsEntry() : null;
    if (entry) roots.push(entry);
    else {
      const file = item.getAsFile();
      if (file) roots.push(file);
    }
  }
  if (roots.length === 0 && dataTransfer.files?.length) return Promise.resolve(entriesFromFileList(dataTransfer.files));
  return Promise.all(roots.map((root) => (root instanceof File ? [{ path: root.name, file: root }] : walk(root)))).then((lists) => lists.flat());
}

async function walk(entry) {
  const path = entry.fullPath.replace(/^\//, "") || entry.name;
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    return [{ path, file }];
  }
  if (!entry.isDirectory) return [];
  const reader = entry.createReader();
  const children = [];
  // readEntries returns the entries in batches (100 in Chromium) until an empty one.
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) break;
    children.push(...batch);
  }
  const nested = await Promise.all(children.map(walk));
  return nested.flat();
}
