"""Step-by-step decoding for encoder–decoder models: what the decoder looked at, token by token.

The encoder runs once; the decoder then runs once per generated token on the whole prefix
(`use_cache=False`, so every step's attention is recorded by the same ContextVar-gated hooks
as `viz.core.capture`). Greedy steps apply the model's own generation rules (its
`generation_config` logits processors, e.g. BART's forced `</s>` at the length limit), so the
tokens equal `model.generate(num_beams=1, do_sample=False)`. Beam search runs `model.generate`
and then teacher-forces its output to show the attentions; teacher forcing takes a target text.

Shapes (numpy):
    Step.cross         [layer, head, source]   the new token's query over the encoder output
    Step.self_attn     [layer, head, step+1]   its masked self-attention over the decoder prefix
    Generation.attentions()['decoder']  [layer, head, target, target]  (rows zero past the diagonal)
    Generation.attentions()['cross']    [layer, head, target, source]
`target` counts decoder *inputs*: the start token then every generated token but the last.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from viz.core.arch import CROSS, DECODER, ENCODER
from viz.core.capture import Capture, CaptureError, _check_text, _decoder_inputs, _encode, _token_info, recording, \
    word_spans
from viz.core.models import REPO_ROOT, ModelBundle, split_key

METHODS = ("greedy", "beam", "teacher")


@dataclass
class Step:
    """One decoding step: the query token fed in, the token that came out, and what it attended to."""

    index: int
    query_token: str  # decoder input at this position (start token, then the previous output)
    token: str  # the output token (teacher forcing: the target token)
    token_id: int
    prob: float  # the model's probability of `token` (softmax of the raw logits)
    top_k: list[tuple[str, float]]  # the model's k most likely next tokens, raw softmax
    forced: bool  # a generation rule (not the argmax) chose the token, or teacher forcing overrode it
    cross: np.ndarray  # [layer, head, source]
    self_attn: np.ndarray  # [layer, head, index + 1]


@dataclass
class Beam:
    """One finished hypothesis of beam search, best first in `Generation.beams`."""

    tokens: list[str]  # the generated tokens, end-of-sequence included when reached
    token_logprobs: list[float]  # log p of each token where it was chosen (after the generation rules)
    score: float  # what beam search ranks by: sum of log p / length ** length_penalty

    @property
    def log_prob(self) -> float:
        return float(sum(self.token_logprobs))


@dataclass
class Generation:
    model_name: str
    method: str  # greedy | beam | teacher
    source_tokens: list[str]
    source_ids: list[int]
    source_special: np.ndarray  # bool [source]
    source_spans: list[tuple[int, int]]
    decoder_tokens: list[str]  # decoder inputs [start, y1, ..., y_{n-1}]
    decoder_ids: list[int]
    steps: list[Step]
    encoder_attentions: np.ndarray  # [layer, head, source, source]
    finished: bool  # ended on an end-of-sequence token
    truncated: bool = False
    n_source_tokens: int = 0  # before truncation
    special_ids: set = field(default_factory=set)
    beams: list[Beam] = field(default_factory=list)  # beam search only: every returned hypothesis, best first
    length_penalty: float = 1.0

    @property
    def output_tokens(self) -> list[str]:
        return [s.token for s in self.steps]

    def attentions(self) -> dict[str, np.ndarray]:
        """Per-step rows stacked into the teacher-forced layout `[layer, head, query, key]`."""
        T = len(self.steps)
        L, H = self.steps[0].self_attn.shape[:2]
        dec = np.zeros((L, H, T, T), dtype=np.float32)
        for s in self.steps:
            dec[:, :, s.index, : s.index + 1] = s.self_attn
        cross = np.stack([s.cross for s in self.steps], axis=2).astype(np.float32)
        return {ENCODER: self.encoder_attentions, DECODER: dec, CROSS: cross}

    def to_capture(self) -> Capture:
        """The same `Capture` contract as `viz.core.capture.capture` (no hidden states)."""
        tgt_special = np.array([i in self.special_ids for i in self.decoder_ids], dtype=bool)
        return Capture(
            model_name=self.model_name, kind="encoder-decoder", tokens=list(self.source_tokens),
            word_spans=list(self.source_spans), special=self.source_special, attentions=self.attentions(),
            target_tokens=list(self.decoder_tokens), target_special=tgt_special,
            target_word_spans=word_spans([None if s else i for i, s in enumerate(tgt_special)]),
            input_ids=np.array(self.source_ids), target_ids=np.array(self.decoder_ids),
            n_input_tokens=self.n_source_tokens, truncated=self.truncated)

    def to_json(self, digits: int = 6) -> dict:
        """The `python -m viz generate --json` contract: per step, the last layer's cross-attention
        averaged over heads (one weight per source token) and the top-k next-token probabilities."""
        out = {
            "model": self.model_name, "method": self.method,
            "source_tokens": list(self.source_tokens), "output_tokens": self.output_tokens,
            "finished": self.finished,
            "steps": [{"token": s.token, "prob": round(s.prob, digits), "forced": s.forced,
                       "cross_attention": [round(float(w), digits) for w in s.cross[-1].mean(axis=0)],
                       "top_k": [{"token": t, "prob": round(p, digits)} for t, p in s.top_k]}
                      for s in self.steps],
        }
        if self.beams:  # an addition to the contract: beam search's hypotheses, best first
            out["beams"] = [{"tokens": b.tokens, "score": round(b.score, digits), "log_prob": round(b.log_prob, digits),
                             "token_logprobs": [round(x, digits) for x in b.token_logprobs]} for b in self.beams]
        return out


# ----------------------------------------------------------------------------- helpers
def _require_encdec(bundle: ModelBundle) -> None:
    if bundle.kind != "encoder-decoder":
        raise CaptureError(
            f"'{bundle.name}' is {'an' if bundle.kind[0] == 'e' else 'a'} {bundle.kind} model: it has no decoder "
            "reading an encoder. Pick an encoder–decoder (T5, BART, Marian, e.g. tiny-bart) or use the "
            "Attention page.")


def _source(bundle: ModelBundle, text: str) -> tuple[dict, dict]:
    """Tokenized source (truncated to the model's limit) -> (model inputs, token info)."""
    text = _check_text(text, "source text")
    enc, n_full = _encode(bundle.tokenizer, text, bundle.max_tokens)
    ids = enc["input_ids"][0].tolist()
    tokens, spans, special = _token_info(bundle.tokenizer, enc, ids)
    info = dict(source_tokens=tokens, source_ids=ids, source_special=special, source_spans=spans,
                n_source_tokens=n_full, truncated=n_full > len(ids))
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, info


def max_new_tokens_limit(bundle: ModelBundle) -> int:
    """The decoder's position table bounds how many tokens it can produce."""
    return max(1, bundle.max_tokens - 1)


def _generation_config(bundle: ModelBundle, max_new: int, num_beams: int = 1):
    gc = copy.deepcopy(bundle.model.generation_config)  # never mutate the shared model's config
    gc.update(max_new_tokens=max_new, num_beams=num_beams, do_sample=False)
    return gc


def _eos_ids(gc) -> set[int]:
    eos = gc.eos_token_id
    return set() if eos is None else set(eos if isinstance(eos, (list, tuple)) else [eos])


def _top_k(tok, logits: torch.Tensor, k: int) -> tuple[torch.Tensor, list[tuple[str, float]]]:
    probs = torch.softmax(logits.float(), dim=-1)
    p, i = probs.topk(min(k, probs.shape[-1]))
    return probs, list(zip(tok.convert_ids_to_tokens(i.tolist()), [float(x) for x in p]))


def _last_rows(rec, stack: str) -> np.ndarray:
    """Hook records [layer] x [1, head, q, k] -> the last query's row [layer, head, k]."""
    return torch.stack([a[0, :, -1, :] for a in rec.data[(stack, "attn")]]).float().numpy()


# ----------------------------------------------------------------------------- decoding
def greedy(bundle: ModelBundle, text: str, max_new_tokens: int = 20, top_k: int = 5) -> Generation:
    """Greedy decoding one token at a time, recording every step's attention."""
    _require_encdec(bundle)
    model, tok = bundle.model, bundle.tokenizer
    max_new = max(1, min(int(max_new_tokens), max_new_tokens_limit(bundle)))
    with bundle.lock, torch.inference_mode():
        inputs, info = _source(bundle, text)
        gc = _generation_config(bundle, max_new)
        gc.max_length = max_new + 1  # what generate derives (the decoder starts from one token): forced-EOS uses it
        # the same rules generate() applies (forced BOS/EOS, bad words, ...): built by transformers itself
        procs = model._get_logits_processor(gc, input_ids_seq_length=1, encoder_input_ids=inputs["input_ids"],
                                            device=inputs["input_ids"].device, model_kwargs={})
        with recording(bundle, qkv=False) as rec:
            enc_out = model.get_encoder()(**inputs, return_dict=True)
        enc_attn = torch.stack([a[0] for a in rec.data[(ENCODER, "attn")]]).float().numpy()
        dec = torch.tensor([[gc.decoder_start_token_id]])
        eos, steps = _eos_ids(gc), []
        for i in range(max_new):
            with recording(bundle, qkv=False) as rec:
                out = model(encoder_outputs=enc_out, attention_mask=inputs["attention_mask"],
                            decoder_input_ids=dec, use_cache=False, return_dict=True)
            logits = out.logits[:, -1]
            probs, best = _top_k(tok, logits[0], top_k)
            nxt = int(procs(dec, logits.float()).argmax(-1))
            steps.append(Step(i, tok.convert_ids_to_tokens(int(dec[0, -1])), tok.convert_ids_to_tokens(nxt), nxt,
                              float(probs[nxt]), best, nxt != int(probs.argmax()),
                              _last_rows(rec, CROSS), _last_rows(rec, DECODER)))
            dec = torch.cat([dec, torch.tensor([[nxt]])], dim=1)
            if nxt in eos:
                break
    ids = dec[0, :-1].tolist()
    return Generation(bundle.name, "greedy", decoder_tokens=tok.convert_ids_to_tokens(ids), decoder_ids=ids,
                      steps=steps, encoder_attentions=enc_attn, finished=steps[-1].token_id in eos,
                      special_ids=set(tok.all_special_ids), **info)


def _teacher_forced(bundle: ModelBundle, inputs: dict, dec_in: torch.Tensor, labels: torch.Tensor, top_k: int,
                    method: str, info: dict, forced_by_target: bool) -> Generation:
    """One forward over a known decoder sequence; step t is row t of every attention matrix."""
    model, tok = bundle.model, bundle.tokenizer
    with recording(bundle, qkv=False) as rec:
        out = model(**inputs, decoder_input_ids=dec_in, use_cache=False, return_dict=True)
    att = {s: torch.stack([a[0] for a in rec.data[(s, "attn")]]).float().numpy() for s in (ENCODER, DECODER, CROSS)}
    steps = []
    for t, nxt in enumerate(labels[0].tolist()):
        probs, best = _top_k(tok, out.logits[0, t], top_k)
        forced = forced_by_target and nxt != int(probs.argmax())
        steps.append(Step(t, tok.convert_ids_to_tokens(int(dec_in[0, t])), tok.convert_ids_to_tokens(nxt), nxt,
                          float(probs[nxt]), best, forced, att[CROSS][:, :, t, :], att[DECODER][:, :, t, : t + 1]))
    eos = _eos_ids(model.generation_config)
    ids = dec_in[0].tolist()
    return Generation(bundle.name, method, decoder_tokens=tok.convert_ids_to_tokens(ids), decoder_ids=ids,
                      steps=steps, encoder_attentions=att[ENCODER], finished=steps[-1].token_id in eos,
                      special_ids=set(tok.all_special_ids), **info)


def _beams(bundle: ModelBundle, out, eos: set[int]) -> list[Beam]:
    """Every returned hypothesis with its per-token log-probabilities (`compute_transition_scores` follows
    each token back through the beam it was chosen in) and generate's own ranking score."""
    tok = bundle.tokenizer
    trans = bundle.model.compute_transition_scores(out.sequences, out.scores, out.beam_indices, normalize_logits=False)
    beams = []
    for seq, lp, score in zip(out.sequences[:, 1:].tolist(), trans.float().tolist(), out.sequences_scores.tolist()):
        n = next((i + 1 for i, t in enumerate(seq) if t in eos), len(seq))  # up to end-of-sequence; the rest is padding
        beams.append(Beam(tok.convert_ids_to_tokens(seq[:n]), [float(x) for x in lp[:n]], float(score)))
    return beams


def beam(bundle: ModelBundle, text: str, num_beams: int = 4, max_new_tokens: int = 20, top_k: int = 5) -> Generation:
    """Beam search with `model.generate` (every hypothesis kept with its scores), then teacher-forced on the
    winning beam to show its attentions."""
    _require_encdec(bundle)
    max_new = max(1, min(int(max_new_tokens), max_new_tokens_limit(bundle)))
    with bundle.lock, torch.inference_mode():
        inputs, info = _source(bundle, text)
        gc = _generation_config(bundle, max_new, int(num_beams))
        gc.update(num_return_sequences=int(num_beams), output_scores=True, return_dict_in_generate=True)
        out = bundle.model.generate(**inputs, generation_config=gc)
        beams = _beams(bundle, out, _eos_ids(gc))
        best = out.sequences[:1, : len(beams[0].tokens) + 1]  # the winner, without padding
        gen = _teacher_forced(bundle, inputs, best[:, :-1], best[:, 1:], top_k, "beam", info, False)
    gen.beams, gen.length_penalty = beams, float(gc.length_penalty if gc.length_penalty is not None else 1.0)
    return gen


def teacher(bundle: ModelBundle, text: str, target: str, top_k: int = 5) -> Generation:
    """Teacher forcing: the decoder reads `target` (shifted right); each step shows the model's prediction."""
    _require_encdec(bundle)
    with bundle.lock, torch.inference_mode():
        inputs, info = _source(bundle, text)
        dec_in, labels = _decoder_inputs(bundle, inputs, target)
        return _teacher_forced(bundle, inputs, dec_in, labels, top_k, "teacher", info, True)


def generate(bundle: ModelBundle, text: str, method: str = "greedy", *, target: str | None = None,
             num_beams: int = 4, max_new_tokens: int = 20, top_k: int = 5) -> Generation:
    """Dispatch on `method` (greedy | beam | teacher). Raises CaptureError with a user-facing message."""
    if method == "greedy":
        return greedy(bundle, text, max_new_tokens, top_k)
    if method == "beam":
        return beam(bundle, text, num_beams, max_new_tokens, top_k)
    if method == "teacher":
        if target is None or not str(target).strip():
            raise CaptureError("The target text is empty: type the text the decoder should read, or generate.")
        return teacher(bundle, text, target, top_k)
    raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")


# ----------------------------------------------------------------------------- registry helpers
# what each shipped task's page opens with (models/<name>/task.json names the task)
TASK_EXAMPLES = {"dates": "3 March 2021", "reverse": "the old man said that we would find the way home"}
# what each shipped model was trained on (see its MODEL_CARD.md): outside it, outputs are unreliable
TASK_HINTS = {
    "dates": "Trained on dates 1900–2099 written as '3 March 2021', '03/03/2021' (day first) or 'March 3, 2021'.",
    "reverse": "Trained to reverse 3–12 words from a 1,000-word vocabulary (others become <unk>); "
               "shorter or longer inputs fail.",
}


def _config(name: str, models_root: Path) -> dict:
    name = split_key(name)[0]
    for d in (models_root / name, Path(name).expanduser()):
        try:
            return json.loads((d / "config.json").read_text())
        except (OSError, ValueError):
            continue
    return {}


def encoder_decoder_names(names: list[str], models_root: Path = REPO_ROOT / "models") -> list[str]:
    """The encoder–decoders among registry names, read from config.json without loading weights."""
    tiny = {"tiny-t5", "tiny-bart", "tiny-marian"}
    return [n for n in names if n in tiny or not n.startswith("tiny-") and _config(n, models_root).get(
        "is_encoder_decoder")]


def shipped_task(name: str, models_root: Path = REPO_ROOT / "models") -> str | None:
    """The synthetic task a shipped checkpoint was trained on (its task.json), else None."""
    name = split_key(name)[0]
    for d in (models_root / name, Path(name).expanduser()):
        try:
            return json.loads((d / "task.json").read_text()).get("task")
        except (OSError, ValueError):
            continue
    return None


def example_source(name: str, models_root: Path = REPO_ROOT / "models") -> str | None:
    """A source text the shipped model was trained on (e.g. a date for seq2seq-dates), else None."""
    return TASK_EXAMPLES.get(shipped_task(name, models_root))
