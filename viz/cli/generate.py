"""`python -m viz generate`: greedy, sampled or beam generation with per-step attention (decoders and
encoder–decoders)."""

from __future__ import annotations

import sys

from viz.cli.common import add_device_args, float_range, int_range, load_for, positive_float, positive_int


seed_int = int_range(0, 2**63 - 1)  # a random seed
temperature = positive_float  # a sampling temperature (1 = the model's own)
top_p = float_range(0.0, 1.0, lo_open=True)  # a nucleus-sampling mass (1 = no cut)


def generate_method(args) -> tuple[str, int]:
    """(method, beams) from --method/--num-beams, or a ValueError saying which flags clash."""
    beams = args.num_beams
    method = args.method or ("beam" if beams and beams > 1 else "greedy")
    if method == "beam":
        beams = 4 if beams is None else beams
        if beams < 2:
            raise ValueError("beam search needs --num-beams 2 or more")
    elif beams not in (None, 1):
        raise ValueError(f"--num-beams {beams} needs --method beam (or no --method)")
    sampling = [f for f, v in (("--temperature", args.temperature), ("--top-p", args.top_p), ("--seed", args.seed))
                if v is not None]
    if sampling and method != "sample":
        raise ValueError(f"{', '.join(sampling)} only {'apply' if len(sampling) > 1 else 'applies'} to --method sample")
    return method, beams or 1


def _generate(args) -> int:
    import json

    from viz.core.capture import CaptureError
    from viz.tasks.encdec import generate
    from viz.core.models import ModelLoadError

    try:
        method, beams = generate_method(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        bundle = load_for(args)
        if bundle.kind == "decoder":
            return _generate_lm(args, bundle, method, beams)
        if bundle.kind == "encoder":
            raise CaptureError(f"'{bundle.name}' is an encoder model: it does not generate. Pick a decoder (e.g. "
                               "tiny-llama, tiny-gpt2) or an encoder–decoder (e.g. tiny-bart), or use the Attention page.")
        if method == "sample":
            raise CaptureError("--method sample is for decoder-only models; encoder–decoders take greedy or beam.")
        gen = generate(bundle, args.text, method, num_beams=beams, max_new_tokens=args.max_new_tokens,
                       top_k=args.top_k)
    except (ModelLoadError, CaptureError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if gen.truncated:
        print(f"warning: source truncated from {gen.n_source_tokens} to {len(gen.source_tokens)} tokens",
              file=sys.stderr)
    if args.json:
        print(json.dumps(gen.to_json()))
        return 0
    print("source:", " ".join(gen.source_tokens))
    print("output:", " ".join(gen.output_tokens))
    for s in gen.steps:
        cross = s.cross[-1].mean(axis=0)
        j = int(cross.argmax())
        print(f"{s.index:3d} {s.token:>14s} p={s.prob:.3f}{' (forced)' if s.forced else ''}  "
              f"most attended source: {gen.source_tokens[j]} ({cross[j]:.2f})")
    return 0


def _generate_lm(args, bundle, method: str, beams: int) -> int:
    """Decoder-only generation (viz.tasks.generate_lm): the encoder–decoder JSON plus attention and lens ranks."""
    import json

    from viz.tasks.generate_lm import generate_lm

    gen = generate_lm(bundle, args.text, method, max_new_tokens=args.max_new_tokens, top_k=args.top_k,
                      temperature=1.0 if args.temperature is None else args.temperature,
                      top_p=1.0 if args.top_p is None else args.top_p, seed=args.seed or 0, num_beams=beams)
    if args.json:
        print(json.dumps(gen.to_json()))
        return 0
    print("prompt:", " ".join(gen.prompt_tokens))
    print("output:", " ".join(gen.output_tokens))
    for b in gen.beams:
        print(f"beam score {b.score:8.4f} log p {b.log_prob:9.4f}: {' '.join(b.tokens)}")
    for s in gen.steps:
        att = s.attention[-1].mean(axis=0)
        j = int(att.argmax())
        lens = "" if s.lens_rank is None else "  lens rank by layer: " + " ".join(str(int(r)) for r in s.lens_rank)
        print(f"{s.index:3d} {s.token:>14s} p={s.prob:.3f}{' (forced)' if s.forced else ''}  "
              f"most attended: {gen.tokens[j]} ({att[j]:.2f}){lens}")
    return 0


def add_generate(sub) -> None:
    p = sub.add_parser(
        "generate", help="generate step by step (decoders, encoder-decoders) and print what each step attended to",
        description="Generate from TEXT one token at a time and report, per step, the token, its top-k "
                    "probabilities and what it attended to: the cross-attention over the source "
                    "(encoder-decoders) or the attention over the context and a logit lens (decoder-only models).",
        epilog="--json prints {source_tokens, output_tokens, finished, steps: [{token, prob, forced, "
               "cross_attention: [one weight per source token: last layer, mean over heads], "
               "top_k: [{token, prob}]}]}. Decoder-only models: source_tokens is the prompt and each step has, "
               "instead of cross_attention, attention: [one weight per context token (prompt and earlier output): "
               "last layer, mean over heads] and lens_rank: [rank of the token under the logit lens of each "
               "layer, embeddings first; 1 = top]; plus settings {max_new_tokens, do_sample, temperature, top_p, "
               "seed, num_beams, beam, rules}, and with --method beam, beams: [{tokens, score, log_prob, "
               "token_logprobs, finished}] best first (score = log_prob / length ** length_penalty).")
    p.add_argument("--model", default="tiny-bart",
                   help="a decoder (tiny-llama, tiny-gpt2, ...) or an encoder-decoder (seq2seq-dates, tiny-t5, "
                        "tiny-bart, ...)")
    p.add_argument("--text", required=True, help="source text (encoder-decoders) or prompt (decoders)")
    p.add_argument("--max-new-tokens", type=positive_int, default=20, 
                   help="longest output (default 20; at most what the decoder's positions allow)")
    p.add_argument("--method", choices=("greedy", "sample", "beam"), default=None,
                   help="greedy (default), sample (decoders) or beam; without it --num-beams > 1 means beam")
    p.add_argument("--num-beams", type=positive_int, default=None,
                   help="beams for beam search (default 4 with --method beam; 1 = greedy)")
    p.add_argument("--temperature", type=temperature, default=None, help="sampling temperature > 0 (default 1)")
    p.add_argument("--top-p", type=top_p, default=None, dest="top_p",
                   help="nucleus sampling: keep the smallest set of tokens with this probability mass (default 1)")
    p.add_argument("--seed", type=seed_int, default=None, help="random seed for sampling (default 0)")
    p.add_argument("--top-k", type=positive_int, default=5, help="next-token candidates to report per step")
    p.add_argument("--json", action="store_true", help="machine-readable output (see below)")
    add_device_args(p)
    p.set_defaults(func=_generate)
