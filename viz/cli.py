"""`python -m viz ...`: the same captures the pages use, without a browser.

Subcommands register themselves through small `add_<name>(subparsers)` functions so each
issue's command lives beside its code; the contracts (flags, output keys) are stable.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

CAPTURE_KEYS = """\
output keys (numpy .npz):
  tokens                    [token]                         input (encoder / decoder-only) tokens
  special                   [token] bool                    special tokens ([CLS], [SEP], </s>, padding)
  word_spans                [word, 2]                       [start, end) of each word's pieces
  target_tokens             [target]                        decoder input tokens (encoder-decoder only)
  encoder_attentions        [layer, head, token, token]     encoder self-attention (encoders, enc-dec)
  encoder_hidden_states     [layer+1, token, dim]           embeddings first
  decoder_attentions        [layer, head, target, target]   masked self-attention (decoders, enc-dec)
  decoder_hidden_states     [layer+1, target, dim]
  cross_attentions          [layer, head, target, token]    decoder -> encoder (enc-dec only)
  <stack>_queries|keys|values [layer, head, token, head_dim] per-head projections from forward hooks
Decoder-only models (GPT-2) use the decoder_* keys with `tokens` on both axes.
Rows of every attention matrix sum to 1."""


def _capture(args) -> int:
    from viz.capture import CaptureError, capture, to_arrays
    from viz.models import ModelLoadError, load_model

    try:
        bundle = load_model(args.model)
        cap = capture(bundle, args.text, args.target)
    except (ModelLoadError, CaptureError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cap.truncated:
        print(f"warning: text truncated from {cap.n_input_tokens} to {len(cap.tokens)} tokens", file=sys.stderr)
    arrays = to_arrays(cap)
    np.savez_compressed(args.out, **arrays)
    for k, v in arrays.items():
        print(f"{k:28s} {str(v.shape):24s} {v.dtype}")
    return 0


def add_capture(sub) -> None:
    p = sub.add_parser("capture", help="capture attentions and hidden states to an .npz file",
                       description="Run TEXT through MODEL and save every head's attention.",
                       epilog=CAPTURE_KEYS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", help="bundled name (minilm, tiny-bert, ...), HF id or local folder")
    p.add_argument("--text", required=True, help="input text (source text for encoder-decoders)")
    p.add_argument("--target", default=None, help="decoder text for encoder-decoders (teacher forcing); "
                                                   "default: the model's own greedy output")
    p.add_argument("--out", required=True, help="output .npz path")
    p.set_defaults(func=_capture)


def add_train(sub) -> None:
    p = sub.add_parser("train", help="self-supervised / synthetic training that produces checkpoints")
    tsub = p.add_subparsers(dest="task", required=True)
    for name, module in (("mlm", "viz.train.mlm"), ("seq2seq", "viz.train.seq2seq")):
        try:
            mod = __import__(module, fromlist=["main"])
        except ImportError:
            continue
        tp = tsub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else None)
        mod.add_arguments(tp)
        tp.set_defaults(func=mod.main)


COMMANDS = [add_capture, add_train]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m viz", description="Attention Atlas without the browser.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from viz import quiet

    quiet()
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
