// Alert region: visible, dismissible error messages (role="alert") showing the error code and
// message, with optional action buttons (e.g. "Restart worker"). The page stays usable.

import { el } from "../lib/format.js";

/**
 * @param {HTMLElement} container  where alerts are listed (the page's alert region)
 * @returns {{show: Function, clear: Function, dismissWhere: Function}}
 */
export function createAlerts(container) {
  container.classList.add("alerts");

  /**
   * Show an alert. Returns a function that dismisses it.
   * @param {{code?: string, message: string, details?: any}} error
   * @param {{level?: "error"|"warning", actions?: {label: string, testid?: string, run: Function}[]}} [options]
   */
  function show(error, { level = "error", actions = [] } = {}) {
    const code = error?.code ?? "error";
    const message = error?.message ?? String(error);
    const item = el("div", {
      class: `alert alert-${level}`,
      role: "alert",
      "data-testid": "error",
      "data-code": code,
    });
    const dismiss = () => item.remove();
    const body = el(
      "div",
      { class: "alert-body" },
      el("code", { class: "alert-code", "data-testid": "error-code" }, code),
      " ",
      el("span", { class: "alert-message", "data-testid": "error-message" }, message),
    );
    if (error?.details !== undefined && error?.details !== null) {
      let text;
      try {
        text = JSON.stringify(error.details, null, 2);
      } catch {
        text = String(error.details);
      }
      body.append(el("details", { class: "alert-details" }, el("summary", {}, "Details"), el("pre", {}, text)));
    }
    const buttons = el("div", { class: "alert-actions" });
    for (const action of actions) {
      buttons.append(
        el(
          "button",
          {
            type: "button",
            "data-testid": action.testid,
            onclick: () => {
              dismiss();
              action.run();
            },
          },
          action.label,
        ),
      );
    }
    buttons.append(
      el("button", { type: "button", class: "alert-dismiss", "data-testid": "error-dismiss", "aria-label": `Dismiss ${code}`, onclick: dismiss }, "Dismiss"),
    );
    item.append(body, buttons);
    container.append(item);
    return dismiss;
  }

  function clear() {
    container.replaceChildren();
  }

  /** Remove alerts whose code matches `predicate(code)`. */
  function dismissWhere(predicate) {
    for (const item of /** @type {HTMLElement[]} */ ([...container.children])) {
      if (predicate(item.dataset.code)) item.remove();
    }
  }

  return { show, clear, dismissWhere };
}
