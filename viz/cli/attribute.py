"""`python -m viz attribute`: input attributions of one prediction, side by side with attention, and their
faithfulness (viz.causal.attribution)."""

from __future__ import annotations

import argparse

from viz.cli.common import add_device_args, load_for, positive_int

DESCRIPTION = """\
Attribute one prediction to the input tokens with every method, and (--faithfulness) score each method by what
happens to the prediction when its top tokens are removed.

The prediction:
  masked LM        the token at the text's [MASK] (or at --position, which is then masked)
  decoder          the next token after --position (default: the last token); later tokens are cut off
  encoder-decoder  output token number --position (default 0) of the model's greedy output, given the source;
                   attributions are over the source tokens
  target           --target (one token of the vocabulary; a decoder's word is read after a space, 'Ġword'),
                   default: the model's own top prediction; --foil makes it contrastive

The function every method explains:
  f(x) = log p(target | x)                  (log-softmax of the model's logits at the predicting position)
  f(x) = logit(target) - logit(foil)        with --foil

The replacement token (occlusion, the integrated-gradients baseline, faithfulness removals): the mask token for a
masked LM, else the pad token, else the end-of-text token; positions and the attention mask are kept. Candidates
(what may be removed or ranked): tokens that are not special, not the predicting mask, not already the
replacement token; the others score 0 under occlusion and integrated gradients.

Methods (--methods, comma-separated; default all):
{methods}

Faithfulness (--faithfulness; DeYoung et al. 2020, ERASER): with m(x) = p(target | x) (or p(target) - p(foil)),
a method's ranking of the candidates (highest score first) and k = min(n, max(1, ceil(q n))) for q in 1, 5, 10,
20 and 50 % of the n candidates:
  comprehensiveness = mean over q of m(x) - m(x without the top k)        (higher is more faithful)
  sufficiency       = mean over q of m(x) - m(x keeping only the top k)   (lower is more faithful)
  random            the same for random rankings (numpy default_rng(seed), seeds 0..--seeds-1): the mean, and
                    its spread (std, min, max) over seeds
  agreement         Kendall's tau-b (scipy.stats.kendalltau) between two methods' scores over the candidates
"""

EPILOG = """\
JSON (--json): {"tokens": [...], "target": str, "foil": str|null, "position": int, "f": f(x),
"predicted": the model's top token, "replacement": str, "special": [bool], "candidates": [bool],
"scores": {method: [one per input token]}, "completeness_gap": |Σ IG - (f(x) - f(baseline))| or null,
"integrated_gradients": {"steps", "f_baseline", "relative_gap"}, "faithfulness": {method: {"comprehensiveness",
"sufficiency"}} or null, "random": {"comprehensiveness", "sufficiency", "seeds", "spread": {...}} or null,
"m": m(x), "fractions": [...], "removed": [k per fraction], "agreement": {method: {method: tau}},
"notes": {method: why its scores are null}, "output_tokens": [...] (encoder-decoders)}. NaN is written as null.
"""


def _methods(value: str) -> tuple[str, ...]:
    from viz.causal.attribution_catalog import AttributionError, parse_methods

    try:
        return parse_methods(value)
    except AttributionError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _table(res) -> str:
    p, names = res.problem, list(res.scores)
    width = max(8, *(len(t) for t in p.tokens)) + 2
    lines = [f"target {p.target!r}" + (f" vs foil {p.foil!r}" if p.foil else "") + f" at position {p.position}, "
             f"f = {res.f:.4f}" + (f", output {' '.join(p.output_tokens)}" if p.output_tokens else ""),
             "token".ljust(width) + "".join(n[:14].rjust(15) for n in names)]
    for i, t in enumerate(p.tokens):
        mark = "" if p.candidates[i] else " ·"
        lines.append((t + mark).ljust(width) + "".join(f"{res.scores[n][i]:15.4f}" for n in names))
    if res.ig is not None:
        lines.append(f"integrated gradients: {res.ig.steps} steps, completeness gap {res.ig.gap:.2e} "
                     f"({res.ig.relative_gap:.2%} of f(x) - f(baseline))")
    fr = res.faithfulness
    if fr is not None:
        lines.append(f"faithfulness (m = {fr.m_input:.4f}; AOPC over {', '.join(f'{q:.0%}' for q in fr.fractions)}):")
        lines.append("method".ljust(24) + "comprehensiveness".rjust(19) + "sufficiency".rjust(13))
        for n, v in fr.methods.items():
            lines.append(n.ljust(24) + f"{v.comprehensiveness:19.4f}{v.sufficiency:13.4f}")
        sc, ss = fr.random_spread("comprehensiveness"), fr.random_spread("sufficiency")
        lines.append(f"{'random':<24}{sc['mean']:19.4f}{ss['mean']:13.4f}   (± {sc['std']:.4f} / {ss['std']:.4f} "
                     f"over {len(fr.random_runs)} seeds)")
    return "\n".join(lines)


def _attribute(args) -> int:
    import json

    from viz.causal.attribution import attribute

    bundle = load_for(args)
    res = attribute(bundle, args.text, target=args.target, foil=args.foil, position=args.position,
                    methods=args.methods, with_faithfulness=args.faithfulness, ig_steps=args.steps, seeds=args.seeds)
    if args.json:
        print(json.dumps(res.to_json(), ensure_ascii=False))
    else:
        print(_table(res))
    return 0


def add_attribute(sub) -> None:
    import textwrap

    from viz.causal.attribution_catalog import DEFAULT_METHODS, IG_STEPS, METHODS, RANDOM_SEEDS

    methods = "\n".join(textwrap.fill(m.definition, 116, initial_indent=f"  {m.name:<22}", subsequent_indent=" " * 24)
                        for m in METHODS.values())
    p = sub.add_parser("attribute", help="attributions of one prediction, scored for faithfulness",
                       description=DESCRIPTION.format(methods=methods), epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm-mlm", help="a masked LM, a decoder or an encoder-decoder "
                   "(default: minilm-mlm)")
    p.add_argument("--text", required=True, help="the input (masked LMs: with one [MASK], or give --position)")
    p.add_argument("--target", help="the token to explain (default: the model's prediction)")
    p.add_argument("--foil", help="a contrast token: f becomes logit(target) - logit(foil)")
    p.add_argument("--position", type=int, help="masked LM: the mask (or the token to mask); decoder: the last "
                   "context token (default -1); encoder-decoder: the output step (default 0)")
    p.add_argument("--methods", type=_methods, default=DEFAULT_METHODS,
                   help=f"comma-separated, default all: {','.join(DEFAULT_METHODS)}")
    p.add_argument("--faithfulness", action="store_true", help="score comprehensiveness and sufficiency")
    p.add_argument("--steps", type=positive_int, default=IG_STEPS,
                   help=f"integrated-gradients steps (Gauss-Legendre, all in one batch; default {IG_STEPS})")
    p.add_argument("--seeds", type=positive_int, default=RANDOM_SEEDS,
                   help=f"random rankings for the baseline (default {RANDOM_SEEDS})")
    p.add_argument("--json", action="store_true", help="print JSON (keys below) instead of a table")
    add_device_args(p)
    p.set_defaults(func=_attribute)
