"""`python -m viz capture`: attentions and hidden states of one text to an .npz file."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from viz.cli.common import add_device_args, index_list, load_for, output_file


CAPTURE_KEYS = """\
output keys (numpy .npz):
  tokens                    [token]                         input (encoder / decoder-only) tokens
  input_ids                 [token]                         their ids in the model's vocabulary
  special                   [token] bool                    special tokens ([CLS], [SEP], </s>, padding)
  word_spans                [word, 2]                       [start, end) of each word's pieces
  target_tokens             [target]                        decoder input tokens (encoder-decoder only)
  encoder_attentions        [layer, head, token, token]     encoder self-attention (encoders, enc-dec)
  encoder_hidden_states     [layer+1, token, dim]           embeddings first
  decoder_attentions        [layer, head, target, target]   masked self-attention (decoders, enc-dec)
  decoder_hidden_states     [layer+1, target, dim]
  cross_attentions          [layer, head, target, token]    decoder -> encoder (enc-dec only)
  <stack>_queries           [layer, head, row, head_dim]    queries as the attention function received them
                                                            (after RoPE for rotary models)
  <stack>_keys|values       [layer, kv_head, token, head_dim]  keys/values at the model's own kv-head count
  <stack>_kv_heads          [head]                          kv head each query head reads (grouped-query
                                                            attention; arange(head) otherwise)
  <stack>_first_share       [layer, head]                   mean attention on the first token over rows >= 1
                                                            (the "attention sink" share)
  <stack>_layers            [layer]                         which model layer each slice is (--layers)
  <stack>_rows              [row]                           which query position each row is (--rows)
Decoder-only models (GPT-2, Llama, ...) use the decoder_* keys with `tokens` on both axes.
With --layers/--rows the attention arrays are [len(layers), head, len(rows), token] and hidden
states [layer+1, len(rows), dim] (every layer, chosen rows). Rows of every attention matrix sum to 1."""


def _capture(args) -> int:
    from viz.core.capture import CaptureError, capture, to_arrays
    from viz.core.models import ModelLoadError

    try:
        bundle = load_for(args)
        cap = capture(bundle, args.text, args.target, layers=args.layers, rows=args.rows)
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
    p.add_argument("--out", required=True, type=output_file,
                   help="output .npz path (its folder must exist; checked before the model runs)")
    p.add_argument("--layers", type=index_list, default=None,
                   help="attention layers to keep: 'all' (default) or indices like 0,5,-1 (negative: from the end)")
    p.add_argument("--rows", type=index_list, default=None,
                   help="query positions to keep: 'all' (default) or indices like -1 (the last token)")
    add_device_args(p)
    p.set_defaults(func=_capture)
