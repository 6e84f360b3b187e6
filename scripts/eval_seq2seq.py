"""Measure a shipped seq2seq checkpoint on fresh held-out examples: the figures in its MODEL_CARD.md.

    .venv/bin/python scripts/eval_seq2seq.py models/seq2seq-dates models/seq2seq-reverse
    .venv/bin/python scripts/eval_seq2seq.py models/seq2seq-dates --n 2000 --seed 7 --json

Held-out = the task's test split (dates / word sequences whose CRC32 is 0 mod 10, never drawn
in training), sampled with `--seed`. Exact match: greedy `generate` token ids equal the
reference ids. Alignment: share of the head-averaged cross-attention that the query predicting
target token i puts on its aligned source token (teacher-forced, eager attention), averaged over
target tokens that have one; uniform = mean 1/source length, the chance level.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from viz.train.seq2seq import trim_ids, evaluate, load_seq2seq  # noqa: E402


EXAMPLES = {"dates": ("3 March 2021", "2021 - 03 - 03"),
            "reverse": ("the old house near the river", "river the near house old the")}


NO_ALIGN = {"dates": "the two `-` and `</s>` have none", "reverse": "only `</s>` has none"}
LIMITS = {
    "dates": "Only real calendar dates 1900–2099 in the three formats were trained on; "
             "`03/04/2021` is read day first (3 April). Impossible dates (`31 February 2021`), "
             "other years or formats are out of distribution and may be mistranslated.",
    "reverse": "Trained on 3–12 words only. Exact match by input length (random words from the "
               "300 most frequent, seeded, measured by this script): {sweep}. "
               "Outside 3–12 words the model is out of distribution (e.g. `Hello World` -> "
               "`<unk> world world`). Position embeddings stop at 30 tokens.",
}


@torch.inference_mode()
def length_sweep(model, tok, lengths=(1, 2, 3, 12, 13, 15), n: int = 50, seed: int = 0) -> dict:
    """Reverse task only: exact match on n random k-word inputs per length k (OOD outside 3–12)."""
    from viz.train.seq2seq_tasks import reverse_vocab

    vocab, rng, out = reverse_vocab()[:300], random.Random(seed), {}
    for k in lengths:
        texts = [" ".join(rng.choice(vocab) for _ in range(k)) for _ in range(n)]
        gen = model.generate(**tok(texts, return_tensors="pt", padding=True), max_length=40)
        refs = tok(text_target=[" ".join(t.split()[::-1]) for t in texts])["input_ids"]
        out[k] = sum(trim_ids(g[1:]) == r for g, r in zip(gen.tolist(), refs)) / n
    return out


def model_card(ckpt: Path, info: dict, m: dict, vocab_size: int) -> str:
    """MODEL_CARD.md text: training facts from task.json, figures from this evaluation."""
    c = info["config"]
    sweep = ", ".join(f"{k} words {v:.2f}" for k, v in m.get("length_sweep", {}).items())
    src, tgt = EXAMPLES.get(info["task"], ("", ""))
    cpu = (f"{info['train_cpu_minutes']} CPU minutes (process time)"
           if info.get("train_cpu_minutes") is not None else "CPU time not recorded for this run")
    mb = sum(f.stat().st_size for f in ckpt.iterdir() if f.is_file()) / 1e6
    heads = "\n".join(f"| {i} | {lay:.3f} | " + " / ".join(f"{h:.3f}" for h in hs) + " |"
                      for i, (lay, hs) in enumerate(zip(m["per_layer"], m["per_head"])))
    extra = {"dates": "Input formats: `3 March 2021`, `03/03/2021` (day first: DD/MM/YYYY), "
                      "`March 3, 2021`; years 1900–2099. Lower-cased by the tokenizer.",
             "reverse": "Vocabulary: the 1,000 most frequent lower-case English words (frequency "
                        "order of the BERT uncased WordPiece vocabulary, Apache-2.0; "
                        "`viz/train/words_1000.txt`). Any other word becomes `<unk>` and is "
                        "copied as `<unk>`: about 5% of training words were unknown on purpose."}
    return f"""# {ckpt.name}: {info['task']} (encoder–decoder trained from scratch)

Task: {info['description']}.
{extra.get(info['task'], '')}

Built-in model for the Encoder–decoder page: every target word has a known source word, so
cross-attention can be checked against the true alignment.

## Model

`BartForConditionalGeneration` (post-norm encoder–decoder, the original Transformer layout),
{c['layers']} encoder + {c['layers']} decoder layers, d_model {c['d_model']}, {c['heads']} heads,
FFN {c['ffn']}, no dropout, tied embeddings; {c['params']:,} parameters; word-level vocabulary of
{vocab_size} tokens (`<pad>` 0, `<s>` 1, `</s>` 2, `<unk>` 3; one token per word, `</s>` appended
to sources). Weights stored in float16 ({mb:.1f} MB for the whole folder); `config.json` says
`dtype: float32`, so they load back as float32.

## Training

- {info['steps_done']} AdamW steps, batch {info['batch_size']}, lr {info['lr']} ({info['warmup']} warm-up
  steps, cosine decay), seed {info['seed']}; fresh synthetic examples every step, train split only
- final training loss {info['final_loss']:.2g}
- {cpu}; {info['train_wall_minutes']} wall minutes ({info['torch_threads']} torch thread on a
  2-core machine shared with another training job)

Reproduce: `python -m viz.train.seq2seq --task {info['task']} --steps {info['steps']} \
--seed {info['seed']} --out {ckpt.as_posix()}` (or `python -m viz train seq2seq ...` once `viz/cli/main.py` routes to `main`).

## Held-out results

Measured by `scripts/eval_seq2seq.py {ckpt.as_posix()} --n {m['n']} --seed {m['seed']}` on
{m['n']} examples of the test split (never drawn in training).

| metric | value |
|---|---|
| exact match (greedy `generate`) | {m['exact_match']:.4f} |
| last-layer cross-attention on the aligned source token (head mean) | {m['alignment']:.3f} |
| uniform baseline (mean 1/source length) | {m['uniform']:.3f} |

Alignment = the share of cross-attention that the decoder query predicting target token i
(teacher-forced on the reference, eager attention) puts on its aligned source token, averaged
over the {m['aligned_tokens']} target tokens that have one ({NO_ALIGN.get(info['task'], '`</s>` has none')}).

| decoder layer | head mean | per head |
|---|---|---|
{heads}

## Limits

{LIMITS.get(info['task'], '').format(sweep=sweep)}

## Use

```python
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
model = AutoModelForSeq2SeqLM.from_pretrained("{ckpt.as_posix()}", attn_implementation="eager",
                                              dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained("{ckpt.as_posix()}")
enc = tok(["{src}"], return_tensors="pt")
print(tok.batch_decode(model.generate(**enc), skip_special_tokens=True))  # ['{tgt}']
labels = tok(text_target=["{tgt}"], return_tensors="pt")["input_ids"]
out = model(**enc, labels=labels, output_attentions=True)
# out.cross_attentions: one [batch, head, tgt_len, src_len] tensor per decoder layer
```

Eager attention is required for attention weights (SDPA returns none). `skip_special_tokens=True`
also drops `<unk>`; compare token ids to see it.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoint directories (with task.json)")
    ap.add_argument("--n", type=int, default=1000, help="held-out examples per checkpoint")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--task", default=None, help="override the task named in task.json")
    ap.add_argument("--json", action="store_true", help="print one JSON object per checkpoint")
    ap.add_argument("--write-card", action="store_true",
                    help="(re)write CHECKPOINT/MODEL_CARD.md from task.json and these figures")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for ckpt in args.checkpoints:
        model, tok, info = load_seq2seq(ckpt)
        task = args.task or info.get("task")
        if not task:
            ap.error(f"{ckpt} has no task.json naming its task; pass --task dates|reverse")
        t0 = time.perf_counter()
        m = evaluate(model, tok, task, n=args.n, seed=args.seed)
        if task == "reverse":
            m["length_sweep"] = length_sweep(model, tok, seed=args.seed)
        m["checkpoint"], m["eval_s"] = str(ckpt), round(time.perf_counter() - t0, 1)
        if args.write_card:
            card = Path(ckpt) / "MODEL_CARD.md"
            card.write_text(model_card(Path(ckpt), info, m, len(tok)))
            print(f"wrote {card}", file=sys.stderr)
        if args.json:
            print(json.dumps(m))
            continue
        print(f"{ckpt}  task={task}  n={m['n']}  seed={m['seed']}  ({m['eval_s']} s)")
        print(f"  held-out exact match        {m['exact_match']:.4f}")
        print(f"  last-layer cross-attention  {m['alignment']:.3f} on the aligned source token "
              f"(uniform {m['uniform']:.3f}; {m['aligned_tokens']} target tokens)")
        if "length_sweep" in m:
            print("  exact match by length (OOD outside 3-12): " + ", ".join(
                f"{k}: {v:.2f}" for k, v in m["length_sweep"].items()))
        for li, (lay, heads) in enumerate(zip(m["per_layer"], m["per_head"])):
            print(f"  layer {li}: {lay:.3f}   heads: " + "  ".join(f"{h:.3f}" for h in heads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
