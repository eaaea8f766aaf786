// "Backend" panel: choose auto / WebGPU / CPU, and show what the worker chose and why, the WebGPU
// adapter (vendor, architecture, fallback flag) and the device limits, plus the worker's state
// with a "Restart worker" button when it has crashed.

import { el, formatBytes } from "../lib/format.js";

const CHOICES = [
  ["auto", "Auto (WebGPU if a hardware adapter exists)"],
  ["webgpu", "WebGPU"],
  ["cpu", "CPU (wasm)"],
];

const NAMES = { webgpu: "WebGPU", cpu: "CPU", "cpu-native": "CPU (native)" };

/**
 * @param {HTMLElement} section  the panel's <section>
 * @param {{choice: string, onChoose: (choice: string) => void, onRestart: () => void}} options
 */
export function createBackendPanel(section, { choice, onChoose, onRestart }) {
  const select = el(
    "select",
    { id: "backend-select", name: "backend", "data-testid": "backend-select" },
    CHOICES.map(([value, label]) => el("option", { value }, label)),
  );
  select.value = choice;
  select.addEventListener("change", () => onChoose(select.value));

  const name = el("output", { "data-testid": "backend-name", for: "backend-select", class: "backend-name" }, "starting…");
  const state = el("span", { class: "badge", "data-testid": "worker-state" }, "starting");
  const restart = el(
    "button",
    { type: "button", "data-testid": "restart-worker", hidden: true, onclick: () => onRestart() },
    "Restart worker",
  );
  const reason = el("p", { class: "reason", "data-testid": "backend-reason" }, "Loading the wasm module…");
  const facts = el("dl", { class: "facts", "data-testid": "backend-facts" });

  section.append(
    el("h2", { id: "backend-title" }, "Backend"),
    el(
      "div",
      { class: "row" },
      el("label", { for: "backend-select" }, "Compute backend"),
      select,
    ),
    el("div", { class: "row" }, el("span", { class: "label" }, "In use"), name, state, restart),
    reason,
    facts,
  );

  function fact(term, value, testid, title) {
    facts.append(el("dt", { title }, term), el("dd", { "data-testid": testid }, value));
  }

  /** Show the worker's backend message (null while a worker starts). */
  function showBackend(message) {
    facts.replaceChildren();
    if (!message) {
      name.textContent = "starting…";
      reason.textContent = "Starting the worker and loading the wasm module…";
      return;
    }
    name.textContent = NAMES[message.backend] ?? message.backend;
    name.dataset.backend = message.backend;
    reason.textContent = message.reason ?? "";
    if (message.backend === "cpu" && Number.isInteger(message.cpu_threads)) {
      fact("CPU threads", String(message.cpu_threads), "cpu-threads");
    }
    const a = message.adapter;
    if (a) {
      fact("Adapter vendor", a.vendor || "–", "adapter-vendor");
      fact("Architecture", a.architecture || "–", "adapter-architecture");
      if (a.description) fact("Description", a.description, "adapter-description");
      fact("Fallback (software) adapter", a.is_fallback ? "yes" : "no", "adapter-fallback");
    } else {
      fact("WebGPU adapter", message.requested === "cpu" ? "not probed (CPU chosen)" : "none", "adapter-vendor");
    }
    const al = message.limits?.adapter;
    if (al) {
      fact("Max storage binding", formatBytes(al.maxStorageBufferBindingSize), "limit-storage-binding", "adapter.limits.maxStorageBufferBindingSize");
      fact("Max buffer", formatBytes(al.maxBufferSize), "limit-buffer", "adapter.limits.maxBufferSize");
      fact("Max workgroup storage", formatBytes(al.maxComputeWorkgroupStorageSize), "limit-workgroup-storage", "adapter.limits.maxComputeWorkgroupStorageSize");
    }
    const dl = message.limits?.device;
    if (dl) {
      fact("Device storage binding", formatBytes(dl.max_storage_buffer_binding_size), "limit-device-storage-binding", "limits the wasm WebGPU device was created with: max_storage_buffer_binding_size");
      fact("Device max buffer", formatBytes(dl.max_buffer_size), "limit-device-buffer", "limits the wasm WebGPU device was created with: max_buffer_size");
    }
    const wgpu = message.info?.adapter;
    if (wgpu) {
      fact("Device type (wgpu)", [wgpu.device_type, wgpu.name].filter(Boolean).join(", ") || "–", "wgpu-device-type", "what the wasm side's wgpu reports for the adapter it opened");
    }
    if (message.version) fact("webtune", message.version, "wasm-version");
  }

  /** Show the worker state: starting | ready | busy | crashed. */
  function showState(workerState) {
    state.textContent = workerState;
    state.dataset.state = workerState;
    restart.hidden = workerState !== "crashed";
    if (workerState === "crashed") {
      name.textContent = "stopped";
      delete name.dataset.backend;
      reason.textContent = "The worker stopped after a fatal error. Restart it, or choose another backend.";
    }
  }

  /** Keep the select in step with the choice (e.g. when set from the debug hook). */
  function setChoice(value) {
    select.value = value;
  }

  return { showBackend, showState, setChoice, focus: () => select.focus() };
}
