"""`python -m viz patch`: activation patching, attribution patching and path patching of a clean/corrupted pair."""

from __future__ import annotations

import argparse
import sys

from viz.cli.common import add_device_args, load_for, output_file

SITES = ("resid_pre", "attn_out", "mlp_out", "head", "head_pos", "pattern")

PATCH_HELP = """\
What is measured: the corrupted input is run with one component's activation from the clean input put in, and
  the metric at the answer position says how much of the answer came back. Both inputs must have the same
  number of tokens (the error says both counts when they differ).
  metric   decoders, encoder-decoders: logit(target) - logit(foil) for the next token (after the prompt; after
           the decoder prefix); masked LMs: log p(target) - log p(foil) at the first [MASK] (log p(target) without
           a foil)
  effect   (m_patched - m_corrupt) / (m_clean - m_corrupt): 0 = nothing restored, 1 = everything
  --target/--foil default to the model's top prediction on the clean and on the corrupted input (the corrupted
  input's second choice when both are the same). A word of several tokens counts by its FIRST token; `target`
  and `foil` in the output are the tokens actually used, and `notes` says when a word was split.
  Encoder-decoders: both sources are decoded greedily and the decoder reads the clean output up to the first
  token where the two differ (the answer), or --prefix; the same decoder input in both runs.

JSON (--json): {"model", "kind", "clean_tokens": [...], "corrupt_tokens": [...], "target", "foil",
  "answer_position", "metric_name", "metric": {"clean", "corrupt"}, "notes": [...], "site", "stack", "method",
  "rows": ["L0", ...], "cols": [...], "effect": [[...]], "position_tokens": [...]}
  (+ "decoder_tokens" for encoder-decoders; + "positions" for head_pos)
  --site resid_pre | attn_out | mlp_out   effect[layer][position]; cols = positions 0..T-1 (tokens of the stack:
                                          position_tokens)
  --site head       effect[layer][head]   one head's output (before the output projection) at every position
  --site head_pos   effect[layer][head][position]
  --site pattern    effect[layer][head]   one head's attention pattern (its output becomes pattern_clean . V)
  --method exact    one patched run per cell (batched); atp: attribution patching, (a_clean - a_corrupt) .
                    dm/da from one forward and one backward, the first-order estimate of the same numbers
  --path q|k|v      path patching (decoders): rows = sender heads "L0 H1", cols = receivers (query heads "L2 H3",
                    or key/value heads "L2 KV1" for k/v with grouped heads), effect[sender][receiver], null where
                    the receiver is not after the sender; site = "path_q" ...
  null in effect: a cell that has no value (no path).
NPZ (--out F.npz): effect, patched (the raw metric of each patched run), rows, cols, metric [clean, corrupt]
  (+ position_tokens, clean_tokens, corrupt_tokens for activation patching)."""


def _receivers(text: str):
    """argparse type for --receivers: 'L2H3,L3H0' (or L2KV1) -> [(2, 3), (3, 0)]."""
    out = []
    for part in text.replace(" ", "").split(","):
        up = part.upper()
        try:
            layer, head = up[1:].replace("KV", "H").split("H")
            assert up.startswith("L")
            out.append((int(layer), int(head)))
        except (ValueError, AssertionError):
            raise argparse.ArgumentTypeError(f"'{part}' is not a head like L2H3 (or L2KV1)") from None
    return out


def _patch(args) -> int:
    import json

    import numpy as np

    from viz.causal.components import ComponentError
    from viz.causal.task import PatchError, make_task
    from viz.core.models import ModelLoadError

    try:
        bundle = load_for(args)
        task = make_task(bundle, args.clean, args.corrupt, args.target, args.foil, args.prefix)
        if args.path:
            from viz.causal.path_patching import path_patch

            result = path_patch(bundle, task, args.path, args.receivers)
        elif args.method == "atp":
            from viz.causal.atp import atp_result

            result = atp_result(bundle, task, args.site, args.stack)
        else:
            from viz.causal.patching import sweep

            result = sweep(bundle, task, args.site, args.stack)
    except (ModelLoadError, PatchError, ComponentError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        np.savez_compressed(args.out, **result.arrays())
    out = result.to_json()
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    print(f"{bundle.name}: {task.metric_name} = {task.metric_clean:.3f} clean, {task.metric_corrupt:.3f} corrupted "
          f"(target {task.target_token!r}, foil {task.foil_token!r}, answer position {task.answer_position})")
    for note in task.notes:
        print(f"note: {note}")
    eff = result.effect
    order = np.argsort(-np.nan_to_num(np.abs(eff), nan=-1.0), axis=None)[:5]
    cells = []
    for k in order:
        idx = np.unravel_index(k, eff.shape)
        name = " ".join([out["rows"][idx[0]], str(out["cols"][idx[1]])] + [f"pos {i}" for i in idx[2:]])
        cells.append(f"{name}: {eff[idx]:+.3f}")
    print(f"{out['site']} ({out['method']}): largest effects " + "; ".join(cells))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def add_patch(sub) -> None:
    p = sub.add_parser("patch", help="activation / attribution / path patching of a clean and a corrupted input",
                       description="Which components carry the answer: patch each one from the clean run into the "
                                   "corrupted run and measure how much of the answer comes back.",
                       epilog=PATCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="atlas-lm", help="a decoder, an encoder-decoder or a masked LM (default atlas-lm)")
    p.add_argument("--clean", required=True, help="the clean input (masked LMs: with [MASK] where the answer goes)")
    p.add_argument("--corrupt", required=True, help="the corrupted input: the same number of tokens")
    p.add_argument("--target", help="answer word (default: top prediction on the clean input; first token of a "
                                    "multi-token word)")
    p.add_argument("--foil", help="foil word (default: top prediction on the corrupted input; first token)")
    p.add_argument("--prefix", help="encoder-decoders: the decoder's text before the answer (default: the clean "
                                    "output up to where the two outputs differ)")
    p.add_argument("--site", default="head", choices=SITES, help="what to patch (default head)")
    p.add_argument("--stack", choices=["encoder", "decoder", "cross"],
                   help="which stack (default: the model's own; encoder-decoders: decoder for the stream sites, "
                        "cross for head sites)")
    p.add_argument("--method", default="exact", choices=["exact", "atp"], help="exact patching or attribution "
                                                                               "patching (default exact)")
    p.add_argument("--path", choices=["q", "k", "v"], help="path patching into the receivers' q, k or v instead")
    p.add_argument("--receivers", type=_receivers, help="path patching receivers, e.g. L2H3,L3H0 (default: every head after layer 0)")
    p.add_argument("--json", action="store_true", help="print JSON (keys below)")
    p.add_argument("--out", type=output_file, help="also write the arrays to this .npz file")
    add_device_args(p)
    p.set_defaults(func=_patch)
