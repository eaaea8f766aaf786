// The header's privacy line: how many network requests the page and its worker have made since
// the model was loaded (webtune's promise is zero: data, training, evaluation and export stay in
// the tab), and whether the browser is offline (everything keeps working then). Requests are seen
// through the Resource Timing API, in the page and — reported by the worker — in the worker, so
// the count is the browser's own record, not webtune's opinion of itself. Files fetched from the
// page's own server (a bundled sample, a served model) are said apart and not as a warning: they
// come from where the page itself came from; a request to any other host is a warning.

import { el } from "../lib/format.js";

/** Local URLs (blob:, data:) are not network requests. */
function isNetwork(url) {
  return /^https?:/i.test(url);
}

/** Whether `url` is on the page's own origin. */
function isOwnServer(url) {
  try {
    return new URL(url, location.href).origin === location.origin;
  } catch {
    return false;
  }
}

/** "samples/shakespeare_excerpt.txt": a same-origin URL by its path. */
function ownPath(url) {
  const u = new URL(url, location.href);
  return decodeURIComponent(u.pathname.replace(/^\//, "")) || "/";
}

/** "3 requests" / "1 request". */
function requestsText(n) {
  return `${n} request${n === 1 ? "" : "s"}`;
}

/** The first three of `items`, and "…" for more. */
function firstThree(items) {
  return `${items.slice(0, 3).join(", ")}${items.length > 3 ? ", …" : ""}`;
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
    const own = requests.filter(isOwnServer);
    const other = requests.filter((u) => !isOwnServer(u));
    line.dataset.requests = String(requests.length);
    line.dataset.otherHosts = String(other.length);
    line.dataset.state = other.length > 0 ? "warn" : own.length > 0 ? "own-server" : "private";
    const ownText = own.length ? `${requestsText(own.length)} to this page's own server (${firstThree(own.map(ownPath))})` : "";
    if (other.length > 0) {
      line.textContent = `${requestsText(other.length)} to another host since the model was loaded: ${firstThree(other)}.${ownText ? ` Also ${ownText}.` : ""}${offline}`;
    } else if (own.length > 0) {
      line.textContent = `Private: nothing sent to another host since the model was loaded; ${ownText}, which served this page.${offline}`;
    } else {
      line.textContent = `Private: no network request since the model was loaded.${offline}`;
    }
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
