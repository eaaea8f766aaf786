// The page's four steps — 1 model, 2 data, 3 fine-tune, 4 compare — as a path: the step list
// at the top says which are done and which is current; a step opens (its panels shown, its hint
// hidden) when the one it needs is done, and the current step is brought into view when it
// changes because something finished.

const ORDER = ["model", "data", "finetune", "compare"];

/**
 * @param {HTMLElement} nav  the step list (`li[data-step]` with a link each)
 * @returns {{update: (done: {model: boolean, data: boolean, trained: boolean}) => void, current: () => string}}
 */
export function createSteps(nav) {
  const section = (key) => document.getElementById(`step-${key}`);
  let current = null;

  return {
    /** What is done: a model loaded, a dataset checked for it, a fine-tuning run finished. */
    update({ model, data, trained }) {
      // A step is open once the step it needs is done: data needs a model; fine-tuning and
      // the comparison (the base model's score comes with the checked data) need the data.
      const open = { model: true, data: model, finetune: model && data, compare: model && data };
      const done = { model, data: model && data, finetune: model && data && trained, compare: false };
      const now = ORDER.find((k) => open[k] && !done[k]) ?? "compare";
      for (const key of ORDER) {
        const state = done[key] ? "done" : key === now ? "current" : open[key] ? "open" : "upcoming";
        const el = section(key);
        el.dataset.state = state;
        /** @type {HTMLElement} */ (el.querySelector(".step-body")).hidden = !open[key];
        const hint = /** @type {HTMLElement | null} */ (el.querySelector(".step-hint"));
        if (hint) hint.hidden = open[key];
        const item = /** @type {HTMLElement} */ (nav.querySelector(`li[data-step="${key}"]`));
        item.dataset.state = state;
        const link = item.querySelector("a");
        if (key === now) link.setAttribute("aria-current", "step");
        else link.removeAttribute("aria-current");
      }
      // Bring the next step into view when it opens because something finished (not on load,
      // and not while the person is already looking at a later step).
      if (current !== null && now !== current && ORDER.indexOf(now) > ORDER.indexOf(current)) {
        const top = section(now).getBoundingClientRect().top;
        if (top > window.innerHeight * 0.6 || top < 0) section(now).scrollIntoView({ block: "start" });
      }
      current = now;
    },
    current: () => current,
  };
}
