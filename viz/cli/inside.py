"""`python -m viz inside`: one query token through one head and the whole layer, as JSON (see `INSIDE_KEYS`)."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

INSIDE_KEYS = """\
output keys (--json; vectors are lists of floats; `mask` uses null for -inf):
  model, stack, layer, head, token   what was walked (a negative --layer/--token resolved to its index)
  query_token                      the query token (a decoder token for --stack decoder or cross)
  tokens            [key]          the key tokens (source tokens for cross-attention)
  kv_head                          the key/value head this query head reads (grouped-query attention)
  query             [head_dim]     q as the attention function received it (after RoPE for rotary models)
  keys, values      [key, head_dim]  k_i and v_i of that kv head (keys after RoPE)
  raw_scores        [key]          q . k_i * scaling
  bias              [key] | null   T5's relative position bias, added to the scores
  scores            [key]          softcap(raw_scores) + bias: the logits before the mask
  mask              [key]          0 = may attend, null = -inf (padding, causal look-ahead, sliding window)
  weights           [key]          softmax(scores + mask); equals the model's own attention row
  head_output       [head_dim]     sum_i weights_i * v_i
  contribution      [d_model]|null head_output through this head's rows of the output projection (no bias)
  scaling, softcap                 s in q . k * s; c in c * tanh(score / c) (null: no soft-cap)
  weight_error                     max |weights - the model's captured attention row|
  projected_scores  [key] | null   q . k_i * scaling recomputed from the layer input through the model's own
                                   norm, W_q, W_k and RoPE (null where the family's layer is not described)
  projection_error                 max |projected_scores - raw_scores| over the keys not masked
  recomposition_error              max |our recomposed layer output - the model's hidden state| at the token
                                   (null: the layer walk is not available for this family; see `note`)
  layer_steps       [step]         the layer walk: {label, kind, sublayer, norm}; kind is input | norm |
                                   attention | ffn | add | add_norm | output | final
  layer_output      [d_model]      our recomposed hidden state (after the final norm on the last layer)
  model_hidden_state [d_model]     the model's hidden_states[layer + 1] at the token
  final_modules     [name]         final modules applied after the last layer (hidden_states[-1] comes after them)
  note                             why the layer walk is not available, else null
--npz PATH writes the same vectors plus products [key, head_dim] (q * k_i), weighted_values
[key, head_dim], model_weights [key], head_contributions [head, d_model] and step_vectors [step, d_model]."""


def _inside(args) -> int:
    from viz.core.capture import CaptureError
    from viz.cli.common import load_for
    from viz.inside.walk import head_walk, inside, to_arrays, to_json
    from viz.core.models import ModelLoadError

    try:
        bundle = load_for(args)
        run = inside(bundle, args.text, args.target, stack=args.stack, layer=args.layer, token=args.token)
        walk = head_walk(run, args.head)
    except (ModelLoadError, CaptureError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if run.cap.truncated:
        print(f"warning: text truncated from {run.cap.n_input_tokens} to {len(run.cap.tokens)} tokens", file=sys.stderr)
    if args.npz:
        np.savez_compressed(args.npz, **to_arrays(run, walk))
    if args.json:
        print(json.dumps(to_json(run, walk), ensure_ascii=False))
        return 0
    print(f"{run.stack} layer {run.layer} head {walk.head}: query {walk.query_token!r} ({walk.token}), "
          f"scaling {walk.scaling:.4g}, kv head {walk.kv_head}")
    for i in np.argsort(-walk.weights)[:8]:
        print(f"  {walk.tokens[i]:>14s} ({i:3d})  score {walk.scores[i]:8.3f}  weight {walk.weights[i]:.3f}")
    print(f"weights vs the model: {walk.weight_error:.1e}")
    if walk.projection_error is not None:
        print(f"scores from W_q/W_k vs ours: {walk.projection_error:.1e}")
    lw = run.layer_walk
    if lw is None:
        print(run.layer_note)
    else:
        for s in lw.steps:
            print(f"  {s.label:<24s} |v| {s.norm:9.4f}  {s.detail}")
        print(f"recomposition error: {lw.recomposition_error:.1e}")
    return 0


def add_inside(sub) -> None:
    p = sub.add_parser("inside", help="one token through one head and the whole layer, with the real numbers",
                       description="Walk the query token TOKEN through head HEAD of layer LAYER: q, every k_i and "
                                   "v_i, the scores, the mask, the softmax, the head output; then the whole layer "
                                   "recomposed from the model's own modules and compared with its hidden state.",
                       epilog=INSIDE_KEYS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", help="bundled name (minilm, tiny-llama, ...), HF id or local folder")
    p.add_argument("--text", required=True, help="input text (source text for encoder-decoders)")
    p.add_argument("--target", default=None, help="decoder text for encoder-decoders (teacher forcing); "
                                                   "default: the model's own greedy output")
    p.add_argument("--stack", default=None, choices=["encoder", "decoder", "cross"],
                   help="which attention: encoder (self), decoder (masked self) or cross; default: the model's first")
    p.add_argument("--layer", type=int, default=0, help="layer index (negative: from the end); default 0")
    p.add_argument("--head", type=int, default=0, help="query head index; default 0")
    p.add_argument("--token", type=int, default=-1, help="query position (negative: from the end); default -1")
    p.add_argument("--json", action="store_true", help="print the JSON described below instead of a summary")
    p.add_argument("--npz", default=None, help="also write every vector to this .npz file")
    from viz.cli.common import add_device_args

    add_device_args(p)
    p.set_defaults(func=_inside)
