// The header's privacy line: how many network requests the page and its worker have made since
// the model was loaded (webtune's promise is zero: data, training, evaluation and export stay in
// the tab), and whether the browser is offline (everything keeps working then). Requests are seen
// through the Resource Timing API, in the page and — reported by the worker — in the worker, so
// the count is the browser's own record, not webtune's opinion of itself.

import { el } from "../lib/format.js";

/** Local URLs (blob:, data:) are not network requests. */
function isNetwork(url) {
  return /^https?:/i.test(url);
}

/**
 * @param {HTMLElement} container  where the indicator lives (the page header)
 * @returns {{modelLoaded: () => void, record: (url: string, at: number) => void, count: () => number}}
 */
export function createPrivacyIndicator(container) {
  const line = el("p", { class: "privacy", role: "status", "aria-live": "polite", "data-testid": "privacy", "data-requests": "", "data-online": String(navigator.onLine) });
  container.append(line);
  let watching = false;
  /** Wall-clock ms (timeOrigin + now) when the model was loaded; earlier requests are the load's. */
  let since = Infinity;
  let requests = [];

  function render() {
    line.dataset.online = String(navigator.onLine);
    const offline = navigator.onLine ? "" : " You are offline: loaded models, training and evaluation keep working.";
    if (!watching) {
      line.dataset.requests = "";
      line.textContent = `Private by design: once a model is loaded, nothing is sent or fetched over the network.${offline}`;
      return;
    }
    line.dataset.requests = String(requests.length);
    line.dataset.state = requests.length === 0 ? "private" : "warn";
    line.textContent =
      requests.length === 0
        ? `Private: no network request since the model was loaded.${offline}`
        : `${requests.length} network request${requests.length === 1 ? "" : "s"} since the model was loaded: ${requests.slice(0, 3).join(", ")}${requests.length > 3 ? ", …" : ""}.${offline}`;
  }

  /** A request to `url` that started at wall-clock time `at` (ms; page and worker clocks differ). */
  function record(url, at) {
    if (!watching || !isNetwork(url) || !(at >= since)) return;
    requests.push(url);
    render();
  }

  if (typeof PerformanceObserver === "function") {
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) record(entry.name, performance.timeOrigin + entry.startTime);
    }).observe({ type: "resource", buffered: false });
  }
  addEventListener("online", render);
  addEventListener("offline", render);
  render();

  return {
    /** A model is in memory: from now on every request counts. */
    modelLoaded() {
      watching = true;
      since = performance.timeOrigin + performance.now();
      requests = [];
      render();
    },
    record,
    count: () => requests.length,
  };
}
