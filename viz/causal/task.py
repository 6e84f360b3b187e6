"""A patching task: a clean and a corrupted input of the same length, an answer position and the metric.

Metric (Wang et al. 2022; Heimersheim & Nanda 2024), at the answer position:
    decoders, encoder–decoders   m = logit(target) − logit(foil)        (the next token after the prompt /
                                                                          after the decoder prefix)
    masked LMs                   m = log p(target) − log p(foil)         at the [MASK]; log p(target) alone
                                                                          when there is no foil
Normalised effect of a patch: (m_patched − m_corrupt) / (m_clean − m_corrupt): 0 = nothing restored, 1 = all.

Defaults: the target is the model's top prediction on the clean input, the foil its top prediction on the
corrupted one (when both are the same token: the corrupted input's second choice). A typed answer word is
tokenized as the model would continue the text; a word of several tokens counts by its first token (`notes`
says so). Encoder–decoders: both sources are decoded greedily; the decoder reads the clean output up to the
first token where the two outputs differ (or a typed `prefix`), the same decoder input for both runs, and the
answer is that token. Everything is computed in float32 whatever the model's dtype.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

from viz.core.arch import DECODER, ENCODER
from viz.core.models import ModelBundle


class PatchError(ValueError):
    """Input a patching run cannot use; the message (one sentence) is for the user."""


@dataclass(frozen=True)
class PatchTask:
    model: str
    kind: str  # encoder | decoder | encoder-decoder
    clean: str
    corrupt: str
    clean_ids: tuple[int, ...]
    corrupt_ids: tuple[int, ...]
    clean_tokens: tuple[str, ...]
    corrupt_tokens: tuple[str, ...]
    answer_position: int  # in the stack whose logits are read: the decoder, or the encoder of a masked LM
    target: int
    target_token: str
    foil: int | None
    foil_token: str | None
    metric_clean: float
    metric_corrupt: float
    decoder_ids: tuple[int, ...] = ()  # encoder–decoders: the decoder input of both runs
    decoder_tokens: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def metric_name(self) -> str:
        if self.kind == "encoder":
            return "log p(target) − log p(foil)" if self.foil is not None else "log p(target)"
        return "logit(target) − logit(foil)"

    def tokens(self, stack: str) -> tuple[str, ...]:
        """The clean input's tokens along `stack`'s positions (cross-attention runs over decoder positions)."""
        if self.kind == "encoder-decoder" and stack != ENCODER:
            return self.decoder_tokens
        return self.clean_tokens

    def normalise(self, patched):
        return (patched - self.metric_corrupt) / (self.metric_clean - self.metric_corrupt)

    def to_json(self, digits: int = 6) -> dict:
        out = {"model": self.model, "kind": self.kind, "clean_tokens": list(self.clean_tokens),
               "corrupt_tokens": list(self.corrupt_tokens), "target": self.target_token, "foil": self.foil_token,
               "answer_position": self.answer_position, "metric_name": self.metric_name,
               "metric": {"clean": round(self.metric_clean, digits), "corrupt": round(self.metric_corrupt, digits)},
               "notes": list(self.notes)}
        if self.kind == "encoder-decoder":
            out["decoder_tokens"] = list(self.decoder_tokens)
        return out


# ----------------------------------------------------------------------------- running the model
def model_inputs(bundle: ModelBundle, task: PatchTask, which: str, n: int = 1) -> dict:
    """Keyword arguments for `n` copies of the clean or corrupted input (no padding: one length)."""
    ids = torch.tensor([task.clean_ids if which == "clean" else task.corrupt_ids], device=bundle.device)
    kw = {"input_ids": ids.expand(n, -1), "attention_mask": torch.ones_like(ids).expand(n, -1)}
    if task.kind == "encoder-decoder":
        kw["decoder_input_ids"] = torch.tensor([task.decoder_ids], device=bundle.device).expand(n, -1)
    return kw


def wide(x: torch.Tensor) -> torch.Tensor:
    """float32 for half precisions; float64 stays (the finite-difference tests run models in float64)."""
    return x if x.dtype == torch.float64 else x.float()


def answer_logits(bundle: ModelBundle, kw: dict, kind: str, position: int) -> torch.Tensor:
    """The forward of `kw`: logits [batch, vocab] (float32) at the answer position, computing no other rows
    of the output layer (a masked LM's head runs on that position only; decoders keep one logit row)."""
    model = bundle.model
    if kind == "encoder":
        from viz.tasks.mlm import head_logits

        hidden = model.base_model(**kw).last_hidden_state
        return wide(head_logits(bundle, hidden[:, position]))
    extra = {"use_cache": False}
    if kind == "decoder" and "logits_to_keep" in inspect.signature(model.forward).parameters:
        extra["logits_to_keep"] = 1  # the answer position is the last one
        return wide(model(**kw, **extra).logits[:, -1])
    return wide(model(**kw, **extra).logits[:, position])


def metric_of(task_kind: str, logits: torch.Tensor, target: int, foil: int | None) -> torch.Tensor:
    """[batch, vocab] -> the metric [batch] (see the module docstring)."""
    if task_kind == "encoder":
        logp = logits.log_softmax(-1)
        return logp[:, target] - (logp[:, foil] if foil is not None else 0.0)
    return logits[:, target] - logits[:, foil]


def run_metric(bundle: ModelBundle, task: PatchTask, which: str = "corrupt", n: int = 1) -> torch.Tensor:
    """The metric [n] of `n` copies of one input (patches apply when a components session is active)."""
    logits = answer_logits(bundle, model_inputs(bundle, task, which, n), task.kind, task.answer_position)
    return metric_of(task.kind, logits, task.target, task.foil)


# ----------------------------------------------------------------------------- building a task
def _check(text: str, what: str) -> str:
    if text is None or not str(text).strip():
        raise PatchError(f"The {what} is empty: type a sentence first.")
    return str(text)


def _ids(bundle: ModelBundle, text: str) -> list[int]:
    tok = bundle.tokenizer
    if bundle.kind == "decoder":
        from viz.tasks.generate_lm import prompt_ids

        return prompt_ids(bundle, text)
    if bundle.kind == "encoder":
        from viz.tasks.mlm import with_mask_token

        text = with_mask_token(text, tok)
    return tok(text)["input_ids"]


def _same_length(bundle: ModelBundle, a: list[int], b: list[int]) -> None:
    if len(a) != len(b):
        raise PatchError(f"The clean input has {len(a)} tokens and the corrupted one {len(b)}: patching puts "
                         "position i of one run into position i of the other, so both need the same number of "
                         "tokens (replace a word by one of the same token length).")
    if len(a) > bundle.max_tokens:
        raise PatchError(f"The inputs have {len(a)} tokens; this model takes at most {bundle.max_tokens}.")
    if a == b:
        raise PatchError("The clean and corrupted inputs are the same tokens: change at least one word.")


def _word_id(bundle: ModelBundle, word: str, prompt: str, prompt_ids: list[int], notes: list[str], role: str) -> int:
    """The first token of `word` as the model would read it next: after the prompt for decoders, in the
    target vocabulary for encoder–decoders, on its own at a mask for masked LMs."""
    tok = bundle.tokenizer
    word = str(word)
    if not word.strip():
        raise PatchError(f"The {role} is empty: type a word or leave the box for the default.")
    vocab_id = tok.convert_tokens_to_ids(word) if word[0] in "Ġ▁" else None
    if vocab_id is not None and vocab_id != tok.unk_token_id:
        return int(vocab_id)  # already a token of the vocabulary ("Ġcat")
    ids: list[int] = []
    if bundle.kind == "decoder":
        full = _ids(bundle, prompt.rstrip() + " " + word.strip())
        if full[:len(prompt_ids)] == prompt_ids:
            ids = full[len(prompt_ids):]
        if not ids:
            ids = tok(" " + word.strip(), add_special_tokens=False)["input_ids"]
    elif bundle.kind == "encoder-decoder":
        ids = tok(text_target=word.strip(), add_special_tokens=False)["input_ids"]
    else:
        ids = tok(word.strip(), add_special_tokens=False)["input_ids"]
    ids = [i for i in ids if i not in tok.all_special_ids]
    if not ids:
        raise PatchError(f"The {role} '{word.strip()}' has no tokens in this model's vocabulary.")
    if len(ids) > 1:
        pieces = " + ".join(tok.convert_ids_to_tokens(ids))
        notes.append(f"The {role} '{word.strip()}' is {len(ids)} tokens ({pieces}); the metric uses the first, "
                     f"'{tok.convert_ids_to_tokens(ids[0])}'.")
    return int(ids[0])


def _mask_position(bundle: ModelBundle, clean: list[int], corrupt: list[int], notes: list[str]) -> int:
    tok = bundle.tokenizer
    masks = [i for i, t in enumerate(clean) if t == tok.mask_token_id]
    if not masks:
        raise PatchError(f"There is no {tok.mask_token} in the clean text: put one where the answer goes.")
    if corrupt[masks[0]] != tok.mask_token_id:
        raise PatchError(f"The corrupted text has no {tok.mask_token} at position {masks[0]}, where the clean "
                         "text has it: corrupt another word and keep the mask in place.")
    if len(masks) > 1:
        notes.append(f"The clean text has {len(masks)} masks; the metric reads the first (position {masks[0]}).")
    return masks[0]


def _decoder_prefix(bundle: ModelBundle, clean: list[int], corrupt: list[int], prefix: str | None,
                    notes: list[str]) -> tuple[list[int], tuple[int, int] | None]:
    """Encoder–decoders: (the decoder input, (clean, corrupted) greedy tokens at the answer, or None)."""
    model, tok = bundle.model, bundle.tokenizer
    start = model.config.decoder_start_token_id
    if prefix is not None and prefix.strip():
        body = [i for i in tok(text_target=prefix)["input_ids"] if i not in tok.all_special_ids]
        return [start] + body, None
    outs = []
    for ids in (clean, corrupt):
        x = torch.tensor([ids], device=bundle.device)
        gen = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, num_beams=1,
                             max_new_tokens=max(1, min(64, bundle.max_tokens - 1)))
        outs.append(gen[0].tolist())
    a, b = outs
    j = next((i for i in range(1, min(len(a), len(b))) if a[i] != b[i]), None)
    if j is None:
        raise PatchError("Both sources decode to the same output (" + tok.decode(a, skip_special_tokens=True)
                         + "): there is no answer token to restore; corrupt a word the output depends on, or "
                         "type a decoder prefix.")
    return a[:j], (a[j], b[j])


def make_task(bundle: ModelBundle, clean: str, corrupt: str, target: str | None = None, foil: str | None = None,
              prefix: str | None = None) -> PatchTask:
    """Tokenize, check and measure a clean/corrupted pair (see the module docstring). Raises PatchError."""
    if bundle.kind == "encoder" and not (bundle.has_mlm_head and bundle.arch.mlm_head):
        raise PatchError(f"'{bundle.name}' has no masked-LM head, so there is no answer to measure: pick a model "
                         "with one (e.g. minilm-mlm), a decoder (atlas-lm) or an encoder–decoder (seq2seq-dates).")
    clean, corrupt = _check(clean, "clean input"), _check(corrupt, "corrupted input")
    notes: list[str] = []
    tok = bundle.tokenizer
    with bundle.lock, torch.inference_mode():  # the tokenizer is not thread-safe; generate runs here too
        a, b = _ids(bundle, clean), _ids(bundle, corrupt)
        _same_length(bundle, a, b)
        dec: list[int] = []
        greedy = None
        if bundle.kind == "encoder":
            position = _mask_position(bundle, a, b, notes)
        elif bundle.kind == "decoder":
            position = len(a) - 1
        else:
            dec, greedy = _decoder_prefix(bundle, a, b, prefix, notes)
            position = len(dec) - 1
        t_id = _word_id(bundle, target, clean, a, notes, "answer") if target else None
        f_id = _word_id(bundle, foil, clean, a, notes, "foil") if foil else None
    base = PatchTask(bundle.name, bundle.kind, clean, corrupt, tuple(a), tuple(b), tuple(tok.convert_ids_to_tokens(a)),
                     tuple(tok.convert_ids_to_tokens(b)), position, 0, "", None, None, 0.0, 0.0, tuple(dec),
                     tuple(tok.convert_ids_to_tokens(dec)), ())
    with torch.inference_mode():
        lc = answer_logits(bundle, model_inputs(bundle, base, "clean"), bundle.kind, position)[0]
        lk = answer_logits(bundle, model_inputs(bundle, base, "corrupt"), bundle.kind, position)[0]
    if t_id is None:
        t_id = greedy[0] if greedy else int(lc.argmax())
    if f_id is None and (bundle.kind != "encoder" or int(lk.argmax()) != t_id):
        f_id = greedy[1] if greedy else int(lk.argmax())
        if f_id == t_id:
            f_id = int(lk.topk(2).indices[1])
            notes.append(f"Both inputs predict '{tok.convert_ids_to_tokens(t_id)}'; the foil is the corrupted "
                         "input's second choice.")
    if f_id == t_id:
        raise PatchError("The answer and the foil are the same token: pick two different words.")
    m = metric_of(bundle.kind, torch.stack([lc, lk]), t_id, f_id).tolist()
    if abs(m[0] - m[1]) < 1e-6:
        raise PatchError(f"The metric is the same on both inputs ({m[0]:.4f}): the corruption changes nothing "
                         "this answer depends on, so there is nothing to restore.")
    if abs(m[0] - m[1]) < 0.5:
        notes.append(f"The corruption moves the metric only from {m[0]:.2f} to {m[1]:.2f}; every effect is divided by "
                     "that difference, so small changes look large. A corruption that flips the answer reads better.")
    fields = dict(base.__dict__, target=t_id, target_token=tok.convert_ids_to_tokens(t_id), foil=f_id,
                  foil_token=None if f_id is None else tok.convert_ids_to_tokens(f_id), metric_clean=float(m[0]),
                  metric_corrupt=float(m[1]), notes=tuple(notes))
    return PatchTask(**fields)


def stack_of_logits(kind: str) -> str:
    """The stack whose positions the answer position counts."""
    return ENCODER if kind == "encoder" else DECODER
