"""Step-through generation for decoder-only models: what the model looked at and what each layer
would have said, token by token (greedy, sampling or beam search).

Each step runs one forward with a KV cache (`use_cache=True`): the prompt once (recording only its
last query row: `rows=[T-1]`), then one token at a time, where the query length is 1 and the
recorder's single row *is* the new token's query. Sliding-window layers (Mistral, Gemma 2) keep only
the last keys in their cache; their row is left-padded with zeros, which is exactly what the full
causal mask gives (tests/test_generate_lm.py checks every step against one forward over the whole
sequence, for every decoder family). Only that row per layer is kept: `[layer, head, context]`.

Token choice follows `model.generate`: the same generation config (the model's own, then
transformers' defaults, then this call's settings) and the same logits processors, built by
transformers itself, on float32 logits; greedy takes their argmax, sampling draws with
`torch.multinomial` from a private generator seeded with `seed` (the global RNG of a shared server
is left alone), which gives the draws of `torch.manual_seed(seed); model.generate(do_sample=True)`.
Beam search runs `model.generate` for the beams, then steps through the chosen beam with its tokens
forced; every beam's log-probability is recomputed from the model's own logits.

Per step, the logit lens (`viz.tasks.lens`): every layer's residual stream at the query through the
model's final norm and unembedding; its last layer is the model's own distribution.

Shapes (numpy):
    LMStep.attention   [layer, head, position]     the query that predicted the token, over the context
    LMStep.lens_rank   [layer + 1]                 rank of the chosen token (1 = top), embeddings first
    LMStep.lens_prob   [layer + 1]                 its probability under each layer's lens
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from viz.core.arch import DECODER
from viz.core.capture import CaptureError, _check_text, recording
from viz.tasks.lens import LensUnavailable, chosen_rank, lens_logits, lens_parts
from viz.core.models import REPO_ROOT, ModelBundle

METHODS = ("greedy", "sample", "beam")
MAX_BEAMS = 8
REPO_MODELS = REPO_ROOT / "models"


@dataclass
class LMStep:
    """One generated token: the query that produced it, its attention, top-k and logit lens."""

    index: int
    position: int  # where the token lands: the context is tokens[:position]
    query_token: str  # the last context token, whose query row this step shows
    token: str
    token_id: int
    prob: float  # the model's probability of `token` (softmax of the raw logits)
    logprob: float  # its natural log (beam scores add these)
    top_k: list[tuple[str, float]]  # the model's k most likely next tokens, raw softmax
    forced: bool  # greedy: a generation rule (not the argmax) chose the token
    attention: np.ndarray  # [layer, head, position]
    lens_top: list[list[tuple[str, float]]] = field(default_factory=list)  # [layer + 1][k]
    lens_rank: np.ndarray | None = None  # int [layer + 1]
    lens_prob: np.ndarray | None = None  # [layer + 1]


@dataclass
class Beam:
    """One hypothesis of beam search, best first in `LMGeneration.beams` (the fields of
    `viz.tasks.encdec.Beam` for encoder–decoders, plus its ids and whether it ended)."""

    tokens: list[str]
    ids: list[int]
    token_logprobs: list[float]  # the model's own log p of each token, given the prompt and the beam before it
    score: float  # what beam search ranks by: sum of log p / length ** length_penalty
    finished: bool  # ended on an end-of-sequence token

    @property
    def log_prob(self) -> float:
        return float(sum(self.token_logprobs))


@dataclass
class LMGeneration:
    model_name: str
    method: str  # greedy | sample | beam
    prompt_tokens: list[str]
    prompt_ids: list[int]
    steps: list[LMStep]
    finished: bool
    settings: dict  # what chose the tokens: temperature, top_p, seed, num_beams, beam, rules
    beams: list[Beam] = field(default_factory=list)
    lens_gap: float | None = None  # max |last layer's lens - model logits| over steps; None: no lens
    lens_note: str = ""  # why there is no lens
    special_ids: set = field(default_factory=set)

    @property
    def output_tokens(self) -> list[str]:
        return [s.token for s in self.steps]

    @property
    def tokens(self) -> list[str]:
        """Prompt and generated tokens: step i's context is `tokens[:steps[i].position]`."""
        return self.prompt_tokens + self.output_tokens

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + [s.token_id for s in self.steps]

    def to_json(self, digits: int = 6) -> dict:
        """`python -m viz generate --json` for decoders: the encoder–decoder keys (the prompt as
        `source_tokens`, no cross-attention) plus, per step, `attention` (last layer, mean over heads,
        one weight per context token) and `lens_rank`; `settings`, and for beam search `beams` (the
        encoder–decoder keys tokens, score, log_prob, token_logprobs, plus finished)."""
        r = lambda x: round(float(x), digits)  # noqa: E731
        out = {
            "model": self.model_name, "method": self.method,
            "source_tokens": list(self.prompt_tokens), "output_tokens": self.output_tokens,
            "finished": self.finished,
            "steps": [{"token": s.token, "prob": r(s.prob), "forced": s.forced,
                       "attention": [r(w) for w in s.attention[-1].mean(axis=0)],
                       "top_k": [{"token": t, "prob": r(p)} for t, p in s.top_k],
                       **({"lens_rank": [int(x) for x in s.lens_rank]} if s.lens_rank is not None else {})}
                      for s in self.steps],
            "settings": self.settings,
        }
        if self.beams:
            out["beams"] = [{"tokens": b.tokens, "score": r(b.score), "log_prob": r(b.log_prob),
                             "token_logprobs": [r(x) for x in b.token_logprobs], "finished": b.finished}
                            for b in self.beams]
        return out


# ----------------------------------------------------------------------------- helpers
def require_decoder(bundle: ModelBundle) -> None:
    if bundle.kind != "decoder":
        raise CaptureError(
            f"'{bundle.name}' is {'an' if bundle.kind[0] == 'e' else 'a'} {bundle.kind} model, not a decoder-only "
            "language model. Pick a decoder (e.g. tiny-llama, tiny-gpt2) here; encoder–decoders step through "
            "generation on the Encoder–decoder page.")


def prompt_ids(bundle: ModelBundle, text: str) -> list[int]:
    """The prompt as the model reads it. A prompt is text to continue, so an end-of-sequence or separator
    token the tokenizer appends (BERT-style `[SEP]`) is dropped; a leading start token stays."""
    text = _check_text(text, "prompt")
    tok = bundle.tokenizer
    ids = tok(text)["input_ids"]
    special = set(tok.all_special_ids)
    while len(ids) > 1 and ids[-1] in special and ids[-1] != tok.bos_token_id:
        ids = ids[:-1]
    return ids


def generation_config(bundle: ModelBundle, n_prompt: int, max_new: int, **settings):
    """What `model.generate(**settings)` would use: the model's config, transformers' defaults, `settings`
    (a private copy: the shared model's config is never changed), with its special tokens as tensors."""
    model = bundle.model
    gc, _ = model._prepare_generation_config(None, max_new_tokens=max_new, **settings)
    model._prepare_special_tokens(gc, True, device=bundle.device)
    gc.max_length = max_new + n_prompt  # as generate's _prepare_generated_length
    if gc.min_new_tokens is not None:
        gc.min_length = gc.min_new_tokens + n_prompt
    return gc


def _processors(bundle: ModelBundle, gc, ids: torch.Tensor):
    return bundle.model._get_logits_processor(gc, input_ids_seq_length=ids.shape[1], encoder_input_ids=ids,
                                              device=ids.device, model_kwargs={})


def describe_rules(procs) -> list[str]:
    """The logits processors in words: 'TopK(top_k=50)', 'Temperature(temperature=0.7)'."""
    out = []
    for p in procs:
        name = type(p).__name__.replace("LogitsWarper", "").replace("LogitsProcessor", "")
        args = [f"{k}={v:g}" for k, v in vars(p).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and k not in ("min_tokens_to_keep", "filter_value")]
        out.append(f"{name}({', '.join(args)})")
    return out


def _eos(gc) -> set[int]:
    t = getattr(gc, "_eos_token_tensor", None)
    return set() if t is None else set(t.flatten().tolist())


def _top_k(tok, probs: torch.Tensor, k: int) -> list[tuple[str, float]]:
    p, i = probs.topk(min(k, probs.shape[-1]))
    return list(zip(tok.convert_ids_to_tokens(i.tolist()), [float(x) for x in p]))


def _context_rows(rec, n: int) -> np.ndarray:
    """Recorded [1, head, 1, keys] per layer -> [layer, head, n]. A sliding-window cache keeps only the last
    keys: the positions it dropped are left of its window, where the causal-window mask gives weight 0."""
    rows = [F.pad(a[0, :, -1].float(), (n - a.shape[-1], 0)) for a in rec.data[(DECODER, "attn")]]
    return torch.stack(rows).cpu().numpy()


# ----------------------------------------------------------------------------- the step loop
Choose = Callable[[int, torch.Tensor, torch.Tensor], int]  # (step, sequence [1, n], logits [vocab]) -> token id


def _steps(bundle: ModelBundle, ids: list[int], max_new: int, choose: Choose, eos: set[int], top_k: int,
           lens: bool, greedy: bool, stop: bool = True) -> tuple[list[LMStep], float | None]:
    """Generate up to `max_new` tokens with a KV cache, recording each step's query row and lens.
    `greedy`: flag a token that is not the raw argmax as forced (a generation rule chose it)."""
    model, tok = bundle.model, bundle.tokenizer
    seq = torch.tensor([ids], device=bundle.device)
    keep = {"logits_to_keep": 1} if model._supports_logits_to_keep() else {}
    past, steps, gap = None, [], 0.0 if lens else None
    for i in range(max_new):
        n = seq.shape[1]
        plan = {"rows": {DECODER: torch.tensor([n - 1])}} if past is None else {}  # the prompt: its last row only
        with recording(bundle, qkv=False, **plan) as rec:
            out = model(input_ids=seq if past is None else seq[:, -1:], past_key_values=past, use_cache=True,
                        output_hidden_states=lens, return_dict=True, **keep)
        past = out.past_key_values
        logits = out.logits[0, -1].float()
        nxt = int(choose(i, seq, logits))
        logp = torch.log_softmax(logits, -1)
        probs = logp.exp()
        step = LMStep(i, n, tok.convert_ids_to_tokens(int(seq[0, -1])), tok.convert_ids_to_tokens(nxt), nxt,
                      float(probs[nxt]), float(logp[nxt]), _top_k(tok, probs, top_k),
                      greedy and nxt != int(logits.argmax()), _context_rows(rec, n))
        if lens:
            lg = lens_logits(bundle, [h[0, -1] for h in out.hidden_states])  # [layer + 1, vocab]
            gap = max(gap, float((lg[-1] - logits).abs().max()))
            lp = lg.softmax(-1)
            step.lens_top = [_top_k(tok, row, top_k) for row in lp]
            step.lens_rank = chosen_rank(lg, nxt).cpu().numpy()
            step.lens_prob = lp[:, nxt].cpu().numpy()
        steps.append(step)
        seq = torch.cat([seq, torch.tensor([[nxt]], device=seq.device)], dim=1)
        if stop and nxt in eos:
            break
    return steps, gap


def _greedy(procs) -> Choose:
    def choose(i, seq, logits):
        return int(procs(seq, logits[None]).argmax(-1))
    return choose


def _sampler(procs, seed: int, device) -> Choose:
    gen = torch.Generator(device=device).manual_seed(int(seed))

    def choose(i, seq, logits):
        probs = torch.softmax(procs(seq, logits[None]), dim=-1)
        return int(torch.multinomial(probs, num_samples=1, generator=gen))
    return choose


def _forced(tokens: list[int]) -> Choose:
    return lambda i, seq, logits: tokens[i]


def _token_logprobs(bundle: ModelBundle, prompt: list[int], tokens: list[int]) -> list[float]:
    """log p(token | prompt and the tokens before it) for each of `tokens`, from one forward."""
    seq = torch.tensor([prompt + tokens], device=bundle.device)
    logits = bundle.model(input_ids=seq, use_cache=False).logits[0, len(prompt) - 1: -1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens, device=seq.device)[:, None])
    return [float(x) for x in lp[:, 0]]


def _beams(bundle: ModelBundle, prompt: list[int], max_new: int, num_beams: int, eos: set[int], penalty: float):
    """The beams of `model.generate`, best first, each scored from the model's own log-probabilities."""
    seq = torch.tensor([prompt], device=bundle.device)
    out = bundle.model.generate(input_ids=seq, attention_mask=torch.ones_like(seq), max_new_tokens=max_new,
                                num_beams=num_beams, num_return_sequences=num_beams, do_sample=False,
                                return_dict_in_generate=True, output_scores=True)
    lengths = (out.beam_indices >= 0).sum(-1).tolist()  # generated length of each beam (the rest is padding)
    tok, beams = bundle.tokenizer, []
    for row, n in zip(out.sequences.tolist(), lengths):
        ids = row[len(prompt): len(prompt) + n]
        logps = _token_logprobs(bundle, prompt, ids)
        beams.append(Beam(tok.convert_ids_to_tokens(ids), ids, logps, sum(logps) / max(1, n) ** penalty,
                          bool(ids) and ids[-1] in eos))
    return beams


# ----------------------------------------------------------------------------- entry point
def max_new_tokens_limit(bundle: ModelBundle, n_prompt: int = 1) -> int:
    """The position table bounds prompt + output."""
    return max(0, bundle.max_tokens - n_prompt)


def generate_lm(bundle: ModelBundle, prompt: str, method: str = "greedy", *, max_new_tokens: int = 20,
                top_k: int = 5, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, num_beams: int = 4,
                beam: int = 0, lens: bool = True, stop_at_eos: bool = True) -> LMGeneration:
    """Generate from `prompt` with `method` (greedy | sample | beam), recording every step.

    `stop_at_eos=False` (greedy, sample) generates past an end-of-sequence token, as a model trained on texts
    packed one after another behind that token (atlas-lm: `<|endoftext|>` before every sentence) starts the
    next one; a 60-word prompt otherwise often gave '.' and the end. The token itself stays in the steps.

    sample: `temperature`, `top_p` and `seed` (plus whatever the model's generation config adds, as in
    `model.generate`). beam: `num_beams` beams; the steps are those of beam number `beam` (0 = best).
    `lens=False` skips the logit lens. Raises CaptureError with a user-facing message.
    """
    require_decoder(bundle)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    note = ""
    if lens:
        try:
            lens_parts(bundle)
        except LensUnavailable as e:
            lens, note = False, str(e)
    with bundle.lock, torch.inference_mode():
        ids = prompt_ids(bundle, prompt)
        limit = max_new_tokens_limit(bundle, len(ids))
        if limit < 1:
            raise CaptureError(f"The prompt has {len(ids)} tokens; this model reads at most {bundle.max_tokens}, "
                               "which leaves no room to generate. Shorten the prompt.")
        max_new = max(1, min(int(max_new_tokens), limit))
        settings: dict = {"max_new_tokens": max_new}
        if method == "sample":
            settings.update(do_sample=True, temperature=float(temperature), top_p=float(top_p))
        else:
            settings.update(do_sample=False, num_beams=int(num_beams) if method == "beam" else 1)
        gc = generation_config(bundle, len(ids), max_new, **{k: v for k, v in settings.items() if k != "max_new_tokens"})
        eos = _eos(gc)
        seq = torch.tensor([ids], device=bundle.device)
        procs = _processors(bundle, gc, seq)
        beams: list[Beam] = []
        if method == "greedy":
            choose = _greedy(procs)
        elif method == "sample":
            settings["seed"] = int(seed)
            choose = _sampler(procs, seed, bundle.device)
        else:
            if not 2 <= int(num_beams) <= MAX_BEAMS:
                raise CaptureError(f"Beam search takes 2 to {MAX_BEAMS} beams, not {num_beams}.")
            beams = _beams(bundle, ids, max_new, int(num_beams), eos, float(gc.length_penalty))
            beam = min(max(int(beam), 0), len(beams) - 1)
            settings.update(beam=beam, length_penalty=float(gc.length_penalty))
            choose = _forced(beams[beam].ids)
            max_new = len(beams[beam].ids)
        settings["rules"] = describe_rules(procs)
        stop = stop_at_eos or method == "beam"
        settings["stop_at_eos"] = stop
        steps, gap = _steps(bundle, ids, max_new, choose, eos, top_k, lens, method == "greedy", stop)
    tok = bundle.tokenizer
    return LMGeneration(bundle.name, method, tok.convert_ids_to_tokens(ids), ids, steps,
                        finished=stop and steps[-1].token_id in eos, settings=settings, beams=beams, lens_gap=gap,
                        lens_note=note, special_ids=set(tok.all_special_ids))


def beam_table(gen: LMGeneration, tokenizer) -> list[dict]:
    """One row per beam for a table: where it departs from the others (beams share long prefixes), its
    whole text, log-probability and score."""
    ids = [b.ids for b in gen.beams]
    shared = 0
    while ids and all(len(x) > shared for x in ids) and len({x[shared] for x in ids}) == 1:
        shared += 1
    # numbers first, texts last: with the texts first the score column was pushed off a half-page table
    return [{"beam": i, "score": round(b.score, 4), "log p": round(b.log_prob, 4), "tokens": len(b.ids),
             "ended": b.finished, "ending": ("…" if shared else "") + tokenizer.convert_tokens_to_string(b.tokens[shared:]),
             "text": tokenizer.convert_tokens_to_string(b.tokens)}
            for i, b in enumerate(gen.beams)]


def decoder_names(names: list[str]) -> list[str]:
    """The decoder-only models among registry names, read from config.json without loading weights."""
    from viz.core.arch import ARCHS
    from viz.tasks.encdec import _config
    from viz.core.models import DECODER_FAMILIES

    tiny = {f"tiny-{f}" for f in ("gpt2", *DECODER_FAMILIES)}
    return [n for n in names if n in tiny or not n.startswith("tiny-") and getattr(
        ARCHS.get(_config(n, REPO_MODELS).get("model_type", "")), "kind", None) == "decoder"]
