"""`python -m viz routes`: contributions of every sublayer's parts and the route to one token, as JSON."""

from __future__ import annotations

import argparse
import json

import numpy as np

from viz.cli.common import add_device_args, float_range, int_range, load_for

ROUTES_KEYS = """\
Contributions (Ferrando & Voita 2024, the definition llm-transparency-tool draws with): a sublayer's result y
(the residual stream right after its add, before a post-LN norm) is a sum of parts; part z's share is
max(eps, |y|_1 - |y - z|_1) normalised over the parts (eps = 1e-5), so every y's shares sum to 1.
Attention parts: for every head h and key j, alpha_ij^h * v_j^h * W_O^h (no output bias), plus the residual
that entered. Feed-forward parts: its output and the residual that entered.

output keys (--json; numbers rounded to --digits):
  model, stack, token, threshold   what was asked (a negative --token resolved to its index)
  tokens            [token]                  the stack's tokens (decoder tokens for --stack decoder)
  layers, heads                              L blocks, H heads of the stack
  attention         [layer][token][key][head]  share of head h's part from key j in token i's y after the
                                             (masked) self-attention of that layer
  residual_attention [layer][token]          share of the residual entering that attention
  ffn               [layer][token]           share of the feed-forward's output in y after it
  residual_ffn      [layer][token]           share of the residual entering the feed-forward
  cross, residual_cross  (decoders of encoder-decoders) the same for cross-attention; keys are encoder tokens
  encoder_tokens    [key]                    (encoder-decoders) the keys of `cross`
  edges             [edge]                   the route to --token: edges over --threshold, followed back
                                             from its last representation; each edge is
      {from: [layer, token], to: [layer, token], weight, kind, stack, from_site, to_site[, from_stack][, heads]}
      kind       attention | residual_attention | cross | residual_cross | ffn | residual_ffn
      site       in: the stream entering block `layer` (layer = L: the last block's output);
                 attn / cross: right after block `layer`'s self- / cross-attention
      weight     the share (attention, cross: summed over heads; `heads` lists each head's share)
      stack      the stack of the `to` node; from_stack: "encoder" on cross edges (from the encoder's output)
  decomposed        {stack: [rows per layer]}   how many tokens the route decomposed in each block"""


def _round(a: np.ndarray, digits: int):
    return np.round(a.astype(np.float64), digits).tolist()


def routes_json(parts: dict, stack: str, token: int, threshold: float, digits: int = 5) -> dict:
    """The `--json` document (keys in ROUTES_KEYS)."""
    from viz.causal.routes import route, table

    p = parts[stack]
    r = route(parts, stack, token, threshold)
    out = {"model": p.bundle.name, "stack": stack, "token": r.token, "threshold": threshold, "tokens": p.tokens,
           "layers": p.n_layers, "heads": p.n_heads}
    for key, value in table(p).items():
        out[key] = _round(value, digits)
    if "cross" in out:
        out["encoder_tokens"] = p.key_tokens("cross")
    out["edges"] = r.to_json()
    out["decomposed"] = r.decomposed
    return out


def _routes(args) -> int:
    from viz.causal.routes import default_stack, route
    from viz.causal.routes_parts import decompose
    from viz.core.errors import CaptureError

    bundle = load_for(args)
    stack = args.stack or default_stack(bundle.kind)
    if stack not in bundle.arch.stacks:
        raise CaptureError(f"'{bundle.name}' is {'an' if bundle.kind[0] == 'e' else 'a'} {bundle.kind}: it has no "
                          f"{stack} stack (use --stack {default_stack(bundle.kind)}).")
    parts = decompose(bundle, args.text, args.target)
    T = parts[stack].hidden.shape[1]
    if not -T <= args.token < T:
        raise CaptureError(f"There is no token {args.token}: this input has {T} tokens (0 to {T - 1}, or -1 for the "
                          "last).")
    if args.json:
        print(json.dumps(routes_json(parts, stack, args.token, args.threshold, args.digits), ensure_ascii=False))
        return 0
    r = route(parts, stack, args.token, args.threshold)
    toks = r.tokens
    print(f"{bundle.name} · {stack} · route to {toks[stack][r.token]!r} ({r.token}) at threshold {args.threshold}: "
          f"{len(r.to_json())} edges; tokens decomposed per block {r.decomposed[stack]}")
    for e in sorted((e for e in r.edges if e.kind in ("attention", "cross")), key=lambda e: -e.weight)[:15]:
        head = int(np.argmax(e.heads))
        print(f"  L{e.dst.layer} {e.kind:9s} {toks[e.src.stack][e.src.token]!r:>14s} ({e.src.token}) -> "
              f"{toks[e.dst.stack][e.dst.token]!r} ({e.dst.token})  {e.weight:.3f}  (most through H{head}: "
              f"{e.heads[head]:.3f})")
    return 0


def add_routes(sub) -> None:
    p = sub.add_parser("routes", help="contribution routes: which heads and blocks carry information to a token",
                       description="Split every sublayer's result into its parts (each head's move from each key "
                                   "token, the feed-forward, the residual), give each part's share, and follow the "
                                   "route to one token back through every layer (Ferrando & Voita 2024).",
                       epilog=ROUTES_KEYS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", help="a model name, tiny-<family>, a folder, ... (default minilm)")
    p.add_argument("--text", required=True, help="the input text (an encoder-decoder's source)")
    p.add_argument("--target", default=None, help="encoder-decoders: the target, teacher-forced (default: the "
                                                   "model's own greedy output)")
    p.add_argument("--token", type=int, default=-1, help="the token whose route is followed (default -1: the last)")
    p.add_argument("--threshold", type=float_range(0.0, 1.0, hi_open=True), default=0.04,
                   help="edges with a share over this are kept (default 0.04, llm-transparency-tool's)")
    p.add_argument("--stack", choices=["encoder", "decoder"], default=None,
                   help="whose tokens: default the decoder of decoders and encoder-decoders, the encoder of encoders")
    p.add_argument("--digits", type=int_range(1, 12), default=5, help="decimals in the JSON (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON (keys below)")
    add_device_args(p)
    p.set_defaults(func=_routes)
