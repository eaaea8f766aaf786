// The sample datasets served with the page (www/samples/; provenance and licences in
// www/samples/README.md). They are fetched from this page's own origin when chosen.

export const SAMPLES = [
  {
    file: "chatterbot_english_qa.jsonl",
    // Both tasks: a causal LM learns to answer, an encoder (MiniLM) to find the answer.
    title: "Questions and answers (ChatterBot corpus, 1,257 pairs: answering, or retrieval with an encoder)",
    task: "prompt → response for a language model; question → answer retrieval (sentence embeddings) for an encoder",
  },
  {
    file: "pang_lee_polarity_200.jsonl",
    title: "Movie-review sentiment (Pang & Lee, 200 sentences)",
    task: "text → label",
  },
  {
    file: "shakespeare_excerpt.txt",
    title: "Shakespeare excerpt (150 KiB of plain text)",
    task: "plain text, one example per line",
  },
];

/** The URL of sample `file` (same origin as the page). */
export function sampleUrl(file) {
  return new URL(`./samples/${encodeURIComponent(file)}`, location.href);
}
