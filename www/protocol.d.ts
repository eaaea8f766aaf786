// The messages between a page and webtune's compute worker (www/worker.js), defined once: the
// worker, the client (lib/worker-client.js, which the page and FineTuner share) and the page are
// checked against these types by `tsc --noEmit` (tsconfig.json, tsconfig.worker.json; run by
// `cargo xtask test`). Structured-clone messages; field names are stable API. docs/protocol.md
// explains them in prose. Data shapes that FineTuner also returns come from webtune.d.ts.

import type {
  BackendInfo,
  DataProgress,
  DatasetResult,
  DownloadProgress,
  EvaluateResult,
  GenerateResult,
  JobConfig,
  ModelInfo,
  TrainResult,
  WhichModel,
} from "./webtune";

/** A file's bytes as the worker takes them. */
export interface FileBytes {
  name: string;
  bytes: ArrayBuffer;
}

/** A model file: a Blob (a picked File) is best, the module reads weights from it a tensor at a time. */
export interface ModelFile {
  name: string;
  bytes: ArrayBuffer | Blob;
}

/** Where a model comes from, and how its base is kept: `quantize_base` ("q8" / "q4") keeps the
 * linear projections quantized as they are read (QLoRA: LoRA only, far less memory). */
export type ModelSourceMessage = (
  /** Hugging Face layout (config.json, weights, tokenizer.json, …) or one .gguf. */
  | { kind: "files"; files: ModelFile[] }
  /** `repo` is "owner/name" or a URL of the repo; files come from
   * `${endpoint}/${repo}/resolve/${revision}/${file}` and are kept in the Cache API. */
  | { kind: "hub"; repo: string; revision?: string; endpoint?: string; files?: string[] }
) & { quantize_base?: "q8" | "q4" | null };

/** What `generate` continues: text, token ids, or a conversation formatted by the model's chat
 * template (then stopping at its end-of-turn token unless `stop_tokens` are given). */
export type GenerateInput =
  | string
  | { text: string }
  | { ids: number[] }
  | { chat: { role: string; content: string }[]; add_generation_prompt?: boolean };

// ---------------------------------------------------------------------------- page → worker

/** First message, exactly once per worker: the backend choice (one worker per choice), an
 * optional 4-byte SharedArrayBuffer read as Int32Array (element 0: 1 stops the current
 * operation, 2 pauses a fine-tuning job, 0 runs), and the CPU backend's threads. */
export interface InitRequest {
  type: "init";
  backend: "auto" | "webgpu" | "cpu";
  interrupt?: SharedArrayBuffer;
  cpuThreads?: number;
}

/** Train the toy model (`config` goes to wasm `Session.trainToy` as is). */
export interface TrainToyRequest {
  type: "train-toy";
  id: string;
  config: Record<string, unknown>;
}

/** Load a model, replacing the current one only if the new one loads. Replies: `download`
 * messages (hub), then `model`, or `error`. */
export interface LoadModelRequest {
  type: "load-model";
  id: string;
  source: ModelSourceMessage;
}

/** Continue a prompt. Replies: `token` messages, then `done` with a GenerateResult, or `error`. */
export interface GenerateRequest {
  type: "generate";
  id: string;
  input: GenerateInput;
  options?: Record<string, unknown>;
}

/** Logits of every position of one sequence. Reply: `logits`, or `error`. */
export interface LogitsRequest {
  type: "logits";
  id: string;
  ids: number[] | Uint32Array;
  which?: WhichModel;
}

/** Read, validate and split a dataset file for the loaded model. Replies: `dataset-progress`,
 * then `dataset`, or `error`. `validation` replaces the held-out share. */
export interface InspectDatasetRequest {
  type: "inspect-dataset";
  id: string;
  name: string;
  bytes: ArrayBuffer;
  config?: JobConfig;
  validation?: FileBytes;
}

/** Fine-tune the loaded model. Replies: `finetune-event` messages, then `done` with a
 * TrainResult, or `error`. `resume` continues the run saved in OPFS (its config is used). */
export interface FinetuneRequest {
  type: "finetune";
  id: string;
  name: string;
  bytes: ArrayBuffer;
  config?: JobConfig;
  resume?: boolean;
  validation?: FileBytes;
}

/** Score the base (default) or fine-tuned model on a dataset's held-out split, without training.
 * Reply: `done` with an EvaluateResult, or `error`. */
export interface EvaluateRequest {
  type: "evaluate";
  id: string;
  name: string;
  bytes: ArrayBuffer;
  config?: JobConfig;
  which?: WhichModel;
  validation?: FileBytes;
}

/** The job `finetune` would run with these arguments, written as a Python project for Hugging
 * Face transformers + PEFT launched by Accelerate (the CLI's `webtune recipe`; nothing is
 * trained). Reply: `done` with result an ArrayBuffer, a ZIP archive of `webtune-recipe/…`, or
 * `error`. */
export interface RecipeRequest {
  type: "recipe";
  id: string;
  name: string;
  bytes: ArrayBuffer;
  config?: JobConfig;
  validation?: FileBytes;
}

/** The adapter library (worker.js, lib/adapter-library.js). `adapters`, `adapter-rename`,
 * `adapter-delete` and `adapter-files` are answered beside a running operation; `adapter-load`
 * (attach to the loaded model, then keep) and `adapter-use` (attach a kept one) take the
 * worker's turn. Replies: `done` with AdapterMeta[] / AdapterMeta / AdapterSwitch /
 * {meta, files: {name: ArrayBuffer}}, or `error` (adapter.not_found, adapter.exists,
 * adapter.base_mismatch, model.shape_mismatch, adapter.unsupported). */
export type AdapterRequest =
  | { type: "adapters"; id: string }
  /** `files`, or `url`: a folder holding adapter_config.json and adapter_model.safetensors, which
   * the worker downloads (its connect-src must allow that host, as for model downloads). */
  | { type: "adapter-load"; id: string; name: string | null; files?: ModelFile[]; url?: string; origin?: "files" | "url" }
  | { type: "adapter-use"; id: string; name: string | null }
  | { type: "adapter-rename"; id: string; name: string; to: string }
  | { type: "adapter-delete"; id: string; name: string }
  | { type: "adapter-files"; id: string; name: string };

/** The saved checkpoint's description (`done`, result CheckpointMeta or null), or delete it. */
export interface CheckpointRequest {
  type: "checkpoint-info" | "checkpoint-discard";
  id: string;
}

/** An encoder's label for a text (`done`, result {label, labels, probs}). */
export interface ClassifyRequest {
  type: "classify";
  id: string;
  text: string;
  which?: WhichModel;
}

/** Cosine similarity of two texts' mean-pooled embeddings (`done`, result {similarity}). */
export interface SimilarityRequest {
  type: "similarity";
  id: string;
  a: string;
  b: string;
  which?: WhichModel;
}

/** The fine-tuned model's files. Reply: `files`, or `error`. */
export interface ExportRequest {
  type: "export";
  id: string;
}

/** Replay a committed PyTorch/PEFT reference run (its JSON text) on this backend. */
export interface ReplayReferenceRequest {
  type: "replay-reference";
  id: string;
  reference: string;
  method: "lora" | "full";
}

/** No reply of their own: stop the current operation (a run ends with `done`, cancelled), pause
 * or resume a fine-tuning job between two steps (finetune-event paused / resumed), or (a test
 * hook) destroy the worker's GPU devices as a driver reset would. */
export interface ControlRequest {
  type: "cancel" | "pause" | "resume" | "debug-lose-device";
}

/** Every message a page may send. Only one of train-toy, load-model, generate, logits,
 * inspect-dataset, finetune, evaluate, recipe and export runs at a time; another is refused with
 * `train.busy` (train-toy, finetune) or `worker.busy`. */
export type Request =
  | InitRequest
  | TrainToyRequest
  | LoadModelRequest
  | GenerateRequest
  | LogitsRequest
  | InspectDatasetRequest
  | FinetuneRequest
  | EvaluateRequest
  | RecipeRequest
  | AdapterRequest
  | CheckpointRequest
  | ClassifyRequest
  | SimilarityRequest
  | ExportRequest
  | ReplayReferenceRequest
  | ControlRequest;

/** A request as a client hands it over before it is given its `id`. */
export type RequestBody = Request extends infer R ? (R extends { id: string } ? Omit<R, "id"> : never) : never;

// ---------------------------------------------------------------------------- worker → page

/** A coded error ("data.invalid", "device.lost", "worker.busy", …). */
export interface ErrorPayload {
  code: string;
  message: string;
  details?: unknown;
}

/** The session is ready: which backend runs (and why), the adapter probed, its limits. */
export interface BackendMessage extends BackendInfo {
  type: "backend";
}

/** One per thread of the threaded CPU backend, before `backend`: a panicking pool thread
 * reports on its port, and this worker is then unusable. */
export interface ThreadPortMessage {
  type: "thread-port";
  port: MessagePort;
}

/** Progress of one file of a hub load (at most 10 a second, and a final one with done). */
export interface DownloadMessage extends DownloadProgress {
  type: "download";
  id: string;
}

/** The model is loaded. */
export interface ModelMessage {
  type: "model";
  id: string;
  info: ModelInfo;
  source: Record<string, unknown>;
  timing: { download_ms: number; load_ms: number };
}

/** One generated token; `text` is everything generated so far (null without a tokenizer). */
export interface TokenMessage {
  type: "token";
  id: string;
  token: number;
  text: string | null;
}

/** A toy run's step. */
export interface ProgressMessage {
  type: "progress";
  id: string;
  step: number;
  total_steps: number;
  loss: number;
  [key: string]: unknown;
}

export interface LogitsMessage {
  type: "logits";
  id: string;
  shape: number[];
  data: Float32Array;
}

/** Reading a dataset file: bytes and records done so far. */
export interface DatasetProgressMessage extends DataProgress {
  type: "dataset-progress";
  id: string;
}

export interface DatasetMessage {
  type: "dataset";
  id: string;
  result: DatasetResult;
}

/** A fine-tuning job's event: a phase, a step (with its held-out score when it ran one), data
 * progress, a checkpoint written, paused or resumed. */
export interface FinetuneEventMessage {
  type: "finetune-event";
  id: string;
  event: { type: "phase" | "step" | "data_progress" | "checkpoint" | "paused" | "resumed"; [key: string]: unknown };
}

/** An operation ended: `summary` for a toy run, `result` for the others (a GenerateResult, a
 * TrainResult, an EvaluateResult, a checkpoint's description, {label, labels, probs}, …). */
export interface DoneMessage {
  type: "done";
  id: string;
  summary?: Record<string, unknown>;
  result?: GenerateResult | TrainResult | EvaluateResult | Record<string, unknown> | null;
}

/** The fine-tuned model's files (the buffers are transferred). */
export interface FilesMessage {
  type: "files";
  id: string;
  files: Record<string, ArrayBuffer>;
}

/** The worker made a request (a Resource Timing entry): the page's privacy line counts them. */
export interface NetworkMessage {
  type: "network";
  url: string;
  at: number;
}

/** `id` null: outside an operation. `fatal`: this worker is unusable (restart it). */
export interface ErrorMessage {
  type: "error";
  id: string | null;
  error: ErrorPayload;
  fatal: boolean;
}

/** Every message the worker sends. */
export type Reply =
  | BackendMessage
  | ThreadPortMessage
  | DownloadMessage
  | ModelMessage
  | TokenMessage
  | ProgressMessage
  | LogitsMessage
  | DatasetProgressMessage
  | DatasetMessage
  | FinetuneEventMessage
  | DoneMessage
  | FilesMessage
  | NetworkMessage
  | ErrorMessage;

