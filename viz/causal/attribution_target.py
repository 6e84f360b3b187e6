"""One prediction to explain: the input tokens, the position that predicts, the target (and foil) token,
and the functions every attribution method differentiates or perturbs.

Three kinds of model, one contract (`Problem`):
- masked LM (an encoder with a masked-LM head): the prediction at a mask token; `position` is that mask.
- decoder: the next token after position `position` (default: the last token); tokens after it are cut off,
  since they cannot influence it.
- encoder–decoder: output token number `position` (0 = the first) given the source and the model's own greedy
  output before it; attributions are over the source tokens (the decoder prefix is held fixed).

    f(x) = log p(target | x)               (log-softmax of the model's own logits at the predicting position)
    f(x) = logit(target) - logit(foil)      with a foil (a contrastive explanation)
    m(x) = p(target | x)  or  p(target | x) - p(foil | x)

f is what gradient x input, integrated gradients and occlusion explain; m is what the faithfulness scores
measure (ERASER scores probabilities, DeYoung et al. 2020). The target defaults to the model's own top token.

Removing a token = replacing its id by `replacement_id` (the mask token for masked LMs; else the pad token, else
end-of-text), every position and the attention mask kept. `candidates` are the tokens a ranking may remove: not
special, not the predicting mask itself, not already the replacement token.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch

from viz.causal.attribution_catalog import AttributionError
from viz.core.capture import _special
from viz.tasks.mlm import head_logits, with_mask_token
from viz.core.models import ModelBundle

CHUNK = 64  # input variants per forward


@dataclass
class Problem:
    bundle: ModelBundle
    ids: torch.Tensor  # [T] input ids (the source for encoder–decoders), on the model's device
    tokens: list[str]
    special: np.ndarray  # bool [T]
    position: int  # the mask (masked LM), the last context token (decoder), the output step (encoder–decoder)
    target_id: int
    foil_id: int | None
    replacement_id: int
    predicted_id: int  # the model's own top token at the position
    decoder_ids: torch.Tensor | None = None  # [P] encoder–decoders: start token + the output before `position`
    output_ids: list[int] | None = None  # encoder–decoders: the model's greedy output

    @property
    def kind(self) -> str:
        return self.bundle.kind

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    @property
    def candidates(self) -> np.ndarray:
        """bool [T]: tokens a ranking may remove."""
        ok = ~self.special & (self.ids.cpu().numpy() != self.replacement_id)
        if self.kind == "encoder":
            ok[self.position] = False
        return ok

    def token(self, i: int | None) -> str | None:
        return None if i is None else self.bundle.tokenizer.convert_ids_to_tokens(int(i))

    @property
    def target(self) -> str:
        return self.token(self.target_id)

    @property
    def foil(self) -> str | None:
        return self.token(self.foil_id)

    @property
    def output_tokens(self) -> list[str] | None:
        return None if self.output_ids is None else self.bundle.tokenizer.convert_ids_to_tokens(self.output_ids)


# ----------------------------------------------------------------------------- the model's answer
def _logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def logits(problem: Problem, ids: torch.Tensor | None = None, embeds: torch.Tensor | None = None) -> torch.Tensor:
    """The logits at the predicting position [B, vocab] (float32) for a batch of inputs: ids [B, T] or the
    looked-up input embeddings [B, T, D] (what gradients are taken against). Grad-mode is the caller's."""
    b, model = problem.bundle, problem.bundle.model
    x = ids if ids is not None else embeds
    src = {"input_ids": ids} if ids is not None else {"inputs_embeds": embeds}
    mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
    if b.kind == "encoder":  # the head on one position only: a 30k vocabulary on every token is half a forward
        h = model.base_model(**src, attention_mask=mask).last_hidden_state[:, problem.position]
        return head_logits(b, h).float()
    if b.kind == "decoder":  # only input_ids/attention_mask: GPT-2 would add wte(token_type_ids)
        kw = {"logits_to_keep": 1} if _logits_to_keep(model) else {}
        return model(**src, attention_mask=mask, use_cache=False, **kw).logits[:, -1].float()
    dec = problem.decoder_ids[None].expand(x.shape[0], -1)
    return model(**src, attention_mask=mask, decoder_input_ids=dec, use_cache=False).logits[:, -1].float()


def input_embedding(bundle: ModelBundle) -> torch.nn.Module:
    """The module that looks the input ids up (the encoder's, for encoder–decoders): what gradients reach."""
    model = bundle.model
    return model.get_encoder().get_input_embeddings() if bundle.kind == "encoder-decoder" \
        else model.get_input_embeddings()


def f_of(problem: Problem, lg: torch.Tensor) -> torch.Tensor:
    """f per row of logits [B, vocab] -> [B] (see the module docstring)."""
    if problem.foil_id is None:
        return lg.log_softmax(-1)[:, problem.target_id]
    return lg[:, problem.target_id] - lg[:, problem.foil_id]


def m_of(problem: Problem, lg: torch.Tensor) -> torch.Tensor:
    """m per row of logits [B, vocab] -> [B]: the probability the faithfulness scores measure."""
    p = lg.softmax(-1)
    return p[:, problem.target_id] if problem.foil_id is None else p[:, problem.target_id] - p[:, problem.foil_id]


def evaluate(problem: Problem, ids: torch.Tensor, what: str = "f", chunk: int = CHUNK) -> np.ndarray:
    """f (or m, what="m") of every row of ids [B, T], in chunks of `chunk` rows -> float64 [B]."""
    fn = f_of if what == "f" else m_of
    out = []
    with problem.bundle.lock, torch.inference_mode():
        for s in range(0, ids.shape[0], chunk):
            out.append(fn(problem, logits(problem, ids=ids[s:s + chunk])).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def removed(problem: Problem, drop: np.ndarray) -> torch.Tensor:
    """drop bool [B, T] -> ids [B, T] with the dropped tokens replaced by `replacement_id`."""
    drop_t = torch.as_tensor(np.asarray(drop, dtype=bool), device=problem.ids.device)
    ids = problem.ids[None].expand(drop_t.shape[0], -1)
    return torch.where(drop_t, torch.full_like(ids, problem.replacement_id), ids)


# ----------------------------------------------------------------------------- building a problem
def token_id(bundle: ModelBundle, word: str | None, what: str = "target") -> int:
    """One vocabulary token for what the user typed: the vocabulary's own token ('Ġmat', '##ing') or a word the
    tokenizer keeps whole (decoders: preceded by a space first, as a continuation reads). One sentence if not."""
    tok = bundle.tokenizer
    if word is None or not str(word).strip():
        raise AttributionError(f"The {what} is empty: type one word or token, or leave it out to explain the "
                               "model's own prediction.")
    vocab, split = tok.get_vocab(), None
    tries = [" " + word.strip()] if bundle.kind == "decoder" and not word.startswith(" ") else []
    tries += [word, word.strip()]
    for t in tries:
        if t == word and t in vocab:  # the vocabulary's own token, exactly as typed
            return int(vocab[t])
        pieces = tok.tokenize(t)
        ids = tok.convert_tokens_to_ids(pieces)
        if len(ids) == 1 and ids[0] != tok.unk_token_id:
            return int(ids[0])
        if len(pieces) > 1 and split is None:
            split = pieces
    if split:
        raise AttributionError(f"The {what} '{word}' is split by this tokenizer into {len(split)} tokens "
                               f"({' '.join(split)}); an attribution explains one token, so give a single one "
                               f"(e.g. '{split[0]}').")
    raise AttributionError(f"The {what} '{word}' is not in this model's vocabulary (it reads as "
                           f"{tok.unk_token or 'unknown'}); give a word the model knows.")


def _replacement(bundle: ModelBundle) -> int:
    tok = bundle.tokenizer
    for i in ((tok.mask_token_id,) if bundle.kind == "encoder" else ()) + (tok.pad_token_id, tok.eos_token_id):
        if i is not None:
            return int(i)
    raise AttributionError(f"'{bundle.name}' has neither a pad nor an end-of-text token to replace removed "
                           "tokens with; pick another model.")


def _check_text(text: str | None) -> str:
    if text is None or not str(text).strip():
        raise AttributionError("The text is empty: type a sentence first.")
    return str(text)


def _resolve_position(position: int | None, n: int, what: str) -> int | None:
    if position is None:
        return None
    p = int(position)
    if not -n <= p < n:
        raise AttributionError(f"There is no {what} {p}: this input has {n} (0 to {n - 1}, or -1 for the last).")
    return p % n


def _masked_lm_inputs(bundle: ModelBundle, text: str, position: int | None) -> tuple[list[int], int]:
    from viz.tasks.mlm import MaskError, require_mlm_head

    try:
        require_mlm_head(bundle)
    except MaskError as e:
        raise AttributionError(str(e)) from None
    tok = bundle.tokenizer
    ids = tok(with_mask_token(text, tok))["input_ids"]
    masks = [i for i, t in enumerate(ids) if t == tok.mask_token_id]
    pos = _resolve_position(position, len(ids), "position")
    if pos is None and len(masks) != 1:
        if not masks:
            raise AttributionError(f"No {tok.mask_token} in the text and no position given: write {tok.mask_token} "
                                   "where a word should be predicted, or choose the position of a token to mask.")
        raise AttributionError(f"The text has {len(masks)} masks (positions {', '.join(map(str, masks))}); choose "
                               "the one to explain with a position.")
    pos = masks[0] if pos is None else pos
    if _special(tok, [ids[pos]])[0]:
        raise AttributionError(f"Position {pos} is {tok.convert_ids_to_tokens(ids[pos])}, a special token: choose a "
                               f"word's position (1 to {len(ids) - 2}).")
    ids[pos] = tok.mask_token_id
    return ids, pos


def _decoder_inputs(bundle: ModelBundle, text: str, position: int | None) -> tuple[list[int], int]:
    from viz.tasks.generate_lm import prompt_ids

    ids = prompt_ids(bundle, text)
    pos = _resolve_position(position, len(ids), "position")
    pos = len(ids) - 1 if pos is None else pos
    return ids[:pos + 1], pos


def _greedy_output(bundle: ModelBundle, ids: torch.Tensor) -> list[int]:
    """The model's greedy output (start token dropped), as `model.generate` gives it."""
    from viz.tasks.encdec import _generation_config

    gc = _generation_config(bundle, min(64, bundle.max_tokens))
    gc.max_length, gc.max_new_tokens = gc.max_new_tokens + 1, None  # one limit, or generate warns about two
    with torch.inference_mode():
        out = bundle.model.generate(input_ids=ids[None], attention_mask=torch.ones_like(ids)[None],
                                    generation_config=gc)
    return out[0, 1:].tolist()


def prepare(bundle: ModelBundle, text: str, target: str | None = None, foil: str | None = None,
            position: int | None = None) -> Problem:
    """The prediction to explain (see the module docstring); raises AttributionError with one sentence."""
    text = _check_text(text)
    tok, dev = bundle.tokenizer, bundle.device
    with bundle.lock:
        if bundle.kind == "encoder":
            ids, pos = _masked_lm_inputs(bundle, text, position)
        elif bundle.kind == "decoder":
            ids, pos = _decoder_inputs(bundle, text, position)
        else:
            ids, pos = tok(text)["input_ids"], None
        if len(ids) > bundle.max_tokens:
            raise AttributionError(f"The text has {len(ids)} tokens; this model takes at most {bundle.max_tokens}. "
                                   "Shorten it.")
        ids_t = torch.tensor(ids, device=dev)
        problem = Problem(bundle, ids_t, tok.convert_ids_to_tokens(ids), _special(tok, ids), 0, -1, None,
                          _replacement(bundle), -1)
        if bundle.kind == "encoder-decoder":
            out = _greedy_output(bundle, ids_t)
            step = 0 if position is None else int(position)
            if not 0 <= step < len(out):
                raise AttributionError(f"The model's output has {len(out)} tokens ({' '.join(tok.convert_ids_to_tokens(out))}); "
                                       f"there is no output position {step}: choose one from 0 to {len(out) - 1}.")
            start = int(bundle.model.config.decoder_start_token_id)
            problem.output_ids, problem.decoder_ids = out, torch.tensor([start] + out[:step], device=dev)
            pos = step
        problem.position = pos
        with torch.inference_mode():
            lg = logits(problem, ids=ids_t[None])[0]
        problem.predicted_id = int(lg.argmax())
        problem.target_id = problem.predicted_id if target is None or not str(target).strip() \
            else token_id(bundle, target, "target")
        if foil is not None and str(foil).strip():
            problem.foil_id = token_id(bundle, foil, "foil")
            if problem.foil_id == problem.target_id:
                raise AttributionError(f"The foil '{foil}' is the target itself; a contrast needs another token.")
    return problem
