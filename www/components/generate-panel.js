// "Generate" panel: a prompt (text, or token ids as "ids: 1, 2, 3"), the sampling settings,
// which model answers (base or fine-tuned, once there is one), Generate and Stop, the streamed
// output and the speed. For a model that ships a chat template, a "Chat" switch turns the prompt
// into the next user message of a conversation that the model's template formats (the reply
// stops at the template's end-of-turn token); the formatted prompt is shown under the reply.

import { el, formatInt } from "../lib/format.js";

const BACKEND_NAMES = { webgpu: "WebGPU", cpu: "CPU" };

/**
 * The worker's `input` for a prompt: "ids: 1, 2, 3" → {ids}; a bare list of numbers when the
 * model has no tokenizer → {ids}; anything else → {text}. Throws `config.invalid`.
 */
export function parsePrompt(text, hasTokenizer) {
  const prefixed = /^\s*ids\s*:(.*)$/is.exec(text);
  const bareIds = !hasTokenizer && /^[\s\d,]+$/.test(text) && /\d/.test(text);
  if (!prefixed && !bareIds) {
    if (!hasTokenizer && text.trim() !== "") {
      throw Object.assign(new Error('This model has no tokenizer: write the prompt as token ids, e.g. "ids: 1, 2, 3".'), { code: "config.invalid" });
    }
    return { text };
  }
  const parts = (prefixed ? prefixed[1] : text).split(/[\s,]+/).filter(Boolean);
  const ids = parts.map(Number);
  const bad = parts.find((p, i) => !/^\d+$/.test(p) || !Number.isSafeInteger(ids[i]));
  if (bad !== undefined || ids.length === 0) {
    throw Object.assign(new Error(bad !== undefined ? `"${bad}" is not a token id (ids are non-negative integers).` : "The prompt has no token ids."), {
      code: "config.invalid",
    });
  }
  return { ids };
}

/**
 * @param {HTMLElement} section  the panel's <section>
 * @param {{onGenerate: (input: object, options: object) => void, onStop: () => void, onError: (e: object) => void}} options
 */
export function createGeneratePanel(section, { onGenerate, onStop, onError }) {
  const prompt = el("textarea", { id: "prompt", name: "prompt", rows: 3, "data-testid": "prompt", "aria-describedby": "prompt-help" }, "");
  const number = (id, label, value, attrs = {}, title) => {
    const field = el("input", { id, name: id, type: "number", value, "data-testid": id, title, ...attrs });
    return { field, wrap: el("div", { class: "field" }, el("label", { for: id }, label), field) };
  };
  const maxNew = number("max-new-tokens", "Max new tokens", 32, { min: 1, step: 1, inputmode: "numeric" });
  const temperature = number("temperature", "Temperature", 1, { min: 0, step: "any", inputmode: "decimal" });
  const topK = number("top-k", "Top-k", 50, { min: 0, step: 1, inputmode: "numeric" }, "Keep the k most likely tokens (0 = all)");
  const topP = number("top-p", "Top-p", 1, { min: 0, max: 1, step: "any", inputmode: "decimal" }, "Keep the most likely tokens up to this total probability (1 = all)");
  const penalty = number("repetition-penalty", "Repetition penalty", 1, { min: 0, step: "any", inputmode: "decimal" }, "Above 1 discourages tokens already in the text");
  // Not labelled "seed": the toy panel's "Seed" must stay the only control by that name.
  const rng = number("sampling-rng", "Sampling RNG", 0, { min: 0, step: 1, inputmode: "numeric" }, "Seed of the sampler's random numbers: the same seed gives the same text");
  const greedy = el("input", { id: "greedy", name: "greedy", type: "checkbox", "data-testid": "greedy" });
  const samplingFields = [temperature, topK, topP, rng];
  greedy.addEventListener("change", () => {
    for (const f of samplingFields) f.field.disabled = greedy.checked || section.dataset.mode === "generating";
  });

  // Which model answers: the base model, or the latest fine-tuned one.
  const useBase = el("input", { type: "radio", id: "gen-model-base", name: "gen-model", value: "base", checked: true, "data-testid": "gen-model-base" });
  const useTuned = el("input", { type: "radio", id: "gen-model-tuned", name: "gen-model", value: "tuned", disabled: true, "data-testid": "gen-model-tuned" });
  // Or an adapter of the library, attached beside the base (the Adapters panel).
  const useAdapter = el("input", { type: "radio", id: "gen-model-adapter", name: "gen-model", value: "adapter", disabled: true, "data-testid": "gen-model-adapter" });
  const adapterSelect = el("select", { id: "gen-adapter", "aria-label": "Adapter", disabled: true, "data-testid": "gen-adapter" });
  adapterSelect.addEventListener("change", () => {
    useAdapter.checked = true;
  });
  const modelChoice = el(
    "fieldset",
    { class: "choice", "data-testid": "gen-model" },
    el("legend", {}, "Generate with"),
    el("span", { class: "field checkbox" }, useBase, el("label", { for: "gen-model-base" }, "Base model")),
    el("span", { class: "field checkbox" }, useTuned, el("label", { for: "gen-model-tuned" }, "Fine-tuned model")),
    el("span", { class: "field checkbox" }, useAdapter, el("label", { for: "gen-model-adapter" }, "Adapter"), adapterSelect),
  );
  let adapterNames = [];
  let tunedAvailable = false;

  // Chat mode: offered only when the loaded model has a chat template.
  const chatMode = el("input", { id: "chat-mode", name: "chat-mode", type: "checkbox", "data-testid": "chat-mode" });
  const system = el("input", { id: "chat-system", name: "chat-system", type: "text", "data-testid": "chat-system", placeholder: "optional" });
  const resetChat = el("button", { type: "button", "data-testid": "chat-reset", onclick: () => setConversation([]) }, "New conversation");
  const chatState = el("p", { class: "help", "data-testid": "chat-state" });
  const chatFields = el(
    "div",
    { class: "fields chat-fields", hidden: true, "data-testid": "chat-fields" },
    el("div", { class: "field checkbox" }, chatMode, el("label", { for: "chat-mode" }, "Chat")),
    el("div", { class: "field wide chat-only" }, el("label", { for: "chat-system" }, "System message"), system),
    el("div", { class: "buttons chat-only" }, resetChat),
    chatState,
  );
  /** [{role, content}] of the turns so far (system message excluded). */
  let conversation = [];
  /** The user message of the generation in flight (chat mode), added with the reply. */
  let pendingUser = null;
  let chatSource = null;
  function setConversation(turns) {
    conversation = turns;
    const n = conversation.filter((m) => m.role === "user").length;
    chatState.textContent = chatMode.checked
      ? `Template: ${chatSource ?? "model"} · ${n === 0 ? "new conversation" : `${n} earlier turn${n === 1 ? "" : "s"}`}.`
      : "";
    resetChat.disabled = n === 0 || section.dataset.mode === "generating";
  }
  function syncChat() {
    for (const e of chatFields.querySelectorAll(".chat-only")) e.hidden = !chatMode.checked;
    promptLabel.textContent = chatMode.checked ? "Message" : "Prompt";
    help.textContent = chatMode.checked
      ? "Your next message; the model's chat template formats the conversation."
      : 'Text, or token ids written as "ids: 1, 2, 3" (the only way for a model without a tokenizer).';
    setConversation(conversation);
  }
  chatMode.addEventListener("change", syncChat);

  const generate = el("button", { type: "submit", class: "primary", "data-testid": "generate", disabled: true }, "Generate");
  const stop = el("button", { type: "button", "data-testid": "stop-generate", disabled: true, onclick: () => onStop() }, "Stop");
  const promptLabel = el("label", { for: "prompt" }, "Prompt");
  const help = el("p", { id: "prompt-help", class: "help" }, 'Text, or token ids written as "ids: 1, 2, 3" (the only way for a model without a tokenizer).');
  const form = el(
    "form",
    { class: "generate-form", novalidate: true },
    chatFields,
    el("div", { class: "field wide" }, promptLabel, prompt),
    help,
    el(
      "div",
      { class: "fields" },
      maxNew.wrap,
      el("div", { class: "field checkbox" }, greedy, el("label", { for: "greedy" }, "Greedy")),
      temperature.wrap,
      topK.wrap,
      topP.wrap,
      penalty.wrap,
      rng.wrap,
    ),
    modelChoice,
    el("div", { class: "buttons" }, generate, stop),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    let input;
    if (chatMode.checked && !chatFields.hidden) {
      pendingUser = { role: "user", content: prompt.value };
      const head = system.value.trim() ? [{ role: "system", content: system.value }] : [];
      input = { chat: [...head, ...conversation, pendingUser] };
    } else {
      pendingUser = null;
      try {
        input = parsePrompt(prompt.value, hasTokenizer);
      } catch (e) {
        onError({ code: e.code ?? "config.invalid", message: e.message });
        return;
      }
    }
    onGenerate(input, options());
  });

  // Streamed text is announced once, when complete (aria-busy while it grows).
  const output = el("output", { class: "generated", for: "prompt", "aria-live": "polite", "data-testid": "gen-output" });
  const ids = el("p", { class: "generated-ids", "data-testid": "gen-ids" });
  const stats = el("p", { class: "result", "data-testid": "gen-stats" }, "Load a model to generate.");
  const chatPrompt = el("pre", { class: "chat-prompt", "data-testid": "chat-prompt" });
  const chatPromptBox = el("details", { class: "chat-prompt-box", hidden: true }, el("summary", {}, "Formatted prompt (the model's chat template)"), chatPrompt);

  section.append(el("h2", { id: "generate-title" }, "Generate"), form, el("div", { class: "output-box" }, output), ids, stats, chatPromptBox);

  let hasTokenizer = true;
  let tokens = [];
  let text = null;
  let frame = 0;

  function options() {
    const out = { greedy: greedy.checked };
    if (useTuned.checked && tunedAvailable) out.model = "tuned";
    if (useAdapter.checked && adapterSelect.value) out.model = `adapter:${adapterSelect.value}`;
    const put = (key, field, integer) => {
      const v = field.valueAsNumber;
      if (Number.isFinite(v)) out[key] = integer ? Math.trunc(v) : v;
    };
    put("max_new_tokens", maxNew.field, true);
    put("repetition_penalty", penalty.field, false);
    if (!greedy.checked) {
      put("temperature", temperature.field, false);
      put("top_k", topK.field, true);
      put("top_p", topP.field, false);
      put("seed", rng.field, true);
    }
    return out;
  }

  function render() {
    frame = 0;
    // Without a tokenizer there is no text: the ids are the output.
    output.textContent = text ?? tokens.join(" ");
    ids.textContent = tokens.length ? `Generated ids: ${tokens.join(", ")}` : "";
  }

  return {
    /** canGenerate: a model is loaded and the worker is idle; generating: Stop enabled. */
    setMode({ canGenerate, generating }) {
      generate.disabled = !canGenerate;
      stop.disabled = !generating;
      section.dataset.mode = generating ? "generating" : canGenerate ? "idle" : "unavailable";
      for (const f of [prompt, maxNew.field, penalty.field, greedy, useBase, chatMode, system]) f.disabled = generating;
      resetChat.disabled = generating || conversation.length === 0;
      useTuned.disabled = generating || !tunedAvailable;
      useAdapter.disabled = adapterSelect.disabled = generating || adapterNames.length === 0;
      for (const f of samplingFields) f.field.disabled = generating || greedy.checked;
    },
    /** Whether a fine-tuned model exists (it becomes the default choice when it appears). */
    setTuned(available) {
      const appeared = available && !tunedAvailable;
      tunedAvailable = Boolean(available);
      useTuned.disabled = !tunedAvailable || section.dataset.mode === "generating";
      if (appeared) useTuned.checked = true;
      if (!tunedAvailable) useBase.checked = true;
    },
    /** Names of the library's adapters that fit the loaded model; `chosen` becomes the choice. */
    setAdapters(names, chosen = undefined) {
      const previous = adapterSelect.value;
      adapterNames = names ?? [];
      adapterSelect.replaceChildren(...adapterNames.map((n) => el("option", { value: n }, n)));
      const pick = chosen === undefined ? previous : chosen;
      if (pick !== null && adapterNames.includes(pick)) adapterSelect.value = pick;
      if (chosen !== undefined) {
        if (chosen === null && useAdapter.checked) useBase.checked = true;
        if (chosen !== null && adapterNames.includes(chosen)) useAdapter.checked = true;
      }
      if (adapterNames.length === 0 && useAdapter.checked) useBase.checked = true;
      useAdapter.disabled = adapterSelect.disabled = section.dataset.mode === "generating" || adapterNames.length === 0;
    },
    /** The loaded model changed (null: none). */
    setModel(info) {
      hasTokenizer = info ? info.has_tokenizer : true;
      // A new model starts a new conversation; chat is offered only with a template.
      const canChat = Boolean(info?.has_chat_template && info?.has_tokenizer);
      chatSource = info?.chat_template_source ?? null;
      chatFields.hidden = !canChat;
      chatMode.checked = canChat;
      chatPromptBox.hidden = true;
      setConversation([]);
      syncChat();
      prompt.placeholder = info && !info.has_tokenizer ? "ids: 1, 2, 3" : "Once upon a time";
      delete stats.dataset.outcome;
      stats.textContent = info ? `Ready: ${info.architecture}${info.has_tokenizer ? "" : " (no tokenizer: give token ids)"}.` : "Load a model to generate.";
    },
    begin() {
      tokens = [];
      text = null;
      render();
      output.setAttribute("aria-busy", "true");
      delete stats.dataset.outcome;
      stats.textContent = "Generating…";
    },
    /** One token message; redrawn at most once per frame. */
    token(message) {
      tokens.push(message.token);
      if (message.text !== null && message.text !== undefined) text = message.text;
      if (frame === 0) frame = requestAnimationFrame(render);
    },
    finish(result, backend) {
      tokens = result.generated_ids;
      if (result.text !== null && result.text !== undefined) text = result.text;
      render();
      if (typeof result.chat_prompt === "string") {
        chatPrompt.textContent = result.chat_prompt;
        chatPromptBox.hidden = false;
        if (pendingUser !== null && text !== null) setConversation([...conversation, pendingUser, { role: "assistant", content: text }]);
      } else {
        chatPromptBox.hidden = true;
      }
      pendingUser = null;
      output.setAttribute("aria-busy", "false");
      const n = result.generated_ids.length;
      stats.dataset.outcome = result.cancelled ? "cancelled" : "done";
      stats.textContent =
        `${result.cancelled ? "Stopped after" : "Generated"} ${formatInt(n)} token${n === 1 ? "" : "s"} in ${result.seconds.toFixed(2)} s` +
        ` · ${result.tokens_per_s.toFixed(1)} tokens/s` +
        (backend ? ` on ${BACKEND_NAMES[backend] ?? backend}` : "") +
        ` · prompt ${formatInt(result.prompt_ids.length)} tokens` +
        (String(result.model).startsWith("adapter:") ? ` · adapter “${String(result.model).slice(8)}”` : result.model === "tuned" ? " · fine-tuned model" : tunedAvailable || adapterNames.length ? " · base model" : "");
    },
    fail(error) {
      render();
      output.setAttribute("aria-busy", "false");
      stats.dataset.outcome = "error";
      stats.textContent = `Failed: ${error.code} — ${error.message}`;
    },
  };
}
