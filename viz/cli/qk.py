"""`python -m viz qk`: one head's queries and keys over a corpus, normalised and projected to 2-D, as CSV."""

from __future__ import annotations

import argparse
import sys

from viz.cli.common import add_device_args, input_file, int_range, output_file

QK_HELP = """\
output (--out, CSV): one row per query and one per key of every real token of the corpus, queries first:
  kind          query | key
  sentence      0-based index of the sentence in the corpus
  position      0-based token position in its sentence (special tokens included)
  token         the token
  x, y          the 2-D projection (--projection) of queries and keys together
  d0 ... d{n-1} with --vectors: the normalised vector (n = head_dim)
normalisation (AttentionViz, Yeh et al. 2023, §4): q' = a q, k' = k / a + c, with c moving the keys'
  centroid onto the queries' and a (bisection) making their mean norms equal. Every attention row is
  unchanged: softmax over keys j of (q'_i . k'_j) x scaling (+ the mask: causal for decoders) is the
  head's attention, where scaling is the model's (1/sqrt(head_dim) for BERT and Llama; printed on stderr).
  Vectors are taken as the model computed them (after RoPE); a grouped-query head's keys are those of its
  key/value head. Attention read: encoder self-attention (encoders, encoder-decoders), causal self-attention
  (decoders).
projections: pca (default), tsne (scikit-learn, Barnes-Hut), umap (needs umap-learn installed)."""


def _qk(args) -> int:
    import csv

    from viz.analysis.qk import METHODS
    from viz.atlas.qk import gather_qk, head_points
    from viz.atlas.stream import first_sentences
    from viz.cli.common import load_for
    from viz.tasks.corpus import SAMPLE_PATH

    sentences = first_sentences(args.corpus or SAMPLE_PATH, args.column, args.sentences)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    bundle = load_for(args)
    from viz.atlas.core import atlas_stack

    stack = atlas_stack(bundle)
    L, H = bundle.stack_layers(stack), bundle.n_heads(stack)
    if not -L <= args.layer < L:
        print(f"error: --layer {args.layer}: {bundle.name} has {L} layers (0 to {L - 1}, or -1 for the last).",
              file=sys.stderr)
        return 2
    if not 0 <= args.head < H:
        print(f"error: --head {args.head}: {bundle.name} has {H} heads per layer (0 to {H - 1}).", file=sys.stderr)
        return 2
    layer = args.layer % L
    data = gather_qk(bundle, sentences, [layer], max_tokens=args.max_tokens)
    if args.projection == "umap":
        from viz.analysis.qk import available_methods

        if "umap" not in available_methods():
            print("error: --projection umap needs umap-learn (pip install umap-learn); pca and tsne work without it.",
                  file=sys.stderr)
            return 2
    pts = head_points(data, layer, args.head, args.projection, seed=args.seed)
    vectors = list(pts.norm.q) + list(pts.norm.k)
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        dims = len(vectors[0]) if vectors else 0
        w.writerow(["kind", "sentence", "position", "token", "x", "y"] + ([f"d{i}" for i in range(dims)]
                                                                          if args.vectors else []))
        for i in range(len(pts.kind)):
            row = ["query" if pts.kind[i] == 0 else "key", int(pts.sentence[i]), int(pts.position[i]), pts.tokens[i],
                   f"{pts.coords[i, 0]:.6g}", f"{pts.coords[i, 1]:.6g}"]
            if args.vectors:
                row += [f"{v:.8g}" for v in vectors[i]]
            w.writerow(row)
    print(f"{bundle.name} L{layer} H{args.head}: {len(pts.kind) // 2} tokens of {data.n_sentences} sentences, "
          f"{METHODS[args.projection]}, scaling {data.scaling[0]:.6g}, keys scaled 1/{pts.norm.scale:.4g} and moved "
          f"-> {args.out}", file=sys.stderr)
    return 0


def add_qk(sub) -> None:
    p = sub.add_parser("qk", help="one head's queries and keys over a corpus, normalised and projected to 2-D (CSV)",
                       description="Every query and key vector of one head over a corpus in one space "
                                   "(AttentionViz): normalised so that softmax is unchanged, projected to 2-D.",
                       epilog=QK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", help="bundled name, HF id or local folder (minilm)")
    p.add_argument("--layer", type=int, required=True, help="layer (0-based; negative from the end)")
    p.add_argument("--head", type=int_range(0), required=True, help="query head (0-based)")
    p.add_argument("--corpus", type=input_file, default=None,
                   help="sentences (.txt/.csv/.jsonl, optionally .gz; default: the bundled sample)")
    p.add_argument("--column", default=None, help="column of a .csv / key of a .jsonl holding the sentences")
    p.add_argument("--sentences", type=int_range(1), default=None, help="use the first N sentences (default: all)")
    p.add_argument("--max-tokens", type=int_range(2), default=128, help="truncate sentences to this many tokens")
    p.add_argument("--projection", choices=["pca", "tsne", "umap"], default="pca", help="2-D projection (pca)")
    p.add_argument("--seed", type=int_range(0), default=0, help="seed of t-SNE / UMAP (0)")
    p.add_argument("--threads", type=int_range(0), default=0,
                   help="torch threads (default: torch's choice; 1 on a machine other jobs share)")
    p.add_argument("--vectors", action="store_true", help="also write the normalised vectors d0 ... d{n-1}")
    p.add_argument("--out", type=output_file, required=True, help="output .csv path")
    add_device_args(p)
    p.set_defaults(func=_qk)
