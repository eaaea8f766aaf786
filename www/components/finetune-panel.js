// "Fine-tune" panel: preset (quick demo, balanced, thorough), method (LoRA or full), training steps, learning rate, LoRA rank and alpha,
// batch size; Start, Pause/Resume and Stop; the current phase, a progress bar with step, loss, learning rate,
// tokens/s and ETA; and a live chart of the training loss with validation-loss points.

import { PRESETS as JOB_PRESETS } from "../webtune.js";
import { el, formatBytes, formatDuration, formatInt, formatLoss, formatLr, formatMs } from "../lib/format.js";
import { createLossChart } from "./loss-chart.js";

// Sentence embeddings take their presets from the API's table (webtune.js PRESETS), so the page
// and embedders train the same runs and the numbers live in one place.
const EMBEDDING = { quick: JOB_PRESETS["quick-demo"].embedding, balanced: JOB_PRESETS.balanced.embedding, thorough: JOB_PRESETS.thorough.embedding };
// Per task, chosen by a sweep on the bundled samples (docs/defaults.md). LoRA on SmolLM2:
// 2e-4 moves held-out perplexity by 4% in 20 steps, 2e-3 by 26% (Shakespeare) and 29% (Q&A),
// and keeps gaining at 60 steps (39%, 38%). A new classification head on MiniLM: 5e-3 (+42
// accuracy points in 60 steps, three passes); 1e-2 collapses to one class. Full fine-tuning of
// an embedder: sentence-transformers' default rate.
const DEFAULT_LR = {
  causal: { lora: 2e-3, full: 5e-5 },
  classification: { lora: 5e-3, full: 1e-4 },
  embedding: { lora: EMBEDDING.balanced.train.lr, full: 2e-5 },
};
// What the presets gave on the bundled samples (LoRA, default rate; docs/defaults.md), shown
// under the preset choice so the result can be judged against it.
const EXPECTED = {
  causal:
    "Measured with SmolLM2-135M on the bundled samples: the quick demo lowers held-out perplexity by 26% (Shakespeare) and 29% (Q&A), balanced by 39% and 38%.",
  classification: "Measured with MiniLM on the sentiment sample: the quick demo (60 steps) adds 42 points of held-out accuracy; more passes do not add more on 200 reviews.",
  embedding:
    "Sentence pairs teach the encoder's embeddings: each held-out text searches all the held-out partners, and the results compare how often its own partner comes first (recall@1) before and after. Measured natively with MiniLM on the Q&A sample: balanced (one pass) raised recall@1 from 0.561 to 0.593 and lowered the held-out loss by 17%; the quick demo moved recall@1 by +2.4 points, within the noise of 123 held-out pairs.",
};
const DEFAULT_BATCH = { causal: 4, classification: 8, embedding: EMBEDDING.balanced.batch_size };
// Presets: how long to train (passes over the training batches, capped) and the LoRA size. The
// learning rate stays the task's default: it is what most often ruins a run (MiniLM collapses to
// one class at 1e-2). "balanced" is what the page starts with. A classifier's new head needs
// about three passes (MiniLM on the 200-review sample, 40 held out: 30 steps +17.5 points, no
// verdict; 45 steps +37.5; 60 +42.5; 100 +35), which take under a minute in the page, so the
// quick demo makes them too. An embedder's steps, batch, rank and warmup are EMBEDDING's.
const PRESETS = {
  quick: { label: "Quick demo (a few minutes)", epochs: { causal: 0.5, classification: 3 }, cap: { causal: 20, classification: 60, embedding: 60 }, rank: 8 },
  balanced: { label: "Balanced (default)", epochs: { causal: 1, classification: 3 }, cap: { causal: 60, classification: 300, embedding: 300 }, rank: 8 },
  thorough: { label: "Thorough (longer, larger adapters)", epochs: { causal: 3, classification: 5 }, cap: { causal: 300, classification: 500, embedding: 500 }, rank: 16 },
};

/** The training steps preset `name` gives `task` on `batches` training batches. */
function presetSteps(name, task, batches) {
  const job = task === "embedding" ? EMBEDDING[name].train : null;
  if (job?.steps) return job.steps;
  const epochs = job?.epochs ?? PRESETS[name].epochs[task];
  return Math.max(1, Math.min(PRESETS[name].cap[task], Math.ceil(batches * epochs)));
}

/** Preset `name`'s batch size and LoRA rank for `task`. */
function presetShape(name, task) {
  const job = task === "embedding" ? EMBEDDING[name] : null;
  return { batch: job?.batch_size ?? DEFAULT_BATCH[task], rank: job?.train?.lora_r ?? PRESETS[name].rank };
}
const PHASES = {
  data: "Reading the dataset",
  samples: "Evaluating and writing sample answers",
  training: "Training",
  export: "Exporting the fine-tuned model",
  memory: "Checking memory",
  evaluation: "Evaluating",
};

/**
 * @param {HTMLElement} section  the panel's <section>
 * @param {{onStart: (train: object) => void, onStop: () => void, onPause?: () => void, onResume?: () => void,
 *          onContinue?: () => void, onDiscard?: () => void, onRecipe?: (train: object) => void}} options
 */
export function createFinetunePanel(
  section,
  { onStart, onStop, onPause = () => {}, onResume = () => {}, onContinue = () => {}, onDiscard = () => {}, onRecipe = () => {} },
) {
  const preset = el(
    "select",
    { id: "ft-preset", "data-testid": "ft-preset" },
    Object.entries(PRESETS).map(([value, p]) => el("option", { value }, p.label)),
    el("option", { value: "custom" }, "Custom (your settings below)"),
  );
  preset.value = "balanced";
  const number = (id, label, value, attrs = {}) => {
    const field = el("input", { id, name: id, type: "number", value, "data-testid": id, ...attrs });
    // A value the user typed is kept (the preset becomes "custom"); defaults follow the preset,
    // the dataset and the method.
    field.addEventListener("input", () => {
      field.dataset.touched = "true";
      preset.value = "custom";
    });
    return { field, wrap: el("div", { class: "field" }, el("label", { for: id }, label), field) };
  };
  const method = el(
    "select",
    { id: "ft-method", "data-testid": "ft-method" },
    el("option", { value: "lora" }, "LoRA (small adapters; default)"),
    el("option", { value: "full" }, "Full (every weight)"),
  );
  const steps = number("ft-steps", "Training steps", 30, { min: 1, step: 1, inputmode: "numeric" });
  // The loaded model ("causal_lm" or "encoder") and what it learns from the checked data
  // ("causal", "classification" or "embedding": an encoder's follows the data).
  let kind = "causal_lm";
  let task = "causal";
  const lr = number("ft-lr", "Fine-tune learning rate", DEFAULT_LR[task].lora, { min: 0, step: "any", inputmode: "decimal" });
  const rank = number("ft-lora-r", "LoRA rank", 8, { min: 1, step: 1, inputmode: "numeric" });
  const alpha = number("ft-lora-alpha", "LoRA alpha", 16, { min: 0, step: "any", inputmode: "decimal" });
  const batch = number("ft-batch-size", "Batch size", 4, { min: 1, step: 1, inputmode: "numeric" });
  // The precision of the merged model's download; training and the page's model stay f32.
  const exportDtype = el(
    "select",
    { id: "ft-export-dtype", "data-testid": "ft-export-dtype" },
    el("option", { value: "f32" }, "f32 (as trained)"),
    el("option", { value: "f16" }, "f16 (half the size)"),
    el("option", { value: "bf16" }, "bf16 (half the size)"),
  );
  // QLoRA: the frozen base's linear weights kept block-quantized while LoRA trains (less memory
  // for the base, slower steps, a little precision lost); the export is f32 either way.
  const baseQuant = el(
    "select",
    { id: "ft-base-quant", "data-testid": "ft-base-quant" },
    el("option", { value: "f32" }, "f32 (as loaded)"),
    el("option", { value: "q8" }, "8-bit (QLoRA)"),
    el("option", { value: "q4" }, "4-bit (QLoRA)"),
  );
  const baseQuantWrap = el(
    "div",
    {
      class: "field",
      title:
        "QLoRA trains LoRA over a block-quantized copy of the frozen linear weights, as fast as LoRA. " +
        "Chosen here, the copy is made beside the loaded f32 model, so it needs somewhat more memory than LoRA; " +
        "to need less, choose the precision in the Model panel before loading. " +
        "The memory estimate shows the difference before the run.",
    },
    el("label", { for: "ft-base-quant" }, "Frozen base"),
    baseQuant,
  );
  // Continue training a kept adapter (the Adapters panel's library) instead of a new one.
  const initAdapter = el("select", { id: "ft-init-adapter", "data-testid": "ft-init-adapter" }, el("option", { value: "" }, "A new adapter"));
  const initAdapterWrap = el("div", { class: "field", hidden: true }, el("label", { for: "ft-init-adapter" }, "Start from"), initAdapter);
  initAdapter.addEventListener("change", () => {
    // The adapter's rank and alpha are the run's.
    rank.field.disabled = alpha.field.disabled = initAdapter.value !== "";
  });
  // burn's balanced gradient checkpointing: same results, fewer activations kept.
  const checkpointing = el("input", { id: "ft-grad-checkpointing", name: "ft-grad-checkpointing", type: "checkbox", "data-testid": "ft-grad-checkpointing" });
  method.addEventListener("change", () => {
    const lora = method.value === "lora";
    rank.wrap.hidden = !lora;
    alpha.wrap.hidden = !lora;
    baseQuantWrap.hidden = !lora;
    initAdapterWrap.hidden = !lora || initAdapter.options.length < 2;
    if (lr.field.dataset.touched !== "true") lr.field.value = String(DEFAULT_LR[task][method.value]);
  });
  // Training batches of the checked dataset at the batch size it was checked with (the default
  // steps follow them), or null.
  let trainBatches = null;
  let checkedBatch = null;
  /** Training batches at the batch size in the field now (a preset may have changed it since the check). */
  function batchesNow() {
    const b = batch.field.valueAsNumber;
    return Number.isFinite(checkedBatch) && b > 0 ? Math.ceil((trainBatches * checkedBatch) / b) : trainBatches;
  }
  /** Put the preset's values into the fields the user has not typed into. */
  function applyPreset() {
    if (!PRESETS[preset.value]) return;
    const shape = presetShape(preset.value, task);
    if (batch.field.dataset.touched !== "true") batch.field.value = String(shape.batch);
    if (steps.field.dataset.touched !== "true" && Number.isFinite(trainBatches)) steps.field.value = String(presetSteps(preset.value, task, batchesNow()));
    if (rank.field.dataset.touched !== "true") rank.field.value = String(shape.rank);
    if (alpha.field.dataset.touched !== "true") alpha.field.value = String(2 * shape.rank);
  }
  /** The data decided what the model learns: defaults follow the task. */
  function setTask(next) {
    task = next;
    expected.textContent = EXPECTED[task];
    if (lr.field.dataset.touched !== "true") lr.field.value = String(DEFAULT_LR[task][method.value]);
    if (batch.field.dataset.touched !== "true") batch.field.value = String(DEFAULT_BATCH[task]);
    applyPreset();
  }
  preset.addEventListener("change", () => {
    if (preset.value === "custom") return;
    // Choosing a preset replaces the typed values: that is what the choice means.
    for (const f of [steps.field, rank.field, alpha.field, lr.field, batch.field]) delete f.dataset.touched;
    lr.field.value = String(DEFAULT_LR[task][method.value]);
    applyPreset();
  });

  const start = el("button", { type: "submit", class: "primary", "data-testid": "ft-start", disabled: true }, "Start fine-tuning");
  const stop = el("button", { type: "button", "data-testid": "ft-stop", disabled: true, onclick: () => onStop() }, "Stop");
  const recipe = el(
    "button",
    {
      type: "button",
      "data-testid": "ft-recipe",
      disabled: true,
      title: "This job as a Python project (transformers + PEFT + Accelerate) that runs it on GPUs or a cluster: same data, split and settings.",
      onclick: () => onRecipe(config()),
    },
    "Download a training recipe",
  );
  // One button: "Pause" while training, "Resume" once paused (or while a pause is pending).
  let pauseState = null; // null | "pausing" | "paused"
  const pause = el(
    "button",
    { type: "button", "data-testid": "ft-pause", disabled: true, onclick: () => (pauseState === null ? onPause() : onResume()) },
    "Pause",
  );
  const form = el(
    "form",
    { class: "toy-form", novalidate: true, "aria-describedby": "ft-help" },
    el(
      "div",
      { class: "fields" },
      el("div", { class: "field" }, el("label", { for: "ft-preset" }, "Preset"), preset),
      el("div", { class: "field" }, el("label", { for: "ft-method" }, "Method"), method),
      steps.wrap,
      lr.wrap,
      initAdapterWrap,
      rank.wrap,
      alpha.wrap,
      batch.wrap,
      baseQuantWrap,
      el("div", { class: "field" }, el("label", { for: "ft-export-dtype" }, "Download precision"), exportDtype),
      el(
        "div",
        { class: "field checkbox", title: "Recompute cheap activations in the backward pass instead of keeping them: less memory for long sequences, same results." },
        checkpointing,
        el("label", { for: "ft-grad-checkpointing" }, "Gradient checkpointing (less memory)"),
      ),
    ),
    el("div", { class: "buttons" }, start, pause, stop, recipe),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onStart(config());
  });

  // An interrupted run saved in this browser (a checkpoint): continue it once its dataset is chosen.
  const offerText = el("span", { "data-testid": "ft-checkpoint-text" });
  const continueRun = el("button", { type: "button", class: "primary", "data-testid": "ft-continue", disabled: true, onclick: () => onContinue() }, "Continue");
  const discard = el("button", { type: "button", "data-testid": "ft-discard-checkpoint", onclick: () => onDiscard() }, "Discard it");
  const offer = el("div", { class: "help checkpoint-offer", "data-testid": "ft-checkpoint", hidden: true }, offerText, " ", continueRun, " ", discard);
  const phase = el("p", { class: "phase", role: "status", "aria-live": "polite", "data-testid": "ft-phase" }, "Choose a model and a dataset, then start.");
  const bar = el("progress", { max: 1, value: 0, "data-testid": "ft-progress", "aria-label": "Fine-tuning progress" });
  const stat = (label, testid) => {
    const value = el("span", { class: "stat-value", "data-testid": testid }, "–");
    return { value, wrap: el("div", { class: "stat" }, el("span", { class: "stat-label" }, label), value) };
  };
  const step = stat("Step", "ft-step");
  const epoch = stat("Epoch", "ft-epoch");
  const loss = stat("Train loss", "ft-loss");
  const evalLoss = stat("Validation loss", "ft-eval-loss");
  const rate = stat("LR", "ft-lr-value");
  const speed = stat("Speed", "ft-tokens-per-s");
  const eta = stat("ETA", "ft-eta");
  const memory = stat("Memory", "ft-memory");
  memory.wrap.hidden = true;
  const chartBox = el("div", { class: "chart", role: "img", "aria-label": "Training and validation loss by step", "data-testid": "ft-chart" });
  const result = el("p", { class: "result", "data-testid": "ft-result" }, "No fine-tuning yet.");
  const estimate = el("p", { class: "help", "data-testid": "ft-memory-estimate", hidden: true });

  const expected = el("p", { class: "help", "data-testid": "ft-expected" }, EXPECTED[task]);
  section.append(
    el("h2", { id: "finetune-title" }, "Fine-tune"),
    el(
      "p",
      { id: "ft-help", class: "help" },
      "LoRA trains small low-rank adapters next to the frozen weights (fast, little memory); full fine-tuning changes every weight. " +
        "Presets choose how long to train: a quick demo (half a pass over the training examples, at most 20 steps; for a classifier three passes, at most 60), " +
        "balanced (one pass, at most 60; a classifier three passes, at most 300) or thorough (three passes and larger adapters, at most 300; a classifier five passes, at most 500). " +
        `Sentence pairs (an encoder learning embeddings) train in batches of ${EMBEDDING.balanced.batch_size} or more, the other pairs of a batch being each text's wrong answers: ` +
        `a quick demo of ${EMBEDDING.quick.train.steps} steps, balanced one pass, thorough three passes with larger adapters (at least 2 pairs per batch).`,
    ),
    expected,
    form,
    offer,
    estimate,
    phase,
    el("div", { class: "progress-row" }, bar),
    el("div", { class: "stats" }, step.wrap, epoch.wrap, loss.wrap, evalLoss.wrap, rate.wrap, speed.wrap, eta.wrap, memory.wrap),
    chartBox,
    result,
  );

  const chart = createLossChart(chartBox, { validation: true, lr: true });
  let latest = null;
  let frame = 0;

  function config() {
    const out = { method: method.value };
    const put = (key, field, integer) => {
      const v = field.valueAsNumber;
      if (Number.isFinite(v)) out[key] = integer ? Math.trunc(v) : v;
    };
    put("steps", steps.field, true);
    put("lr", lr.field, false);
    // A new head starts from random weights: warm up over the first tenth of the run. An
    // embedder warms up as its preset says (a tenth of the run with your own settings).
    const presetWarmup = task === "embedding" ? EMBEDDING[preset.value]?.train.warmup : undefined;
    if (presetWarmup !== undefined) out.warmup = presetWarmup;
    else if (kind === "encoder" && Number.isFinite(out.steps)) out.warmup = Math.floor(out.steps / 10);
    if (checkpointing.checked) out.gradient_checkpointing = true;
    if (method.value === "lora") {
      put("lora_r", rank.field, true);
      put("lora_alpha", alpha.field, false);
      if (baseQuant.value !== "f32") out.quantize_base = baseQuant.value;
    }
    const b = batch.field.valueAsNumber;
    return {
      ...(method.value === "lora" && initAdapter.value ? { init_adapter: initAdapter.value } : {}),
      train: out,
      ...(Number.isFinite(b) ? { batch_size: Math.trunc(b) } : {}),
      ...(exportDtype.value !== "f32" ? { export_dtype: exportDtype.value } : {}),
    };
  }

  function render() {
    frame = 0;
    const p = latest;
    if (!p) return;
    bar.max = p.total_steps;
    bar.value = p.step;
    step.value.textContent = `${formatInt(p.step)} / ${formatInt(p.total_steps)}`;
    epoch.value.textContent = Number.isFinite(p.epoch) ? p.epoch.toFixed(2) : "–";
    loss.value.textContent = formatLoss(p.loss);
    rate.value.textContent = formatLr(p.lr);
    // Classification steps count examples, embedding steps pairs, causal ones tokens.
    const perExample = Number.isFinite(p.examples_per_s) && !Number.isFinite(p.tokens_per_s);
    speed.value.textContent = perExample ? `${p.examples_per_s.toFixed(1)} ${task === "embedding" ? "pairs" : "ex"}/s` : formatInt(p.tokens_per_s);
    eta.value.textContent = formatDuration(p.eta_s);
    memory.wrap.hidden = p.memory_bytes == null;
    if (p.memory_bytes != null) memory.value.textContent = formatBytes(p.memory_bytes);
  }

  return {
    /** canStart: model + dataset + idle worker; running / cancelling: a job is in progress. */
    setMode({ canStart, running, cancelling, pausing = false, paused = false }) {
      start.disabled = !canStart;
      recipe.disabled = !canStart;
      continueRun.disabled = !canStart;
      discard.disabled = running;
      stop.disabled = !running || cancelling;
      pauseState = !running || cancelling ? null : paused ? "paused" : pausing ? "pausing" : null;
      pause.disabled = !running || cancelling;
      pause.textContent = pauseState === null ? "Pause" : "Resume";
      pause.dataset.state = pauseState ?? "running";
      for (const f of [preset, method, steps.field, lr.field, rank.field, alpha.field, batch.field, initAdapter]) f.disabled = running;
      if (initAdapter.value !== "") rank.field.disabled = alpha.field.disabled = true;
      section.dataset.mode = running ? (cancelling ? "cancelling" : "running") : canStart ? "idle" : "unavailable";
    },
    /** The kept adapters a run may continue (those of the loaded causal LM); `chosen` is selected. */
    setAdapters(names, chosen = undefined) {
      const keep = chosen === undefined ? initAdapter.value : chosen ?? "";
      initAdapter.replaceChildren(el("option", { value: "" }, "A new adapter"), ...(kind === "encoder" ? [] : names).map((n) => el("option", { value: n }, `Adapter “${n}”`)));
      initAdapter.value = Array.from(initAdapter.options).some((o) => o.value === keep) ? keep : "";
      initAdapterWrap.hidden = method.value !== "lora" || initAdapter.options.length < 2;
      initAdapter.dispatchEvent(new Event("change"));
    },
    /** The loaded model changed: defaults follow its kind (causal LM or encoder; an encoder classifies until its data say otherwise). */
    setModel(info) {
      kind = info?.kind === "encoder" ? "encoder" : "causal_lm";
      task = kind === "encoder" ? "classification" : "causal";
      // A base loaded quantized (Model panel) trains only with LoRA, in its own precision.
      const loaded = info?.compact?.quant ?? null;
      baseQuant.disabled = loaded !== null;
      if (loaded !== null) baseQuant.value = loaded;
      else if (baseQuant.dataset.locked === "true") baseQuant.value = "f32";
      baseQuant.dataset.locked = String(loaded !== null);
      method.querySelector("option[value=full]").disabled = loaded !== null;
      if (loaded !== null && method.value === "full") {
        method.value = "lora";
        method.dispatchEvent(new Event("change"));
      }
      setTask(task);
    },
    /** Choose a preset ("quick", "balanced", "thorough"), as the select does. */
    setPreset(name) {
      if (!PRESETS[name]) return false;
      preset.value = name;
      preset.dispatchEvent(new Event("change"));
      return true;
    },
    /**
     * A dataset was checked (with the job configuration `checked`): the task and the default
     * steps follow it (the preset's passes over its training batches).
     */
    dataset(inspected, checked = null) {
      const m = inspected?.memory;
      estimate.hidden = !m;
      if (m) {
        estimate.textContent =
          `Estimated memory for training: ${formatBytes(m.total)} (weights ${formatBytes(m.weights)}, gradients ${formatBytes(m.gradients)}, ` +
          `optimizer ${formatBytes(m.optimizer)}, activations ${formatBytes(m.activations)} for ${m.batch_size} × ${m.seq_len} tokens)` +
          (inspected.memory_problem ? `. It will not fit: ${inspected.memory_problem}` : ".");
        estimate.dataset.fits = inspected.memory_problem ? "false" : "true";
      }
      if (Number.isFinite(inspected?.train_batches)) {
        trainBatches = inspected.train_batches;
        checkedBatch = Number.isFinite(checked?.batch_size) ? checked.batch_size : null;
      }
      if (inspected?.task && inspected.task !== task) setTask(inspected.task);
      else applyPreset();
    },
    /** What the checked data make the model learn ("causal", "classification" or "embedding"). */
    get task() {
      return task;
    },
    /** The job configuration's training part, from the controls. */
    config,
    begin(cfg) {
      latest = null;
      bar.value = 0;
      bar.max = cfg?.train?.steps > 0 ? cfg.train.steps : 1;
      for (const s of [step, epoch, loss, evalLoss, rate, speed, eta, memory]) s.value.textContent = "–";
      chart.reset(bar.max);
      delete result.dataset.outcome;
      result.textContent = "Running…";
      phase.textContent = "Starting…";
    },
    event(e) {
      if (e.type === "data_progress") {
        if (e.bytes > 0 && Number.isFinite(e.bytes_done)) phase.textContent = `${PHASES.data}: ${e.file}, ${formatInt(e.records_done)} records (${Math.floor((100 * e.bytes_done) / e.bytes)}% of the file)`;
        return;
      }
      if (e.type === "phase") {
        phase.dataset.phase = e.phase;
        phase.textContent = `${PHASES[e.phase] ?? e.phase}: ${e.message}`;
        return;
      }
      if (e.type !== "step") return;
      if (!latest) chart.reset(e.total_steps);
      latest = e;
      chart.push(e.step, e.loss, e.total_steps, e.lr);
      if (e.eval) {
        chart.pushEval(e.step, e.eval.loss);
        evalLoss.value.textContent = formatLoss(e.eval.loss);
      }
      if (frame === 0) frame = requestAnimationFrame(render);
    },
    /** The interrupted run saved in this browser ({step, total_steps, dataset: {name, size}}), or null. */
    checkpoint(meta) {
      offer.hidden = !meta;
      if (!meta) return;
      const of = meta.total_steps ? ` of ${formatInt(meta.total_steps)}` : "";
      offerText.textContent =
        `An interrupted run (step ${formatInt(meta.step)}${of}) was saved in this browser. ` +
        `To continue it, choose its dataset file again (${meta.dataset.name}, ${formatBytes(meta.dataset.size)}; checked by size and SHA-256).`;
      continueRun.textContent = `Continue the interrupted run from step ${formatInt(meta.step)}`;
    },
    /** A pause was asked for; it takes effect after the current step. */
    pausing() {
      phase.textContent = "Pausing after the current step…";
    },
    /** The job waits between two steps (all its state kept) until resumed or stopped. */
    paused(stepNumber, total) {
      phase.dataset.phase = "paused";
      phase.textContent = `Paused at step ${formatInt(stepNumber)}${total ? ` of ${formatInt(total)}` : ""}. Resume continues exactly where it stopped; Stop evaluates and exports what was trained.`;
    },
    resumed() {
      phase.dataset.phase = "training";
      phase.textContent = `${PHASES.training}: resumed.`;
    },
    stopping() {
      phase.textContent = "Stopping after the current step (the model is still evaluated and exported)…";
    },
    finish(r) {
      render();
      chart.flush();
      const s = r.summary;
      for (const ev of s.eval ?? []) chart.pushEval(ev.step, ev.loss);
      const last = (s.eval ?? []).at(-1);
      if (last) evalLoss.value.textContent = formatLoss(last.loss);
      chart.flush();
      phase.textContent = s.cancelled ? `Stopped after ${formatInt(s.steps)} steps; evaluated and exported.` : "Done.";
      result.dataset.outcome = s.cancelled ? "cancelled" : "done";
      const first = s.losses?.[0];
      const final = s.losses?.at(-1);
      result.textContent =
        `${s.cancelled ? "Stopped" : "Done"}: ${formatInt(s.steps)} steps of ${s.method === "full" ? "full fine-tuning" : "LoRA"} on ${s.backend === "webgpu" ? "WebGPU" : "CPU"}` +
        ` · train loss ${formatLoss(first)} → ${formatLoss(final)}` +
        ` · ${formatInt(s.trainable_params)} of ${formatInt(s.total_params)} parameters trained` +
        ` · ${formatMs(s.median_step_ms)}/step (median; first ${formatMs(s.first_step_ms)}) · ` +
        // Tasks that count examples report examples_per_s (their tokens_per_s counts nothing).
        (Number.isFinite(s.examples_per_s) ? `${s.examples_per_s.toFixed(1)} ${r.task === "embedding" ? "pairs" : "examples"}/s` : `${formatInt(s.tokens_per_s)} tokens/s`);
    },
    fail(error) {
      render();
      chart.flush();
      phase.textContent = "Failed.";
      result.dataset.outcome = "error";
      result.textContent = `Failed: ${error.code} — ${error.message}`;
    },
    /** What the chart shows (for tests). */
    chartData: () => chart.data(),
  };
}
