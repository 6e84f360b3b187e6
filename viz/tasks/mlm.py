"""Masked-token predictions: top-k per mask, per-layer predictions (a logit lens for encoders), mask sweep.

The per-layer view applies the model's own masked-LM head to every layer's hidden state
(nostalgebraist's "logit lens", 2020, used on BERT by e.g. de Vries et al. 2020). The mask
sweep masks each token in turn and reads the probability of the true token: summed in log
space it is the pseudo-log-likelihood of Salazar et al. 2020 ("Masked Language Model Scoring").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from viz.core.capture import Capture, CaptureError, capture
from viz.core.models import ModelBundle

SUGGEST = ("minilm-mlm (bundled, offline) or a Hugging Face masked-LM such as bert-base-uncased, "
           "distilbert-base-uncased or roberta-base")


class MaskError(ValueError):
    """Input the masked-LM views cannot use; the message is for the user."""


def require_mlm_head(bundle: ModelBundle) -> None:
    if not (bundle.has_mlm_head and bundle.arch.mlm_head):
        raise MaskError(f"'{bundle.name}' has no masked-LM head, so it cannot predict masked tokens. "
                        f"Pick {SUGGEST}, or look at its attention on the Attention page.")


def with_mask_token(text: str, tokenizer) -> str:
    """Accept `[MASK]` and `<mask>` whatever the model calls its mask token."""
    return re.sub(r"\[MASK\]|<mask>", tokenizer.mask_token, text, flags=re.IGNORECASE)


def head_logits(bundle: ModelBundle, hidden: torch.Tensor) -> torch.Tensor:
    """Apply the masked-LM head to hidden states `[..., dim]` -> logits `[..., vocab]`."""
    x = hidden
    for name in bundle.arch.mlm_head:
        x = getattr(bundle.model, name)(x)
    return x


@dataclass
class MaskPrediction:
    position: int
    original: str | None  # the token that stood there, when the user masked an existing token
    top: list[tuple[str, float]]  # final layer, best first
    layer_top: list[list[tuple[str, float]]]  # [layer + 1][k]: embeddings first
    layer_original_prob: list[float] | None = None
    layer_original_rank: list[int] | None = None  # 1 = top prediction


@dataclass
class MaskResult:
    capture: Capture
    predictions: list[MaskPrediction]


def _topk(probs: torch.Tensor, k: int, tok) -> list[tuple[str, float]]:
    p, i = probs.topk(k)
    return list(zip(tok.convert_ids_to_tokens(i.tolist()), [round(float(x), 6) for x in p]))


def _check_masks(bundle: ModelBundle, cap: Capture, masked: list[int]) -> None:
    if cap.truncated:
        raise MaskError(f"The text has {cap.n_input_tokens} tokens; this model takes at most "
                        f"{len(cap.tokens)}. Shorten it: masks past the limit would be cut off.")
    if not masked:
        raise MaskError(f"No mask in the text: write {bundle.tokenizer.mask_token} where a word should be "
                        "predicted, or choose tokens to mask.")
    if len(masked) >= int((~cap.special).sum()):
        raise MaskError("Every token is masked: nothing is left to predict from. Keep at least one word.")


def predict(bundle: ModelBundle, text: str, *, positions: tuple[int, ...] = (), top_k: int = 5,
            layers: bool = False) -> MaskResult:
    """Predict every mask: typed mask tokens in `text`, plus the input tokens at `positions`."""
    require_mlm_head(bundle)
    tok = bundle.tokenizer
    try:
        cap = capture(bundle, with_mask_token(text, tok), with_logits=True, mask_positions=tuple(positions))
    except CaptureError as e:
        raise MaskError(str(e)) from None
    masked = [i for i, t in enumerate(cap.input_ids.tolist()) if t == tok.mask_token_id]
    _check_masks(bundle, cap, masked)
    originals = {}
    if positions:
        plain_ids = tok(with_mask_token(text, tok))["input_ids"]
        originals = {p: plain_ids[p] for p in positions if p < len(plain_ids)}
    probs = torch.from_numpy(cap.logits).softmax(-1)
    layer_probs = None
    if layers:
        stack = next(iter(cap.hidden_states))
        with bundle.lock, torch.inference_mode():
            hidden = torch.from_numpy(cap.hidden_states[stack][:, masked])  # [layer+1, mask, dim]
            layer_probs = head_logits(bundle, hidden).float().softmax(-1)  # [layer+1, mask, vocab]
    out = []
    for j, pos in enumerate(masked):
        orig_id = originals.get(pos)
        pred = MaskPrediction(pos, tok.convert_ids_to_tokens(orig_id) if orig_id is not None else None,
                              _topk(probs[pos], top_k, tok), [])
        if layer_probs is not None:
            lp = layer_probs[:, j]  # [layer+1, vocab]
            pred.layer_top = [_topk(row, top_k, tok) for row in lp]
            if orig_id is not None:
                pred.layer_original_prob = [round(float(x), 6) for x in lp[:, orig_id]]
                pred.layer_original_rank = [int((row > row[orig_id]).sum()) + 1 for row in lp]
        out.append(pred)
    return MaskResult(cap, out)


@dataclass
class Sweep:
    tokens: list[str]
    positions: list[int]  # the non-special tokens, each masked in turn
    prob: np.ndarray  # [position] probability of the true token when it is masked
    rank: np.ndarray  # [position] its rank among the vocabulary (1 = best)

    @property
    def pll(self) -> float:
        """Pseudo-log-likelihood (natural log) of the sentence."""
        return float(np.log(np.clip(self.prob, 1e-12, None)).sum())


def mask_sweep(bundle: ModelBundle, text: str, *, batch_size: int = 16,
               on_progress: Callable[[float], None] | None = None) -> Sweep:
    """Mask each non-special token in turn (batched) and score the true token."""
    require_mlm_head(bundle)
    tok = bundle.tokenizer
    if not text or not text.strip():
        raise MaskError("The text is empty: type a sentence first.")
    ids = tok(text, return_tensors="pt")["input_ids"][0]
    if len(ids) > bundle.max_tokens:
        raise MaskError(f"The text has {len(ids)} tokens; this model takes at most {bundle.max_tokens}.")
    special = set(tok.all_special_ids)
    positions = [i for i, t in enumerate(ids.tolist()) if t not in special]
    probs, ranks = [], []
    for start in range(0, len(positions), batch_size):
        chunk = positions[start:start + batch_size]
        batch = ids.repeat(len(chunk), 1)
        rows = torch.arange(len(chunk))
        batch[rows, chunk] = tok.mask_token_id
        with bundle.lock, torch.inference_mode():
            logits = bundle.model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits
        p = logits[rows, chunk].float().softmax(-1)  # [chunk, vocab]
        true = ids[chunk]
        pt = p[rows, true]
        probs += pt.tolist()
        ranks += ((p > pt[:, None]).sum(-1) + 1).tolist()
        if on_progress:
            on_progress(min(1.0, (start + len(chunk)) / len(positions)))
    return Sweep(tok.convert_ids_to_tokens(ids.tolist()), positions, np.array(probs), np.array(ranks))
