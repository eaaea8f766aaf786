// The adapter library: every LoRA adapter the page trains or loads, kept in the origin private
// file system (OPFS) so it outlives the tab. One folder per adapter under `webtune-adapters/`,
// named by an id that never changes (renaming edits the description only), holding PEFT's two
// files and `meta.json`:
//
//   {id, name, created_at, source: "trained" | "files" | "url",
//    task: "causal_lm" | "classification" | "embedding",
//    labels: [class names] | null (a classifier's),
//    pooling: "cls" | "mean" | "pooler" | null (a classifier's or a sentence embedder's),
//    base: {name, architecture, parameters, fingerprint},
//    lora: {r, lora_alpha, use_rslora, target_modules, lora_dropout, base_model_name_or_path, task_type},
//    dataset: {name, size, sha256} | null, config: the job's configuration | null,
//    metrics: {before, after} | null, steps: number | null, cancelled: boolean}
//
// A classifier's adapter also keeps webtune_classifier.json (its labels and pooling), which
// PEFT's two files have no place for.
//
// meta.json is written after the weights, so a listed adapter never misses a file; a folder
// without it (a write cut short) is not listed and is removed by the next save.

import { readJson, writeFile } from "./opfs.js";

const ROOT = "webtune-adapters";
export const ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors"];
/** Kept beside ADAPTER_FILES when an adapter has it: a classifier's labels and pooling. */
export const ADAPTER_NOTE = "webtune_classifier.json";

function coded(code, message, details) {
  return Object.assign(new Error(message), { code, details });
}

async function rootDir(create) {
  if (!navigator.storage?.getDirectory) {
    if (!create) return null;
    throw coded("adapter.unsupported", "This browser has no origin private file system (it needs a secure context): adapters cannot be kept.");
  }
  const root = await navigator.storage.getDirectory();
  try {
    return await root.getDirectoryHandle(ROOT, { create });
  } catch (e) {
    if (!create) return null;
    throw coded("adapter.unsupported", `The adapter library cannot be opened: ${e?.message ?? e}`);
  }
}

/** [{meta, dir}] of every complete adapter, oldest first; incomplete folders under `stale`. */
async function scan() {
  const root = await rootDir(false);
  const entries = [];
  const stale = [];
  if (!root) return { root, entries, stale };
  // entries() is in every browser with OPFS but not yet in TypeScript's DOM types.
  for await (const [id, handle] of /** @type {any} */ (root).entries()) {
    if (handle.kind !== "directory") continue;
    try {
      entries.push({ meta: await readJson(handle, "meta.json"), dir: handle });
    } catch {
      stale.push(id);
    }
  }
  entries.sort((a, b) => String(a.meta.created_at).localeCompare(String(b.meta.created_at)));
  return { root, entries, stale };
}

/** Every kept adapter's description, oldest first. */
export async function listAdapters() {
  return (await scan()).entries.map((e) => e.meta);
}

/** The entry of the adapter `name` among `entries`; `adapter.not_found` naming those kept. */
function findIn(entries, name) {
  const entry = entries.find((e) => e.meta.name === name);
  if (!entry) {
    const names = entries.map((e) => e.meta.name);
    throw coded("adapter.not_found", `There is no adapter named ${JSON.stringify(name)} in this browser${names.length ? ` (kept: ${names.join(", ")})` : ""}.`, { name });
  }
  return entry;
}

async function find(name) {
  return findIn((await scan()).entries, name);
}

/** `adapter.exists` when `name` is taken among `entries`. */
function refuseTaken(entries, name) {
  if (entries.some((e) => e.meta.name === name)) {
    throw coded("adapter.exists", `An adapter named ${JSON.stringify(name)} is already kept; choose another name or delete that one.`, { name });
  }
}

/** Throws unless `name` is a valid name no kept adapter has (checked before work a save would waste). */
export async function checkNameFree(name) {
  checkName(name);
  refuseTaken((await scan()).entries, name);
}

/** `name`, or `name (2)`, `name (3)` … when taken. */
export async function freeName(name) {
  const taken = new Set((await listAdapters()).map((m) => m.name));
  if (!taken.has(name)) return name;
  for (let i = 2; ; i++) if (!taken.has(`${name} (${i})`)) return `${name} (${i})`;
}

function checkName(name) {
  if (typeof name !== "string" || name.trim() === "" || name.length > 200) {
    throw coded("config.invalid", "An adapter's name is a non-empty text of at most 200 characters.", { name });
  }
}

/**
 * Keep an adapter: `files` maps ADAPTER_FILES to bytes (Uint8Array / ArrayBuffer), `meta` its
 * description without id/created_at. A name already kept is `adapter.exists`. Resolves to the
 * stored description.
 */
export async function saveAdapter(meta, files) {
  checkName(meta.name);
  for (const f of ADAPTER_FILES) {
    if (!files[f]) throw coded("model.missing_file", `The adapter has no ${f}.`, { file: f });
  }
  const { root: existing, entries, stale } = await scan();
  refuseTaken(entries, meta.name);
  for (const id of stale) await existing?.removeEntry(id, { recursive: true }).catch(() => {});
  const root = await rootDir(true);
  const id = crypto.randomUUID();
  const dir = await root.getDirectoryHandle(id, { create: true });
  const stored = { ...meta, id, created_at: new Date().toISOString() };
  try {
    for (const f of ADAPTER_FILES) await writeFile(dir, f, files[f]);
    if (files[ADAPTER_NOTE]) await writeFile(dir, ADAPTER_NOTE, files[ADAPTER_NOTE]);
    await writeFile(dir, "meta.json", JSON.stringify(stored));
  } catch (e) {
    await root.removeEntry(id, { recursive: true }).catch(() => {});
    const quota = e?.name === "QuotaExceededError";
    throw coded(quota ? "adapter.quota" : "adapter.write_failed", `The adapter could not be kept: ${quota ? "the browser's storage for this site is full" : e?.message ?? e}.`, { name: meta.name });
  }
  return stored;
}

/** A kept adapter's description and files ({name: Uint8Array}). */
export async function readAdapter(name) {
  const { meta, dir } = await find(name);
  const files = {};
  for (const f of [...ADAPTER_FILES, ADAPTER_NOTE]) {
    let handle;
    try {
      handle = await dir.getFileHandle(f);
    } catch (e) {
      if (f === ADAPTER_NOTE && e?.name === "NotFoundError") continue;
      throw e;
    }
    files[f] = new Uint8Array(await (await handle.getFile()).arrayBuffer());
  }
  return { meta, files };
}

export async function renameAdapter(name, to) {
  checkName(to);
  const { entries } = await scan();
  const { meta, dir } = findIn(entries, name);
  if (to === name) return meta;
  refuseTaken(entries, to);
  const renamed = { ...meta, name: to };
  await writeFile(dir, "meta.json", JSON.stringify(renamed));
  return renamed;
}

export async function deleteAdapter(name) {
  const { meta } = await find(name);
  const root = await rootDir(false);
  await root.removeEntry(meta.id, { recursive: true });
  return meta;
}

/** What an adapter_config.json says of the adapter's shape, for the library's description. */
export function loraOf(configBytes) {
  let c;
  try {
    c = JSON.parse(new TextDecoder().decode(configBytes));
  } catch (e) {
    throw coded("model.config_invalid", `adapter_config.json is not valid JSON: ${e?.message ?? e}`, { file: "adapter_config.json" });
  }
  const targets = Array.isArray(c.target_modules) ? c.target_modules : c.target_modules != null ? [String(c.target_modules)] : [];
  // task_type: PEFT's CAUSAL_LM, SEQ_CLS or FEATURE_EXTRACTION (a sentence embedder's).
  return {
    r: c.r ?? null,
    lora_alpha: c.lora_alpha ?? null,
    use_rslora: Boolean(c.use_rslora),
    target_modules: targets,
    lora_dropout: c.lora_dropout ?? null,
    base_model_name_or_path: c.base_model_name_or_path ?? null,
    task_type: c.task_type ?? null,
  };
}
