// Model downloads for the worker: the files of a Hugging Face Hub repo (or any server with the
// Hub's `<repo>/resolve/<revision>/<file>` layout), streamed with progress and kept in the
// browser's Cache API so that loading the same repo again (also after a reload) downloads nothing.
//
// Files: config.json (required); model.safetensors, or else model.safetensors.index.json and the
// shards it lists (required); tokenizer.json, generation_config.json, tokenizer_config.json,
// special_tokens_map.json, chat_template.jinja (optional: a 404 is remembered as "absent", also
// in the cache, so that a cached repo makes no requests at all).
//
// Requests are CORS requests without credentials: the page is cross-origin isolated (COEP
// require-corp), so another origin's files need Access-Control-Allow-Origin. Private or gated
// repos are out of reach (webtune sends no token).
//
// Cache entries are keyed by the file URL and never expire: a branch such as "main" that moves on
// the Hub keeps serving the cached files until the user clears them ("Forget downloads", or
// `window.webtune.clearModelCache()`). Files of a download that then fails to load are dropped
// (worker.js), so a retry fetches them afresh.

export const CACHE_NAME = "webtune-models-v1";
export const DEFAULT_ENDPOINT = "https://huggingface.co";
export const OPTIONAL_FILES = ["tokenizer.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"];
/** Header of the cache entries that stand for "this file is not in the repo". */
const MISSING_HEADER = "x-webtune-missing";
/** Progress messages per file are at most this often (plus a final one). */
const PROGRESS_INTERVAL_MS = 100;
const REPO_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*\/[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/**
 * The folder a PEFT adapter is downloaded from, ending in "/": `source` is a URL (absolute, or
 * relative to `base` when it starts with "./", "../" or "/") or a Hub repo id on `endpoint` at
 * `revision`.
 * @param {unknown} source
 * @param {{endpoint?: string, revision?: string, base?: string}} [options]
 */
export function adapterFolderUrl(source, { endpoint = DEFAULT_ENDPOINT, revision = "main", base } = {}) {
  const text = String(source ?? "").trim();
  const isUrl = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) || /^\.{0,2}\//.test(text);
  const folder = isUrl ? new URL(text, base).href : `${String(endpoint).replace(/\/+$/, "")}/${text}/resolve/${revision}/`;
  return folder.endsWith("/") ? folder : `${folder}/`;
}

export function codedError(code, message, details) {
  const error = new Error(message);
  error.code = code;
  if (details !== undefined) error.details = details;
  return error;
}

function httpUrl(text, what) {
  let url;
  try {
    url = new URL(text);
  } catch {
    throw codedError("config.invalid", `${what} ${JSON.stringify(text)} is not a URL.`, { value: text });
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw codedError("config.invalid", `${what} must be an http(s) URL, got ${JSON.stringify(text)}.`, { value: text });
  }
  return url;
}

/**
 * Where a hub source's files are. `repo` is "owner/name" (with `endpoint`, default the Hub) or a
 * URL of the repo: "https://huggingface.co/owner/name", also ".../tree/<rev>" or
 * ".../resolve/<rev>/<file>" (the revision is then taken from the URL unless given).
 * `source.files` (or a ".../resolve/<rev>/<file>" URL) names exactly the files to fetch, for
 * instance one .gguf; otherwise the Hugging Face layout below is fetched.
 * Returns {repo, revision, endpoint, base, files: string[]|null, fileUrl(file)}; throws `config.invalid`.
 */
export function resolveHubSource(source) {
  const given = String(source?.repo ?? "").trim();
  let revision = source?.revision != null && String(source.revision).trim() !== "" ? String(source.revision).trim() : null;
  let repo;
  let base;
  let endpoint;
  let fileFromUrl = null;
  if (/^https?:\/\//i.test(given)) {
    const url = httpUrl(given, "The model URL");
    const parts = url.pathname.split("/").filter(Boolean);
    const marker = parts.findIndex((p) => p === "resolve" || p === "tree" || p === "blob");
    const repoParts = marker >= 0 ? parts.slice(0, marker) : parts;
    if (marker >= 0 && parts[marker + 1] && revision === null) revision = decodeURIComponent(parts[marker + 1]);
    if (marker >= 0 && parts[marker] !== "tree" && parts.length > marker + 2) {
      fileFromUrl = [parts.slice(marker + 2).map(decodeURIComponent).join("/")];
    }
    if (repoParts.length < 2) {
      throw codedError("config.invalid", `The URL ${given} does not name a repository (expected …/owner/name).`, { value: given });
    }
    endpoint = url.origin;
    base = `${url.origin}/${repoParts.join("/")}`;
    repo = repoParts.slice(-2).join("/");
  } else {
    if (!REPO_ID.test(given)) {
      throw codedError(
        "config.invalid",
        `${given === "" ? "No repository given" : `${JSON.stringify(given)} is not a repository id`}: write owner/name (e.g. openai-community/gpt2) or a URL.`,
        { value: given },
      );
    }
    const endpointText = String(source?.endpoint ?? "").trim() || DEFAULT_ENDPOINT;
    endpoint = httpUrl(endpointText, "The Hub endpoint").href.replace(/\/+$/, "");
    repo = given;
    base = `${endpoint}/${repo}`;
  }
  revision ??= "main";
  const rev = encodeURIComponent(revision);
  // An explicit file list (a GGUF repo holds many quantisations: load the one named), from
  // `source.files` or from a ".../resolve/<rev>/<file>" URL.
  let files = Array.isArray(source?.files) ? source.files.map(String) : fileFromUrl;
  if (files !== null) {
    for (const file of files) {
      if (!/^[A-Za-z0-9_.-][A-Za-z0-9_./-]*$/.test(file) || file.includes("..")) {
        throw codedError("config.invalid", `${JSON.stringify(file)} is not a file name in a repository.`, { value: file });
      }
    }
    if (files.length === 0) files = null;
  }
  return { repo, revision, endpoint, base, files, fileUrl: (file) => `${base}/resolve/${rev}/${file}` };
}

async function openCache() {
  try {
    return typeof caches === "undefined" ? null : await caches.open(CACHE_NAME);
  } catch {
    return null; // e.g. storage disabled: download without caching
  }
}

/**
 * Download the files of `hub` (from resolveHubSource).
 * @param {object} hub
 * @param {{signal?: AbortSignal, onProgress?: (p: object) => void}} options
 *   onProgress({file, url, loaded, total, cached, done, missing?})
 * @returns {Promise<{files: Object<string, Blob>, report: object[], urls: string[], cacheWarning: string|null}>}
 *   Files are Blobs: the browser keeps their bytes (the cache's on disk), and the module reads
 *   weights from them a tensor at a time instead of holding whole files.
 */
export async function downloadHubModel(hub, { signal, onProgress = () => {} } = {}) {
  const cache = await openCache();
  /** @type {Object<string, Blob>} */
  const files = {};
  const report = [];
  const urls = [];
  const ctx = { hub, cache, signal, onProgress, cacheWarning: null };

  const want = async (file, { optional = false, missingOk = false } = {}) => {
    const got = await getFile(ctx, file, { allowMissing: optional || missingOk });
    urls.push(got.url);
    report.push({ file, url: got.url, bytes: got.bytes?.size ?? 0, cached: got.cached, missing: got.bytes === null });
    if (got.bytes !== null) files[file] = got.bytes;
    return got;
  };

  if (hub.files) {
    // Exactly the files asked for, e.g. one .gguf (which carries config and tokenizer).
    for (const file of hub.files) await want(file);
    return { files, report, urls, cacheWarning: ctx.cacheWarning };
  }
  await want("config.json");
  const single = await want("model.safetensors", { missingOk: true });
  if (single.bytes === null) {
    const index = await want("model.safetensors.index.json", { missingOk: true });
    if (index.bytes === null) {
      throw codedError(
        "model.missing_file",
        `${hub.repo} has neither model.safetensors nor model.safetensors.index.json at revision ${hub.revision} ` +
          `(HTTP 404 for ${single.url}). webtune needs safetensors weights.`,
        { repo: hub.repo, revision: hub.revision, url: single.url, status: 404 },
      );
    }
    for (const shard of shardNames(await index.bytes.text(), index.url)) await want(shard);
  }
  for (const file of OPTIONAL_FILES) await want(file, { optional: true });
  return { files, report, urls, cacheWarning: ctx.cacheWarning };
}

function shardNames(text, url) {
  let index;
  try {
    index = JSON.parse(text);
  } catch (e) {
    throw codedError("model.config_invalid", `model.safetensors.index.json is not valid JSON (${e.message}).`, { url });
  }
  const map = index?.weight_map;
  if (!map || typeof map !== "object") {
    throw codedError("model.config_invalid", "model.safetensors.index.json has no weight_map.", { url });
  }
  const names = [...new Set(Object.values(map))].sort();
  for (const name of names) {
    // Shards are files next to the index: refuse anything that would leave the repo.
    if (typeof name !== "string" || !/^[A-Za-z0-9_.-]+\.safetensors$/.test(name)) {
      throw codedError("model.config_invalid", `model.safetensors.index.json lists an unexpected shard name ${JSON.stringify(name)}.`, { url });
    }
  }
  if (names.length === 0) throw codedError("model.config_invalid", "model.safetensors.index.json lists no shards.", { url });
  return names;
}

/** One file, from the cache or the network. Returns {url, bytes: ArrayBuffer | null, cached}. */
async function getFile(ctx, file, { allowMissing }) {
  const { hub, cache, signal, onProgress } = ctx;
  const url = hub.fileUrl(file);
  if (cache) {
    let hit;
    try {
      hit = await cache.match(url);
    } catch {
      hit = undefined;
    }
    if (hit) {
      if (hit.headers.get(MISSING_HEADER) === "1" && allowMissing) {
        onProgress({ file, url, loaded: 0, total: 0, cached: true, done: true, missing: true });
        return { url, bytes: null, cached: true };
      }
      if (!hit.headers.get(MISSING_HEADER)) {
        const bytes = await hit.blob();
        onProgress({ file, url, loaded: bytes.size, total: bytes.size, cached: true, done: true });
        return { url, bytes, cached: true };
      }
    }
  }

  let response;
  try {
    response = await fetch(url, { mode: "cors", credentials: "omit", signal });
  } catch (e) {
    throw fetchFailure(e, file, url, hub);
  }
  if (!response.ok) {
    // Drain nothing: the body of an error page is not needed.
    response.body?.cancel().catch(() => {});
    const status = response.status;
    const details = { file, url, status, repo: hub.repo, revision: hub.revision };
    if (status === 404 && allowMissing) {
      await remember(ctx, url, new Response(null, { status: 200, headers: { [MISSING_HEADER]: "1" } }));
      onProgress({ file, url, loaded: 0, total: 0, cached: false, done: true, missing: true });
      return { url, bytes: null, cached: false };
    }
    if (file === "config.json" && (status === 401 || status === 403 || status === 404)) {
      throw codedError(
        "model.download_failed",
        `Could not download ${url} (HTTP ${status}): there is no repository ${hub.repo} at ${hub.endpoint} ` +
          `(revision ${hub.revision}), or it is private or gated (webtune sends no credentials).`,
        details,
      );
    }
    if (status === 404) {
      throw codedError("model.missing_file", `${hub.repo} has no ${file} at revision ${hub.revision} (HTTP 404 for ${url}).`, details);
    }
    throw codedError("model.download_failed", `Could not download ${url}: HTTP ${status}${response.statusText ? ` ${response.statusText}` : ""}.`, details);
  }

  const lengthHeader = response.headers.get("content-length");
  const total = lengthHeader !== null && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : null;
  const chunks = [];
  let loaded = 0;
  let lastReport = 0;
  onProgress({ file, url, loaded: 0, total, cached: false, done: false });
  try {
    if (response.body) {
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        loaded += value.byteLength;
        const now = performance.now();
        if (now - lastReport >= PROGRESS_INTERVAL_MS) {
          lastReport = now;
          onProgress({ file, url, loaded, total, cached: false, done: false });
        }
      }
    } else {
      const whole = new Uint8Array(await response.arrayBuffer());
      chunks.push(whole);
      loaded = whole.byteLength;
    }
  } catch (e) {
    throw fetchFailure(e, file, url, hub, loaded);
  }
  const bytes = new Blob(chunks);
  chunks.length = 0;
  onProgress({ file, url, loaded, total: total ?? loaded, cached: false, done: true });
  await remember(
    ctx,
    url,
    new Response(bytes, {
      status: 200,
      headers: { "content-type": response.headers.get("content-type") ?? "application/octet-stream", "content-length": String(loaded) },
    }),
  );
  return { url, bytes, cached: false };
}

async function remember(ctx, url, response) {
  if (!ctx.cache) return;
  try {
    await ctx.cache.put(url, response);
  } catch (e) {
    // Full storage, for instance: the model still loads, it is just not kept.
    ctx.cacheWarning ??= `Could not keep ${url} in the browser cache (${e?.message ?? e}); it will be downloaded again next time.`;
  }
}

function fetchFailure(e, file, url, hub, loaded = 0) {
  if (e?.name === "AbortError") {
    return codedError("model.load_cancelled", `Loading ${hub.repo} was cancelled.`, { file, url });
  }
  return codedError(
    "model.download_failed",
    `Could not download ${url}${loaded > 0 ? ` (the connection broke after ${loaded} bytes)` : ""}: ${e?.message ?? e}. ` +
      "The server may be unreachable, it does not allow cross-origin requests (CORS), or it redirected " +
      "the download to a host outside the page's Content-Security-Policy (the worker may reach only the " +
      "Hub's own host and its subdomains).",
    { file, url, status: null, repo: hub.repo, revision: hub.revision },
  );
}

/** Drop cache entries (after a download whose files would not load, so a retry fetches afresh). */
export async function forget(urls) {
  const cache = await openCache();
  if (!cache) return;
  await Promise.all(urls.map((url) => cache.delete(url).catch(() => false)));
}

/**
 * What the model cache holds, one entry per repo (the URL before "/resolve/"), largest first:
 * [{base, repo, revisions: [string], files: [{file, url, bytes}], bytes}]. "Not in the repo"
 * markers are not counted as files. Also usable from the page (the Cache API is per origin).
 */
export async function listCachedModels() {
  const cache = await openCache();
  if (!cache) return [];
  const repos = new Map();
  for (const request of await cache.keys()) {
    const url = request.url;
    const at = url.indexOf("/resolve/");
    const base = at >= 0 ? url.slice(0, at) : url.slice(0, url.lastIndexOf("/"));
    const rest = at >= 0 ? url.slice(at + "/resolve/".length) : url.slice(url.lastIndexOf("/") + 1);
    const slash = rest.indexOf("/");
    const revision = at >= 0 && slash > 0 ? decodeURIComponent(rest.slice(0, slash)) : null;
    const file = at >= 0 && slash > 0 ? rest.slice(slash + 1) : rest;
    let entry = repos.get(base);
    if (!entry) {
      const parts = new URL(base).pathname.split("/").filter(Boolean);
      entry = { base, repo: parts.slice(-2).join("/"), revisions: [], files: [], bytes: 0 };
      repos.set(base, entry);
    }
    if (revision !== null && !entry.revisions.includes(revision)) entry.revisions.push(revision);
    const response = await cache.match(request).catch(() => undefined);
    if (!response || response.headers.get(MISSING_HEADER) === "1") continue;
    // Entries are stored with their length; fall back to reading the body when it is absent.
    const header = response.headers.get("content-length");
    const bytes = header !== null && /^\d+$/.test(header) ? Number(header) : (await response.arrayBuffer()).byteLength;
    entry.files.push({ file: decodeURIComponent(file), url, bytes });
    entry.bytes += bytes;
  }
  return [...repos.values()].filter((r) => r.files.length > 0 || r.revisions.length > 0).sort((a, b) => b.bytes - a.bytes || a.base.localeCompare(b.base));
}

/** Delete every cached file (and "missing" marker) of the repo at `base`; resolves with how many entries went. */
export async function deleteCachedModel(base) {
  const cache = await openCache();
  if (!cache) return 0;
  const prefix = `${String(base).replace(/\/+$/, "")}/`;
  const doomed = (await cache.keys()).filter((r) => r.url.startsWith(prefix));
  const done = await Promise.all(doomed.map((r) => cache.delete(r).catch(() => false)));
  return done.filter(Boolean).length;
}
