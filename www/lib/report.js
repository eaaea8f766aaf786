// The evaluation report's derived sections, built from a fine-tuning result (worker.js "done"
// for finetune). Pure functions without DOM use, so node tests can check them directly.

/**
 * The dataset as the dataset panel reports it, as one flat object (null without a report).
 * The full data report stays in `result.report`; this is the part worth reading at a glance.
 */
export function dataSummary(result) {
  const r = result?.report;
  if (!r) return null;
  const v = result.validation_report;
  const t = r.tokens;
  return {
    file: r.file,
    bytes: r.bytes,
    format: r.format,
    encoding: r.encoding ?? null,
    schema: r.schema?.schema ?? null,
    schema_detected: r.schema?.detected ?? null,
    fields: r.schema?.fields ?? [],
    policy: r.policy ?? null,
    records: r.records,
    examples: r.examples,
    // Present when the dataset was larger than the cap on examples held in memory.
    sampled: r.sampled ?? null,
    skipped: r.skipped,
    skipped_by_reason: r.skipped_by_reason ?? {},
    duplicates: r.duplicates ?? 0,
    blank_lines: r.blank_lines ?? 0,
    warnings: (r.warnings ?? []).map((w) => w.message),
    train_examples: result.train_examples,
    validation_examples: result.validation_examples,
    overlap_removed: result.overlap_removed ?? 0,
    train_batches: result.train_batches,
    validation_file: v ? { file: v.file, bytes: v.bytes, examples: v.examples, skipped: v.skipped } : null,
    tokens: t ? { seq_len: t.seq_len, min: t.min, median: t.median, p95: t.p95, max: t.max, mean: t.mean, total: t.total, truncated: t.truncated } : null,
    labels: r.labels ?? null,
    chat_template: r.chat_template ?? null,
  };
}

/**
 * The run's curves with explicit step numbers: the summary's per-step arrays are indexed from
 * step 1 (a resumed run's include the steps before the interruption), its `eval` points carry
 * their own step (0: before training).
 */
export function curves(summary) {
  if (!summary) return null;
  const losses = summary.losses ?? [];
  return {
    steps: losses.map((_, i) => i + 1),
    train_loss: [...losses],
    learning_rate: [...(summary.lrs ?? [])],
    grad_norm: [...(summary.grad_norms ?? [])],
    validation: (summary.eval ?? []).map((p) => ({ ...p })),
  };
}

/** Where the model came from, without URLs or bytes: {kind, repo?, revision?, files: [name]}. */
export function modelSource(source) {
  if (!source) return null;
  const files = (source.files ?? []).map((f) => (typeof f === "string" ? f : (f?.file ?? f?.name ?? String(f))));
  return source.kind === "hub" ? { kind: "hub", repo: source.repo ?? null, revision: source.revision ?? null, files } : { kind: source.kind ?? "files", files };
}
