"""`python -m viz mask`: top-k predictions for every mask token of a text (masked-LM models)."""

from __future__ import annotations

import sys

from viz.cli.common import add_device_args, load_for, positive_int


def _mask(args) -> int:
    import json

    from viz.tasks.mlm import MaskError, predict
    from viz.core.models import ModelLoadError

    try:
        bundle = load_for(args)
        if args.top_k > len(bundle.tokenizer):
            raise MaskError(f"--top-k {args.top_k} is more than the model's vocabulary "
                            f"({len(bundle.tokenizer)} tokens).")
        result = predict(bundle, args.text, top_k=args.top_k, layers=args.layers)
    except (ModelLoadError, MaskError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    masks = []
    for p in result.predictions:
        item = {"position": p.position, "top_k": [{"token": t, "prob": pr} for t, pr in p.top]}
        if args.layers:
            item["layers"] = [[{"token": t, "prob": pr} for t, pr in row] for row in p.layer_top]
        masks.append(item)
    if args.json:
        print(json.dumps({"tokens": result.capture.tokens, "masks": masks}, ensure_ascii=False))
    else:
        for m in masks:
            print(f"mask at {m['position']}: " + ", ".join(f"{x['token']} {x['prob']:.1%}" for x in m["top_k"]))
    return 0


def add_mask(sub) -> None:
    p = sub.add_parser("mask", help="top-k predictions for each [MASK] in the text",
                       description="Predict every mask token in TEXT with a masked-LM model.",
                       epilog="JSON: {\"tokens\": [...], \"masks\": [{\"position\": i, \"top_k\": [{\"token\", \"prob\"}], "
                              "\"layers\": [[{\"token\", \"prob\"}] per layer, embeddings first] (with --layers)}]}. "
                              "Masks are listed in text order. [MASK] and <mask> both work.")
    p.add_argument("--model", default="minilm-mlm", help="a model with a masked-LM head (default: minilm-mlm)")
    p.add_argument("--text", required=True, help="text with one or more [MASK]")
    p.add_argument("--top-k", type=positive_int, default=5, dest="top_k", help="predictions per mask (default 5)")
    p.add_argument("--layers", action="store_true", help="add per-layer predictions (MLM head on every layer)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_device_args(p)
    p.set_defaults(func=_mask)
