"""Run text through a model bundle and collect what every head did -> `Capture`.

Hooks are installed once per loaded model and are *switched on per call* by a
ContextVar (the pattern of transformers' `utils/output_capturing.py`): a hook
whose recorder is unset does nothing, so two Streamlit sessions — threads that
share one cached model — never see each other's tensors. As TransformerLens warns,
hooks are global state: nothing here adds a hook per request, and the recorder is
reset in a `finally` even when the forward raises.

Shapes (numpy once they leave this module):
    attentions[stack]     [layer, head, query, key]     stack in encoder|decoder|cross
    hidden_states[stack]  [layer + 1, token, dim]       embeddings first
    queries/keys/values   [layer, head, token, head_dim]
"""

from __future__ import annotations

import threading
from collections import defaultdict
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from viz.arch import CROSS, DECODER, ENCODER
from viz.interventions import Intervention, applied
from viz.models import ModelBundle


class CaptureError(ValueError):
    """Bad input for a capture; the message is meant for the user."""


class _Recorder:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str], list[torch.Tensor]] = defaultdict(list)


_ACTIVE: ContextVar[_Recorder | None] = ContextVar("viz_capture_recorder", default=None)
_INSTALL_LOCK = threading.Lock()


# ----------------------------------------------------------------------------- hooks
def _weights_hook(stack: str):
    def hook(module, args, output):
        rec = _ACTIVE.get()
        if rec is not None:
            rec.data[(stack, "attn")].append(output[-1])  # weights are last in every supported family

    hook._viz = True
    return hook


def _proj_hook(stack: str, parts: tuple[str, ...]):
    """Record a projection's output; a fused qkv output is split into its `parts`."""

    def hook(module, args, output):
        rec = _ACTIVE.get()
        if rec is None:
            return
        chunks = output.split(output.shape[-1] // len(parts), dim=-1) if len(parts) > 1 else (output,)
        for part, chunk in zip(parts, chunks):
            rec.data[(stack, part)].append(chunk)

    hook._viz = True
    return hook


def install_hooks(bundle: ModelBundle) -> int:
    """Attach the capture hooks to `bundle.model` once; returns how many hooks it holds."""
    model = bundle.model
    with _INSTALL_LOCK:
        handles = getattr(model, "_viz_hook_handles", None)
        if handles:
            return len(handles)
        handles = []
        modules = dict(model.named_modules())
        for name, module in modules.items():
            for stack, site in bundle.arch.sites.items():
                if not site.matches(name):
                    continue
                handles.append(module.register_forward_hook(_weights_hook(stack)))
                if site.fused:
                    handles.append(modules[f"{name}.{site.query}"].register_forward_hook(
                        _proj_hook(stack, ("q", "k", "v"))))
                else:
                    for part, child in (("q", site.query), ("k", site.key), ("v", site.value)):
                        handles.append(modules[f"{name}.{child}"].register_forward_hook(_proj_hook(stack, (part,))))
        if not handles:
            raise RuntimeError(f"No attention modules found in {type(model).__name__}; arch.py needs an entry.")
        model._viz_hook_handles = handles
        return len(handles)


def remove_hooks(bundle: ModelBundle) -> None:
    for h in getattr(bundle.model, "_viz_hook_handles", None) or []:
        h.remove()
    bundle.model._viz_hook_handles = []


def hook_count(model) -> int:
    """Our forward hooks currently attached anywhere in `model` (for leak tests; transformers has its own)."""
    return sum(getattr(h, "_viz", False) for m in model.modules() for h in m._forward_hooks.values())


@contextmanager
def recording(bundle: ModelBundle) -> Iterator[_Recorder]:
    """Switch the bundle's hooks on for this context only (thread- and task-local)."""
    install_hooks(bundle)
    rec = _Recorder()
    token = _ACTIVE.set(rec)
    try:
        yield rec
    finally:
        _ACTIVE.reset(token)


# ----------------------------------------------------------------------------- the contract
@dataclass
class Capture:
    """Everything one run produced, as numpy. Tokens of the decoder stack are `target_tokens`
    for encoder-decoder models and `tokens` for decoder-only models."""

    model_name: str
    kind: str
    tokens: list[str]
    word_spans: list[tuple[int, int]]  # [start, end) over `tokens`
    special: np.ndarray  # bool [token]
    attentions: dict[str, np.ndarray] = field(default_factory=dict)
    hidden_states: dict[str, np.ndarray] = field(default_factory=dict)
    queries: dict[str, np.ndarray] = field(default_factory=dict)
    keys: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    target_tokens: list[str] | None = None
    target_word_spans: list[tuple[int, int]] | None = None
    target_special: np.ndarray | None = None
    input_ids: np.ndarray | None = None
    target_ids: np.ndarray | None = None
    logits: np.ndarray | None = None  # [token, vocab] of the stack the head predicts
    n_input_tokens: int = 0  # before truncation
    truncated: bool = False

    @property
    def stacks(self) -> list[str]:
        return [s for s in (ENCODER, DECODER, CROSS) if s in self.attentions]

    def axis_tokens(self, stack: str) -> tuple[list[str], list[str]]:
        """(query tokens, key tokens) for a stack's attention matrices."""
        src = self.tokens
        tgt = self.target_tokens if self.target_tokens is not None else self.tokens
        return {ENCODER: (src, src), DECODER: (tgt, tgt), CROSS: (tgt, src)}[stack]

    def axis_spans(self, stack: str):
        src = (self.word_spans, self.special)
        tgt = (self.target_word_spans, self.target_special) if self.target_tokens is not None else src
        return {ENCODER: (src, src), DECODER: (tgt, tgt), CROSS: (tgt, src)}[stack]


def word_spans(word_ids: list[int | None]) -> list[tuple[int, int]]:
    """Merge consecutive sub-word pieces of one word; each special token is its own span."""
    spans: list[tuple[int, int]] = []
    for i, w in enumerate(word_ids):
        if spans and w is not None and word_ids[i - 1] == w:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


def _encode(tok, text: str, max_tokens: int, target: bool = False):
    """Tokenize once; only a text over the limit is tokenized again, truncated (keeps the final [SEP])."""
    kw = {"text_target": text} if target else {"text": text}
    enc = tok(**kw, return_tensors="pt")
    n = enc["input_ids"].shape[1]
    if n > max_tokens:
        enc = tok(**kw, truncation=True, max_length=max_tokens, return_tensors="pt")
    return enc, n


def _token_info(tok, enc, ids: list[int]):
    tokens = tok.convert_ids_to_tokens(ids)
    try:
        wids = enc.word_ids(0)
    except (ValueError, AttributeError):  # slow tokenizers have no word ids: one span per token
        wids = list(range(len(ids)))
    special = _special(tok, ids)
    wids = [None if s else w for w, s in zip(wids, special)]
    return tokens, word_spans(wids), special


def _special(tok, ids: list[int]) -> np.ndarray:
    """bool [token]: [CLS]/[SEP]/</s>/padding...; a mask token is content, not special."""
    special_ids = set(tok.all_special_ids) - {tok.mask_token_id}
    return np.array([i in special_ids for i in ids], dtype=bool)


def _stack_heads(tensors: list[torch.Tensor], n_heads: int) -> np.ndarray:
    """[layer] x [1, token, heads*dim] -> [layer, head, token, dim]."""
    x = torch.stack([t[0] for t in tensors]).float()
    L, T, D = x.shape
    # a strided view, not a copy: capture stays within a few % of a plain forward at 512 tokens
    return x.reshape(L, T, n_heads, D // n_heads).permute(0, 2, 1, 3).numpy()


def _check_text(text: str, what: str = "text") -> str:
    if text is None or not str(text).strip():
        raise CaptureError(f"The {what} is empty: type a sentence first.")
    return str(text)


def _decoder_inputs(bundle: ModelBundle, enc, target: str | None):
    """Teacher-forced (decoder inputs, labels), each `[1, target]`: `target` tokenized and shifted right
    behind the start token, or the model's own greedy output."""
    model, tok = bundle.model, bundle.tokenizer
    if target is not None:
        labels, n = _encode(tok, _check_text(target, "target"), bundle.max_tokens, target=True)
        if n > bundle.max_tokens:
            raise CaptureError(f"The target has {n} tokens; this model takes at most {bundle.max_tokens}.")
        labels = labels["input_ids"]
        start = model.config.decoder_start_token_id
        return torch.cat([torch.tensor([[start]]), labels[:, :-1]], dim=1), labels
    out = model.generate(**enc, max_new_tokens=min(64, bundle.max_tokens), do_sample=False, num_beams=1)
    return out[:, :-1], out[:, 1:]


def capture(bundle: ModelBundle, text: str, target: str | None = None, *, with_logits: bool = False,
            max_tokens: int | None = None, mask_positions: tuple[int, ...] = (),
            intervention: Intervention | None = None) -> Capture:
    """Run `text` (and, for encoder-decoders, `target`) through the bundle and collect everything.

    Text longer than the model takes is truncated; `truncated` and `n_input_tokens` say so.
    Encoder-decoders without a target are teacher-forced on their own greedy output.
    `mask_positions` replaces those input tokens by the tokenizer's mask token; `intervention`
    (causal mask, ablated heads) changes the computation for this call only.
    """
    text = _check_text(text)
    limit = min(max_tokens or bundle.max_tokens, bundle.max_tokens)
    model, tok = bundle.model, bundle.tokenizer
    with bundle.lock, torch.inference_mode():  # fast tokenizers are not thread-safe either
        enc, n_full = _encode(tok, text, limit)
        inputs = {"input_ids": enc["input_ids"].clone(), "attention_mask": enc["attention_mask"]}
        for pos in mask_positions:
            inputs["input_ids"][0, pos] = tok.mask_token_id
        if bundle.kind == "encoder-decoder":
            inputs["decoder_input_ids"], _ = _decoder_inputs(bundle, inputs, target)
        with recording(bundle) as rec, applied(bundle, intervention):
            out = model(**inputs, output_hidden_states=True, use_cache=False, return_dict=True)
        ids = inputs["input_ids"][0].tolist()
        tokens, spans, special = _token_info(tok, enc, ids)
        cap = Capture(model_name=bundle.name, kind=bundle.kind, tokens=tokens, word_spans=spans, special=special,
                      input_ids=np.array(ids), n_input_tokens=n_full, truncated=n_full > len(ids))
        if bundle.kind == "encoder-decoder":
            dec_ids = inputs["decoder_input_ids"][0].tolist()
            cap.target_tokens = tok.convert_ids_to_tokens(dec_ids)
            cap.target_ids = np.array(dec_ids)
            cap.target_special = _special(tok, dec_ids)
            # shifted decoder inputs have no word ids: one span per token
            cap.target_word_spans = word_spans([None if s else i for i, s in enumerate(cap.target_special)])
        _fill(cap, rec, out, bundle)
        if with_logits and getattr(out, "logits", None) is not None:
            cap.logits = out.logits[0].float().numpy()
    return cap


def _fill(cap: Capture, rec: _Recorder, out, bundle: ModelBundle) -> None:
    for stack in bundle.arch.stacks:
        attn = rec.data.get((stack, "attn"))
        if not attn:
            continue
        cap.attentions[stack] = torch.stack([a[0] for a in attn]).float().numpy()
        n_heads = cap.attentions[stack].shape[1]
        for part, dest in (("q", cap.queries), ("k", cap.keys), ("v", cap.values)):
            if rec.data.get((stack, part)):
                dest[stack] = _stack_heads(rec.data[(stack, part)], n_heads)
    if bundle.kind == "encoder-decoder":
        cap.hidden_states[ENCODER] = _hidden(out.encoder_hidden_states)
        cap.hidden_states[DECODER] = _hidden(out.decoder_hidden_states)
    else:
        cap.hidden_states[bundle.arch.stacks[0]] = _hidden(out.hidden_states)


def _hidden(states) -> np.ndarray:
    return torch.stack([h[0] for h in states]).float().numpy()


def to_arrays(cap: Capture) -> dict[str, np.ndarray]:
    """The CLI/NPZ contract: `tokens`, `<stack>_attentions`, `<stack>_hidden_states`, ... (see `viz capture --help`)."""
    arrays: dict[str, np.ndarray] = {"tokens": np.array(cap.tokens), "special": cap.special,
                                     "word_spans": np.array(cap.word_spans, dtype=np.int64).reshape(-1, 2)}
    if cap.target_tokens is not None:
        arrays["target_tokens"] = np.array(cap.target_tokens)
    for stack, a in cap.attentions.items():
        arrays[f"{stack}_attentions"] = a
    for stack, h in cap.hidden_states.items():
        arrays[f"{stack}_hidden_states"] = h
    for name, d in (("queries", cap.queries), ("keys", cap.keys), ("values", cap.values)):
        for stack, a in d.items():
            arrays[f"{stack}_{name}"] = a
    return arrays
