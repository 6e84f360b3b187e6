"""`python -m viz match`: every head of model A against every head of model B, matched one to one."""

from __future__ import annotations

import argparse
import json
import sys

from viz.cli.common import add_device_args, input_file, int_range

MATCH_HELP = """\
JSON (--json): {"a": {"model", "layers", "heads"}, "b": {"model", "layers", "heads"}, "level", "sentences",
  "rows", "similarity": [[...]], "pairs": [{"a": [layer, head], "b": [layer, head], "similarity"}]}
  similarity    A heads x B heads (rows: A, columns: B), both row-major by layer then head (index =
                layer * heads + head): 1 - the mean over attention rows of the Jensen-Shannon divergence
                (base 2, so in [0, 1]) between head a's and head b's row; 1 = the same attention everywhere
  pairs         the one-to-one assignment maximising the summed similarity (Hungarian method), in A's
                head order; min(A heads, B heads) pairs
  level         "tokens" when both tokenizers cut every sentence into the same tokens (special tokens
                included), else "words": whitespace-separated words of the text; special tokens set
                aside and rows renormalised, key pieces summed, query pieces averaged
  sentences     sentences compared; rows: attention rows (tokens or words) the mean runs over
attention read: encoder self-attention (encoders, encoder-decoders: the encoder), causal
  self-attention (decoders). Without --json: the matched pairs as a table, best first."""


def _match(args) -> int:
    from viz.atlas.match import MatchError, match_models
    from viz.atlas.stream import first_sentences
    from viz.cli.common import load_for
    from viz.core.models import load_model
    from viz.tasks.corpus import SAMPLE_PATH

    if args.text is not None:
        sentences = [args.text] if args.text.strip() else []
        if not sentences:
            raise MatchError("--text is empty: give a sentence.")
    else:
        sentences = first_sentences(args.corpus or SAMPLE_PATH, args.column, args.sentences)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    bundle_a = load_for(args)
    bundle_b = load_model(args.model_b, dtype=args.dtype, device=args.device)
    progress = None if args.json or args.quiet else \
        (lambda d, t: print(f"\rmatch: {d}/{t} sentences", end="", file=sys.stderr, flush=True))
    res = match_models(bundle_a, bundle_b, sentences, max_tokens=args.max_tokens, level=args.level,
                       progress=progress)
    if progress is not None:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(res.to_json()))
        return 0
    print(f"{res.model_a} ({res.shape_a[0]} x {res.shape_a[1]} heads) vs {res.model_b} ({res.shape_b[0]} x "
          f"{res.shape_b[1]}), {res.level} level, {res.n_sentences} sentences, {res.n_rows} rows, {res.seconds:.1f} s")
    print("A head   B head   similarity")
    for r in sorted(res.pair_rows(), key=lambda r: -r["similarity"]):
        print(f"L{r['a_layer']}H{r['a_head']:<5} L{r['b_layer']}H{r['b_head']:<5} {r['similarity']:.4f}")
    return 0


def _guarded(args) -> int:
    from viz.atlas.match import MatchError

    try:
        return _match(args)
    except MatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def add_match(sub) -> None:
    p = sub.add_parser("match", help="match every head of two models by their attention (Hungarian)",
                       description="Run the same sentences through MODEL (A) and MODEL_B (B), measure how alike "
                                   "every head of A is to every head of B, and pair them one to one.",
                       epilog=MATCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", help="model A: bundled name, HF id or local folder (minilm)")
    p.add_argument("--model-b", required=True, help="model B (e.g. minilm-mlm, a studio run's folder)")
    p.add_argument("--corpus", type=input_file, default=None,
                   help="sentences (.txt/.csv/.jsonl, optionally .gz; default: the bundled sample)")
    p.add_argument("--column", default=None, help="column of a .csv / key of a .jsonl holding the sentences")
    p.add_argument("--sentences", type=int_range(1), default=None, help="use the first N sentences (default: all)")
    p.add_argument("--text", default=None, help="one text instead of a corpus")
    p.add_argument("--level", choices=["auto", "tokens", "words"], default="auto",
                   help="auto (default): tokens when the tokenizers agree, else words")
    p.add_argument("--max-tokens", type=int_range(2), default=128, help="truncate sentences to this many tokens")
    p.add_argument("--threads", type=int_range(0), default=0,
                   help="torch threads (default: torch's choice; 1 on a machine other jobs share)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print JSON (keys below)")
    add_device_args(p)
    p.set_defaults(func=_guarded)
