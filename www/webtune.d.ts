// Types of webtune's JavaScript API (webtune.js). Field names of results are the worker's
// (snake_case), documented at the top of worker.js.

export type Backend = "auto" | "webgpu" | "cpu";
/** What a job trains: a causal LM; an encoder's classifier (text/label data) or its sentence
 * embeddings (pairs: anchor/positive, sentence1/sentence2, question/answer, prompt/completion). */
export type Task = "causal" | "classification" | "embedding";
/** The base model, the latest fine-tuned one, or an adapter of the library attached to the base. */
export type WhichModel = "base" | "tuned" | `adapter:${string}`;

/** Every error webtune throws or emits. */
export declare class WebtuneError extends Error {
  constructor(code: string, message: string, details?: Record<string, unknown>);
  readonly name: "WebtuneError";
  /**
   * Stable code, e.g. "model.not_loaded", "model.not_tuned", "data.invalid", "data.missing",
   * "config.invalid", "model.download_failed", "model.missing_file", "model.load_cancelled",
   * "weights.truncated", "train.busy", "worker.busy", "train.non_finite_loss",
   * "device.unavailable", "evaluate.unsupported", "export.no_adapter", "worker.disposed",
   * "wasm.panic", "wasm.trap", "internal".
   */
  code: string;
  /** For "data.invalid": {file, line, row?, field?, reason}; for downloads: {url, status, ...}. */
  details: Record<string, any> | undefined;
  /** Set on "error" events: the worker is unusable (create a new FineTuner). */
  fatal?: boolean;
  static from(error: unknown, fallbackCode?: string): WebtuneError;
  toJSON(): { name: string; code: string; message: string; details: unknown };
}

// ---------------------------------------------------------------------------------------------
// Configuration (worker.js "inspect-dataset" / "finetune"; unknown keys are config.invalid).

export interface TrainConfig {
  method?: "lora" | "full";
  lora_r?: number;
  lora_alpha?: number;
  /** Dropout on the LoRA branch's input while training (PEFT's lora_dropout), in [0, 1). */
  lora_dropout?: number;
  /** Apply the model's own dropout while training (GPT-2's *_pdrop, Llama's attention_dropout). Default false. */
  model_dropout?: boolean;
  lora_targets?: string[];
  freeze_embeddings?: boolean;
  freeze_layers?: number;
  lr?: number;
  schedule?: "constant" | "linear" | "cosine";
  warmup?: number;
  /** Optimiser steps; or `epochs` (not both). */
  steps?: number;
  epochs?: number;
  grad_accum?: number;
  max_grad_norm?: number;
  weight_decay?: number;
  seed?: number;
  shuffle?: boolean;
  /** Validation loss every N steps (0: up to four points between before and after, as many as cost about a tenth of the training time). */
  eval_every?: number;
  /** Recompute memory-bound activations in the backward pass (same results, less memory). */
  gradient_checkpointing?: boolean;
  /** QLoRA (LoRA only): keep the frozen base's linear weights block-quantized while training,
   * 8 or 4 bits plus a scale per `quantize_block_size` (32) values. The export is f32. */
  quantize_base?: "q8" | "q4" | null;
  quantize_block_size?: number;
  [key: string]: unknown;
}

export interface JobConfig {
  data?: {
    policy?: "skip" | "stop";
    format?: "jsonl" | "json" | "csv" | "tsv" | "text";
    /** At most this many examples are kept for training and validation (default 100000); a
     * larger file is checked in full and a seeded uniform sample kept (report.sampled). */
    max_examples?: number;
    schema?: unknown;
    causal?: { seq_len?: number; separator?: string; add_eos?: boolean; train_on_prompt?: boolean; [key: string]: unknown };
    /** How a .txt file becomes examples: "auto" (default: continuous text such as a play or
     * prose is one document in chunks of `chunk_chars`, ~one row of tokens by default; lines
     * that stand alone are one example each), "lines" or "document". */
    text_mode?: { mode: "auto" | "lines" | "document"; chunk_chars?: number };
    [key: string]: unknown;
  };
  /** Share of the training file held out (no validation file); null or absent: a tenth, but at
   * least 40 examples of a small file (up to a quarter). */
  validation_fraction?: number | null;
  /** At most this many held-out examples are scored; null or absent: as many as ~15 s of
   * evaluation on two CPU cores allow for the model (at least 16). Held-out examples of the
   * training file beyond it go back to training. */
  validation_max?: number | null;
  batch_size?: number;
  /** Held-out prompts continued before and after (causal models). */
  samples?: number;
  sample_tokens?: number;
  train?: TrainConfig;
  /** Classification head (encoder models); unset fields are chosen by the job. */
  head?: { pooling?: "cls" | "mean" | "pooler" | string; dropout?: number };
  /** Sentence embeddings (an encoder on pairs): how a text's token vectors become one
   * (default "mean"), and the scale of the cosines in the contrastive loss (default 20,
   * sentence-transformers' MultipleNegativesRankingLoss). `batch_size` must be at least 2:
   * the other pairs of a batch are each anchor's negatives. */
  embedding?: { pooling?: "mean" | "cls"; scale?: number };
  /**
   * Causal LMs: save a checkpoint of training to the origin's private file system (OPFS) every
   * N steps (default 25; 0: only when paused or stopped early); see protocol.d.ts FinetuneRequest.
   */
  checkpoint_every?: number;
  /** Precision of the merged model's weights in the export: "f32" (default, as trained), or
   * "f16"/"bf16" (half the size; config.json's torch_dtype says which). Adapters stay f32. */
  export_dtype?: "f32" | "f16" | "bf16";
  /** The adapter library's name for the adapter a LoRA job trains (default: the dataset file's
   * name, numbered when taken). Not part of the job itself. */
  adapter_name?: string;
  /** A kept adapter (its name in the adapter library) whose training this job continues: LoRA
   * starts from its factors, with its rank, alpha and modules; the optimiser starts fresh. It
   * must belong to the loaded model (`adapter.base_mismatch`). Causal LMs only. */
  init_adapter?: string;
  [key: string]: unknown;
}

/** The base an adapter belongs to. */
export interface AdapterBase {
  /** The Hub repository, the GGUF file's name, or the architecture for picked files. */
  name: string;
  architecture: string;
  parameters: number;
  /** ModelInfo.fingerprint of the base it was trained on or loaded for. */
  fingerprint: string | null;
}

/** An adapter kept in the browser's adapter library (OPFS), as `adapters()` lists it. */
export interface AdapterMeta {
  id: string;
  name: string;
  created_at: string;
  source: "trained" | "files" | "url";
  /** A causal LM's adapter, a classifier's (LoRA on the encoder with its head saved whole), or
   * a sentence embedder's (LoRA on the encoder, PEFT's FEATURE_EXTRACTION). */
  task?: "causal_lm" | "classification" | "embedding";
  /** A classifier's class names, in the head's row order; null for a causal LM's. */
  labels?: string[] | null;
  /** How a classifier's head (or an embedder) pools the encoder's output; null for a causal LM's. */
  pooling?: "cls" | "mean" | "pooler" | null;
  base: AdapterBase;
  lora: {
    r: number | null;
    lora_alpha: number | null;
    use_rslora: boolean;
    target_modules: string[];
    lora_dropout: number | null;
    base_model_name_or_path: string | null;
    /** PEFT's task_type: "CAUSAL_LM", "SEQ_CLS", "FEATURE_EXTRACTION" (a sentence embedder's). */
    task_type?: string | null;
  };
  dataset: { name: string; size: number; sha256: string | null } | null;
  /** The job configuration that trained it (trained adapters). */
  config: JobConfig | null;
  /** The job's held-out scores before and after training (trained adapters): a classifier's
   * are ClassificationEval (accuracy, macro-F1, loss), an embedder's RetrievalEval (recall@1 as
   * accuracy, MRR, loss). */
  metrics: { before: CausalEval | ClassificationEval | RetrievalEval | null; after: CausalEval | ClassificationEval | RetrievalEval | null } | null;
  steps: number | null;
  cancelled: boolean;
  /** The kept adapter its job continued (`init_adapter`), or null. */
  continued_from?: string | null;
  /** It was made for the loaded model (fingerprints agree). */
  fits?: boolean;
  /** It is attached to the loaded model: choosing it costs nothing. */
  attached?: boolean;
}

/** What switching to an adapter (or back to the base) cost. */
export interface AdapterSwitch {
  name: string | null;
  model: WhichModel;
  /** The whole switch as the worker measured it, reading the library included. */
  switch_ms: number;
  /** Attaching its factors to the base (0 when it was attached already). */
  attach_ms: number;
  attached_before: boolean;
}

export type PresetName = "quick-demo" | "balanced" | "thorough" | "standard";
export declare const PRESETS: Readonly<Record<PresetName, Record<Task, JobConfig>>>;

export interface CreateOptions {
  backend?: Backend;
  /** Default: worker.js next to webtune.js (must be same-origin with the page). */
  workerUrl?: string | URL;
  /** Silence while busy before a "stalled" event (default 60000). */
  watchdogMs?: number;
  /**
   * Threads of the CPU backend (default navigator.hardwareConcurrency). More than one uses the
   * threaded module and needs a cross-origin isolated page; 1 forces the single-threaded one.
   */
  cpuThreads?: number;
}

// ---------------------------------------------------------------------------------------------
// Models.

export interface NamedBytes {
  name: string;
  bytes: ArrayBuffer | ArrayBufferView;
}

export type ModelSource =
  /** "owner/name" (Hub repo id) or a URL (relative ones start with "./", "../" or "/"). */
  | string
  | URL
  | File
  | FileList
  | Array<File | NamedBytes | { name: string; bytes: Blob }>
  | { hub: string; endpoint?: string; revision?: string; files?: string[] }
  | { url: string; revision?: string; files?: string[] }
  | { served: string; index?: string | URL };

export interface LoadModelOptions {
  /** Hub endpoint for repo ids (default https://huggingface.co). */
  endpoint?: string;
  revision?: string;
  /** Fetch exactly these files of the repo (e.g. one .gguf). */
  files?: string[];
  /** models/index.json for {served} sources. */
  index?: string | URL;
  /** Keep the linear projections quantized as they are read ("q8" or "q4"; default f32): QLoRA
   * over a base that takes about a quarter of the memory. Such a base trains only with LoRA. */
  quantize_base?: "q8" | "q4" | "f32";
}

export interface ModelInfo {
  architecture: string;
  parameters: number;
  layers: number;
  hidden_size: number;
  heads: number;
  vocab_size: number;
  max_positions: number;
  /** Weights each token is multiplied by (linear layers and LM head): 2 FLOPs each per token. */
  matmul_weights: number;
  /** Heads × head dim: attention costs 4 · layers · context · attention_width FLOPs per token. */
  attention_width: number;
  dtype: string[];
  /** Bytes of the weight files. */
  stored_bytes: number;
  /** What loading held beside the model: files read whole, or the largest tensor of files read
   * tensor by tensor (Blobs, files on disk). */
  load_bytes: number;
  /** The linear projections kept quantized since loading (`quantize_base`). */
  compact?: { quant: "q8" | "q4"; values: number; bytes: number };
  has_tokenizer: boolean;
  /** 16 hex digits identifying the loaded files (config.json and the weights; see
   * docs/formats.md): what adapters record as their base. */
  fingerprint?: string | null;
  /** The model ships a chat template: `generate({chat: [...]})` formats conversations with it. */
  has_chat_template: boolean;
  /** Where the template came from: "chat_template.jinja", "tokenizer_config.json", "gguf", ... */
  chat_template_source?: string;
  /** Why a template the model ships cannot be used (chat_template.invalid). */
  chat_template_error?: string;
  [key: string]: unknown;
}

export interface ChatMessage {
  role: "system" | "user" | "assistant" | string;
  content: string;
}

export interface DownloadProgress {
  file: string;
  url: string;
  loaded: number;
  total: number | null;
  cached: boolean;
  done: boolean;
  missing?: boolean;
}

export interface LoadedModel {
  info: ModelInfo;
  source:
    | { kind: "files"; files: string[] }
    | {
        kind: "hub";
        repo: string;
        revision: string;
        endpoint: string;
        base: string;
        files: Array<{ file: string; url: string; bytes: number; cached: boolean; missing: boolean }>;
        cached: boolean;
        cache_warning: string | null;
      };
  timing: { download_ms: number; load_ms: number };
}

export interface ServedModel {
  id: string;
  name: string;
  task: string;
  license?: string;
  source?: string;
  /** Absolute URL of the Hub-layout repo. */
  repo: string;
  files: Array<{ name: string; bytes: number; [key: string]: unknown }>;
  [key: string]: unknown;
}

export interface CachedModel {
  /** The repo's URL (everything before "/resolve/"). */
  base: string;
  /** "owner/name" (the last two path segments of base). */
  repo: string;
  revisions: string[];
  files: Array<{ file: string; url: string; bytes: number }>;
  /** Total bytes of the files. */
  bytes: number;
}

// ---------------------------------------------------------------------------------------------
// Datasets.

export type DatasetInput = File | Blob | string | URL | { name: string; bytes: ArrayBuffer | ArrayBufferView | string } | { name: string; text: string };

export interface DataIssue {
  reason: string;
  file: string;
  line: number;
  row?: number;
  field?: string;
  message: string;
}

export interface DataReport {
  file: string;
  bytes: number;
  format: string;
  schema: { schema: { kind: string; [key: string]: unknown }; detected: boolean; fields: unknown; explanation: string };
  policy: "skip" | "stop";
  /** How a text file was read, whether that was detected, and why. */
  text_mode?: { mode: { mode: "lines" } | { mode: "document"; chunk_chars: number }; detected: boolean; reason: string };
  records: number;
  /** Good examples in the file. */
  examples: number;
  /** Present when the file has more than `max_examples` good examples: how many (a seeded
   * uniform sample, in file order) are kept for training and validation. */
  sampled?: number;
  skipped: number;
  skipped_by_reason: Record<string, number>;
  issues: DataIssue[];
  issues_not_listed: number;
  warnings: string[];
  blank_lines: number;
  duplicates: number;
  labels?: unknown;
  tokens?: {
    seq_len: number;
    min: number;
    median: number;
    p95: number;
    max: number;
    mean: number;
    total: number;
    truncated: number;
    histogram: Array<{ from: number; to: number; count: number }>;
  };
  chat_template?: unknown;
  [key: string]: unknown;
}

/** One token of a preview: `counts` when it is predicted with loss (a language model's). */
export interface PreviewToken {
  id: number;
  text: string;
  counts: boolean;
}

export interface DatasetResult {
  /** The job this dataset makes on the loaded model (an encoder's depends on the data). */
  task: Task;
  report: DataReport;
  /** The separate validation file's report, when `validation` was given. */
  validation_report?: DataReport | null;
  /** Training examples left out because the validation file has them too. */
  overlap_removed: number;
  train_examples: number;
  validation_examples: number;
  held_out: HeldOut;
  train_batches: number;
  eval_batches: number;
  total_steps: number;
  /** The job's memory estimate, and why it cannot fit (null when it can). */
  memory: Record<string, any>;
  memory_problem: string | null;
  /** A classifier's labels, in the head's row order. */
  labels?: string[];
  /** Sentence pairs: tokens per text at most (each side of a pair). */
  seq_len?: number;
  /**
   * The first training examples as the model sees them: a classifier's with its `label`, a
   * pair's anchor in `tokens` and its positive in `positive`.
   */
  preview: Array<{ tokens: PreviewToken[]; label?: string; positive?: PreviewToken[] }>;
}

// ---------------------------------------------------------------------------------------------
// Evaluation and training results.

export interface CausalEval {
  loss: number;
  perplexity: number;
  /** Tokens that counted in the loss. */
  tokens: number;
  /** Wall-clock seconds the evaluation took. */
  seconds: number;
  /** Each held-out row's summed loss and counted tokens: what the intervals resample. */
  row_losses?: number[];
  row_tokens?: number[];
}

/** A 95% interval. */
export interface Interval {
  low: number;
  high: number;
}

/** A figure and its 95% interval (null: too few held-out units to give one). */
export interface Estimate {
  value: number;
  interval: Interval | null;
}

/** A before → after change, its 95% interval (paired bootstrap over the held-out units) and
 * what that interval says: "better"/"worse" only when it excludes no change. */
export interface Change {
  value: number;
  interval: Interval | null;
  outcome: "better" | "same" | "worse";
}

/** The held-out figures with intervals; `loss_change` is relative (−0.11: fell 11%). */
export interface LossComparison {
  /** Held-out rows resampled. */
  units: number;
  loss_before: Estimate;
  loss_after: Estimate;
  perplexity_before: Estimate;
  perplexity_after: Estimate;
  loss_change: Change;
}

/** Accuracy (Wilson intervals), macro-F1 and loss before and after; changes of rates in
 * points as fractions (0.12: +12 points), of the loss relative. `accuracy_change` decides. */
export interface ClassComparison {
  examples: number;
  accuracy_before: Estimate;
  accuracy_after: Estimate;
  macro_f1_before: Estimate;
  macro_f1_after: Estimate;
  loss_before: Estimate;
  loss_after: Estimate;
  accuracy_change: Change;
  macro_f1_change: Change;
  loss_change: Change;
}

/** What became of the held-out examples. */
export interface HeldOut {
  /** Held out by the split (or given by the validation file). */
  examples: number;
  scored: number;
  /** Held-out examples of the training file beyond validation_max, trained on instead. */
  returned_to_training: number;
}

export interface ClassStats {
  label: string;
  precision: number;
  recall: number;
  f1: number;
  support: number;
}

export interface ClassificationEval {
  loss: number;
  accuracy: number;
  macro_f1: number;
  per_class: ClassStats[];
  /** Rows: true label, columns: predicted label, in `labels` order. */
  confusion_matrix: number[][];
  examples: number;
  seconds?: number;
}

/**
 * Retrieval on held-out pairs (sentence embeddings): each anchor searches every held-out
 * positive by cosine similarity.
 */
export interface RetrievalEval {
  /** Contrastive loss over the whole held-out set (each anchor's positive among all positives). */
  loss: number;
  /** Recall@1: the share of anchors whose own positive ranks first. */
  accuracy: number;
  /** Mean reciprocal rank of the own positive. */
  mrr: number;
  /** Mean cosine of a pair, and of an anchor with the other positives. */
  positive_cosine: number;
  negative_cosine: number;
  pairs: number;
}

/** Recall@1 (Wilson intervals), MRR, loss and a pair's cosine before and after; changes of
 * rates in points as fractions, of the loss relative. `accuracy_change` (recall@1) decides. */
export interface RetrievalComparison {
  pairs: number;
  accuracy_before: Estimate;
  accuracy_after: Estimate;
  mrr_before: Estimate;
  mrr_after: Estimate;
  loss_before: Estimate;
  loss_after: Estimate;
  positive_cosine_before: Estimate;
  positive_cosine_after: Estimate;
  accuracy_change: Change;
  mrr_change: Change;
  loss_change: Change;
}

/** What one held-out anchor retrieved. */
export interface Retrieved {
  /** The positive ranked first. */
  text: string;
  /** Where the anchor's own positive ranked (1: first). */
  rank: number;
  /** Cosine of the anchor and its own positive. */
  cosine: number;
}

export type EvaluateResult =
  | ({ task: "causal"; model: WhichModel; validation_examples?: number } & CausalEval)
  | ({ task: "classification"; model: WhichModel; labels: string[] } & ClassificationEval)
  | ({ task: "embedding"; model: WhichModel; validation_examples: number; held_out: HeldOut; seconds: number } & RetrievalEval);

/** A "progress" event: one training step. */
export interface StepProgress {
  step: number;
  total_steps: number;
  epoch?: number;
  loss: number;
  lr: number;
  grad_norm?: number;
  tokens_per_s?: number;
  examples_per_s?: number;
  elapsed_s?: number;
  eta_s: number | null;
  memory_bytes?: number | null;
  /** A validation evaluation at this step, when one ran (an embedder's: RetrievalEval's keys). */
  eval?: { loss: number; perplexity?: number; tokens?: number; accuracy?: number; mrr?: number; positive_cosine?: number; negative_cosine?: number; pairs?: number } | null;
}

/** Reading a dataset file: records checked and tokenized so far (loadDataset and train). */
export interface DataProgress {
  file: string;
  /** The file's size. */
  bytes: number;
  /** How much of it has been read, checked and tokenized (records are handled one at a time). */
  bytes_done: number;
  /** Records read so far. */
  records_done: number;
}

export interface PhaseEvent {
  phase: "data" | "samples" | "training" | "export" | string;
  message: string;
}

export interface TrainSummary {
  backend: "webgpu" | "cpu";
  method: "lora" | "full";
  steps: number;
  cancelled: boolean;
  losses: number[];
  grad_norms?: number[];
  lrs?: number[];
  eval?: Array<{ step: number; loss: number; perplexity?: number; tokens?: number; accuracy?: number; mrr?: number; positive_cosine?: number; negative_cosine?: number; pairs?: number }>;
  trainable_params?: number;
  total_params?: number;
  first_step_ms?: number;
  median_step_ms?: number;
  tokens_per_s?: number;
  /** Classifiers and embedders count examples (pairs) instead of tokens. */
  examples_per_s?: number;
  /** The most memory a step reported: WebGPU's buffer pool, or on the CPU the wasm module's
   * linear memory (natively the resident set); null where neither can be read. */
  peak_memory_bytes?: number | null;
  [key: string]: unknown;
}

interface TrainResultBase {
  report: DataReport;
  train_examples: number;
  validation_examples: number;
  held_out: HeldOut;
  train_batches: number;
  summary: TrainSummary;
  /** Names of the exported files: "merged/...", and "adapter/..." after LoRA. */
  files: string[];
  tuned_info: ModelInfo | null;
  /** summary.cancelled. */
  cancelled: boolean;
  /** The job configuration that ran. */
  config: JobConfig;
  [key: string]: unknown;
}

export interface CausalTrainResult extends TrainResultBase {
  task: "causal";
  before: CausalEval | null;
  after: CausalEval | null;
  /** Before/after with 95% intervals and the verdict; null without held-out rows. */
  comparison: LossComparison | null;
  samples: Array<{ source: string; prompt: string; reference: string; before: string; after: string }>;
}

export interface ClassificationTrainResult extends TrainResultBase {
  task: "classification";
  labels: string[];
  before: ClassificationEval | null;
  after: ClassificationEval | null;
  /** Before/after with 95% intervals and the verdict. */
  comparison: ClassComparison | null;
  pooling?: string;
  head_from_checkpoint?: boolean;
  /** Held-out examples whose prediction changed (at most 20 listed; changed_total counts all). */
  changed: Array<{
    source: string;
    text: string;
    /** The true label. */
    label: string;
    status?: "fixed" | "broken" | "changed";
    before: { label: string; prob: number; prob_true?: number };
    after: { label: string; prob: number; prob_true?: number };
  }>;
  changed_total?: number;
  fixed?: number;
  broken?: number;
}

export interface EmbeddingTrainResult extends TrainResultBase {
  task: "embedding";
  before: RetrievalEval | null;
  after: RetrievalEval | null;
  /** Before/after with 95% intervals and the verdict (recall@1 decides); null without held-out pairs. */
  comparison: RetrievalComparison | null;
  pooling: "mean" | "cls";
  /** The cosine scale of the contrastive loss. */
  scale: number;
  /** Tokens per text at most. */
  seq_len: number;
  overlap_removed: number;
  /** Held-out anchors whose best match changed, fixed ones first (at most 20 listed;
   * changed_total counts all): what ranked first before and after. */
  changed: Array<{
    source: string;
    anchor: string;
    /** The anchor's own positive. */
    positive: string;
    status: "fixed" | "broken" | "changed";
    before: Retrieved;
    after: Retrieved;
  }>;
  changed_total: number;
  fixed: number;
  broken: number;
}

export type TrainResult = CausalTrainResult | ClassificationTrainResult | EmbeddingTrainResult;

export interface GenerateOptions {
  max_new_tokens?: number;
  greedy?: boolean;
  temperature?: number;
  top_k?: number;
  top_p?: number;
  repetition_penalty?: number;
  seed?: number;
  use_cache?: boolean;
  stop_tokens?: number[];
  ignore_eos?: boolean;
  /** Default: "tuned" when a fine-tuned model exists, else "base". */
  model?: WhichModel;
}

export interface GenerateResult {
  prompt_ids: number[];
  generated_ids: number[];
  /** Null when the model has no tokenizer; a chat reply without its end-of-turn token. */
  text: string | null;
  /** The conversation as the model's template formatted it (chat prompts only). */
  chat_prompt: string | null;
  seconds: number;
  tokens_per_s: number;
  /** Whether keys and values of past positions were reused (the `use_cache` option). */
  use_cache: boolean;
  cancelled: boolean;
  model: WhichModel;
}

export type ExportKind = "merged" | "peft" | "all";
/** File name (inside the folder; "merged/..." and "adapter/..." for "all") → bytes. */
export type ExportedFiles = Record<string, Uint8Array>;

export interface BackendInfo {
  backend: "webgpu" | "cpu";
  requested: Backend;
  reason: string;
  /** Threads the CPU backend computes on; null on WebGPU. */
  cpu_threads: number | null;
  adapter: { vendor: string; architecture: string; device: string; description: string; is_fallback: boolean } | null;
  limits: unknown;
  info: unknown;
  version: string | null;
}

export type WorkerState = "starting" | "ready" | "busy" | "crashed" | "disposed";

export interface FineTunerEvents {
  progress: StepProgress;
  phase: PhaseEvent;
  "data-progress": DataProgress;
  download: DownloadProgress;
  token: { token: number; text: string | null };
  state: WorkerState;
  backend: BackendInfo;
  /** Errors outside an operation, and fatal ones (error.fatal: create a new FineTuner). */
  error: WebtuneError;
  stalled: { silentMs: number; state: WorkerState };
  /** Training waits after this step (pause()) until resume() or cancel(). */
  paused: { step: number; total_steps: number };
  resumed: { step: number; total_steps: number };
  /** Every fine-tuning job event as the worker sends it (phase, step, data_progress, checkpoint, paused, resumed). */
  "job-event": JobEvent;
  /** A toy run's step (trainToy()). */
  "toy-progress": { step: number; total_steps: number; loss: number; [key: string]: unknown };
  /** A request the worker made (the privacy check counts them; none after a model loads). */
  network: { url: string; at: number };
}

export interface JobEvent {
  type: "phase" | "step" | "data_progress" | "checkpoint" | "paused" | "resumed";
  [key: string]: unknown;
}

/** Where the dataset of evaluate(), train() and recipe() comes from when it is not the loaded one. */
export interface DatasetOptions {
  /** Read this file instead (it becomes the loaded dataset, unchecked). */
  dataset?: DatasetInput;
  /** Its separate validation file (replaces the held-out share). */
  validation?: DatasetInput;
}

/** The interrupted fine-tuning run saved in this browser (OPFS). */
export interface CheckpointMeta {
  step: number;
  total_steps: number;
  saved_at: string;
  config: JobConfig;
  dataset: { name: string; size: number; sha256: string };
  model: { architecture: string; parameters: number; [key: string]: unknown };
  [key: string]: unknown;
}

export interface ToySummary {
  steps: number;
  initial_loss: number;
  final_loss: number;
  cancelled: boolean;
  [key: string]: unknown;
}

export interface Classification {
  label: string;
  labels: string[];
  probs: number[];
}

// ---------------------------------------------------------------------------------------------

export declare class FineTuner {
  /** Start a worker and wait for its backend. */
  static create(options?: CreateOptions): Promise<FineTuner>;
  /** Start a worker without waiting ("state"/"backend" events, whenReady()). */
  static start(options?: CreateOptions): FineTuner;
  static cachedModels(): Promise<CachedModel[]>;
  /** Resolves with the number of cache entries deleted. */
  static deleteCachedModel(base: string): Promise<number>;
  static clearCache(): Promise<boolean>;
  static servedModels(index?: string | URL): Promise<ServedModel[]>;

  private constructor();

  readonly backend: BackendInfo | null;
  readonly state: WorkerState;
  readonly model: ModelInfo | null;
  readonly task: Task | null;
  readonly dataset: { name: string; bytes: number; options: JobConfig; report: DataReport | null } | null;
  readonly tuned: ModelInfo | null;
  readonly lastResult: TrainResult | null;
  /** The backend asked for; `backend.backend` is the one running. */
  readonly backendChoice: Backend;
  /** Workers started so far (one more per restart() or setBackend()). */
  readonly generation: number;

  whenReady(): Promise<BackendInfo>;
  /** A new worker on `choice` (the model is gone). */
  setBackend(choice: Backend): void;
  /** A new worker on the same backend (the model is gone). */
  restart(): void;

  on<K extends keyof FineTunerEvents>(type: K, fn: (detail: FineTunerEvents[K]) => void): () => void;
  off<K extends keyof FineTunerEvents>(type: K, fn: (detail: FineTunerEvents[K]) => void): void;
  once<K extends keyof FineTunerEvents>(type: K, fn: (detail: FineTunerEvents[K]) => void): () => void;

  loadModel(source: ModelSource, options?: LoadModelOptions): Promise<LoadedModel>;
  loadDataset(input: DatasetInput, options?: JobConfig & { name?: string; validation?: DatasetInput }): Promise<DatasetResult>;
  /**
   * Held-out scores without training. After train() on the same dataset it uses that job's
   * configuration (the same split); before, the dataset's options merged with `options`.
   */
  evaluate(config?: JobConfig & { model?: WhichModel }, options?: DatasetOptions): Promise<EvaluateResult>;
  /** `options.resume`: continue the interrupted run saved in this browser (checkpoint()). */
  train(config?: JobConfig & { preset?: PresetName }, options?: DatasetOptions & { resume?: boolean }): Promise<TrainResult>;
  /**
   * The job train(config) would run, as a Python project for transformers + PEFT launched by
   * Accelerate (same data, split, batches, starting weights and optimiser): a ZIP archive of
   * `webtune-recipe/…`. Nothing is trained.
   */
  recipe(config?: JobConfig & { preset?: PresetName }, options?: DatasetOptions): Promise<Uint8Array>;
  /** The interrupted run saved in this browser, or null. */
  checkpoint(): Promise<CheckpointMeta | null>;
  discardCheckpoint(): Promise<void>;
  /** Returns whether something was running. */
  cancel(): boolean;
  /**
   * Pause training after its current step (a "paused" event says when it waits); resume()
   * continues from exactly the same state, so the losses equal an uninterrupted run's.
   * cancel() while paused ends the run as cancel() does (evaluated and exported).
   * Both return whether something was running.
   */
  pause(): boolean;
  resume(): boolean;
  generate(
    prompt: string | { text: string } | { ids: number[] } | { chat: ChatMessage[]; add_generation_prompt?: boolean },
    options?: GenerateOptions,
  ): Promise<GenerateResult>;
  export(kind?: ExportKind): Promise<ExportedFiles>;
  /** An encoder's label for `text` (its classification head). */
  classify(text: string, options?: { model?: WhichModel }): Promise<Classification>;
  /** Cosine similarity of two texts' mean-pooled embeddings (an encoder; after embedding
   * fine-tuning, "tuned" is the tuned embedder). */
  similarity(a: string, b: string, options?: { model?: WhichModel }): Promise<{ similarity: number }>;
  /** Logits of every position: shape [T, vocab]. */
  logits(ids: ArrayLike<number>, options?: { model?: WhichModel }): Promise<{ shape: number[]; data: Float32Array }>;
  /** Check the backend by training the built-in toy model; "toy-progress" per step. */
  trainToy(config?: Record<string, unknown>): Promise<ToySummary>;
  /** Replay a committed PyTorch/PEFT reference run (its JSON text) from the loaded model's files. */
  replayReference(reference: string, method: "lora" | "full"): Promise<{ summary: TrainSummary; reference_losses: number[]; reference_grad_norms: number[] }>;
  /** Test hook: the worker destroys its GPU devices. */
  debugLoseDevice(): void;
  /** Adapters kept in this browser (OPFS), oldest first, marked `fits`/`attached` for the loaded model. */
  adapters(): Promise<AdapterMeta[]>;
  /**
   * Keep a PEFT adapter (adapter_config.json + adapter_model.safetensors) for the loaded model:
   * File objects / a FileList / [{name, bytes}], or the URL of a folder holding both files.
   * Refused (`model.shape_mismatch`) when it does not fit the model.
   */
  loadAdapter(
    source: string | URL | Blob[] | FileList | Array<{ name: string; bytes: ArrayBuffer | Uint8Array | Blob }>,
    options?: { name?: string | null; endpoint?: string; revision?: string },
  ): Promise<AdapterMeta & { attach_ms: number }>;
  /** Answer generate()/evaluate() with this adapter (null: the base model) from now on. */
  useAdapter(name: string | null): Promise<AdapterSwitch>;
  /** The adapter generate() and evaluate() use by default (null: none chosen). */
  readonly adapter: string | null;
  renameAdapter(name: string, to: string): Promise<AdapterMeta>;
  deleteAdapter(name: string): Promise<AdapterMeta>;
  /** A kept adapter's PEFT files, as export("peft") gives them. */
  adapterFiles(name: string): Promise<ExportedFiles>;
  dispose(): void;
}

export declare function servedModels(index?: string | URL): Promise<ServedModel[]>;
/** The task a job on `info` runs: an encoder's follows `data` (a loadDataset() result) once there is one. */
export declare function taskOf(info: Pick<ModelInfo, "architecture"> | null, data?: { task?: Task } | null): Task;
export declare function mergeConfig<T extends object>(base: T, over: object | undefined): T;

export default FineTuner;

// The web component (components/webtune-trainer.js).
export declare class WebtuneTrainer extends HTMLElement {
  readonly tuner: FineTuner | null;
  readonly result: TrainResult | null;
  /** "starting" | "loading" | "ready" | "training" | "done" | "error". */
  readonly state: string;
  train(): Promise<TrainResult | null>;
  cancel(): void;
}

declare global {
  interface HTMLElementTagNameMap {
    "webtune-trainer": WebtuneTrainer;
  }
}
