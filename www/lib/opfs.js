// Small helpers over the origin private file system (OPFS), shared by the worker's checkpoints
// and the adapter library.

/** Write `data` (a string, ArrayBuffer or typed array) as the file `name` in `dir`, replacing it. */
export async function writeFile(dir, name, data) {
  const handle = await dir.getFileHandle(name, { create: true });
  const writable = await handle.createWritable();
  await writable.write(data);
  await writable.close();
}

/** The JSON file `name` in `dir`, parsed; throws when it is missing or not JSON. */
export async function readJson(dir, name) {
  const file = await (await dir.getFileHandle(name)).getFile();
  return JSON.parse(await file.text());
}
