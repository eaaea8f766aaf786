// What the page's scripts add to the platform's types (the page; the workers have
// worker-globals.d.ts): coded errors and the page's test hooks.
// Checked with `tsc --noEmit` (tsconfig.json, run by `cargo xtask test`).

/** Errors carry a webtune code ("data.invalid", "device.lost", …) and details. */
interface Error {
  code?: string;
  details?: unknown;
}

interface Window {
  /** The page's debug and test hooks (www/app.js). */
  webtune?: any;
}
