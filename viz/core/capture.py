"""Run text through a model bundle and collect what every head did -> `Capture`.

Attention is captured by one function registered in transformers' AttentionInterface
(`viz.core.recorder`), switched on per call by a ContextVar: two Streamlit sessions — threads that share
one cached model — never see each other's tensors, and nothing is left behind when a forward raises.

Selective capture: `layers` (indices, negative from the end) and `rows` (query positions, negative
from the end) keep only what a view shows; unrecorded layers run the fast SDPA path. `Capture.layers`
and `Capture.rows` say what a capture holds. Before running, `viz.core.budget` estimates the bytes the
request would hold and refuses, with advice, what would not fit (`VIZ_CAPTURE_MB`).

Shapes (numpy once they leave this module):
    attentions[stack]     [layer, head, row, key]       stack in encoder|decoder|cross
    hidden_states[stack]  [layer + 1, row, dim]         embeddings first (all layers, chosen rows)
    queries[stack]        [layer, head, row, head_dim]  as the attention function received them (after RoPE)
    keys/values[stack]    [layer, kv_head, key, head_dim]   kv_heads[stack][head] = the kv head a query head reads
    first_share[stack]    [layer, head]                 mean weight on the first token over rows i >= 1 (sink)
    thumbnails[stack]     [layer, head, P, P]           average-pooled weights, when `pool=P`
A full capture (`layers=None, rows=None`) has `[layer, head, token, token]` as before.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from viz.core.arch import CROSS, DECODER, ENCODER
from viz.core.budget import check_budget
from viz.core.errors import CaptureError, CaptureTooLarge  # noqa: F401  (re-exported: pages catch CaptureError)
from viz.core.interventions import Intervention, applied
from viz.core.models import ModelBundle
from viz.core.recorder import RECORDER, Recorder, active, first_share


def recording(bundle: ModelBundle, **plan):
    """Record every attention call of the forwards inside this context (thread- and task-local).
    `plan` fills `viz.core.recorder.Recorder` (layers, rows, weights, qkv, pool)."""
    n_layers = {s: bundle.stack_layers(s) for s in bundle.arch.stacks}
    return active(RECORDER, Recorder(n_layers=n_layers, **plan))


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
    logits: np.ndarray | None = None  # [row, vocab] of the stack the head predicts
    n_input_tokens: int = 0  # before truncation
    truncated: bool = False
    layers: dict[str, list[int]] = field(default_factory=dict)  # stack -> layer index of each attention slice
    rows: dict[str, list[int]] = field(default_factory=dict)  # stack -> query position of each row
    kv_heads: dict[str, np.ndarray] = field(default_factory=dict)  # stack -> [head] kv head each query head reads
    first_share: dict[str, np.ndarray] = field(default_factory=dict)  # stack -> [layer, head]
    thumbnails: dict[str, np.ndarray] = field(default_factory=dict)  # stack -> [layer, head, P, P]
    # with details=True: what each recorded layer's scores were made of (see viz.core.recorder)
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # stack -> [layer, row, key] additive, -inf = masked
    score_bias: dict[str, np.ndarray] = field(default_factory=dict)  # stack -> [layer, head, row, key] (T5)
    scaling: dict[str, np.ndarray] = field(default_factory=dict)  # stack -> [layer]
    softcap: dict[str, np.ndarray] = field(default_factory=dict)  # stack -> [layer], nan = none

    @property
    def stacks(self) -> list[str]:
        return [s for s in (ENCODER, DECODER, CROSS) if s in self.attentions]

    def axis_tokens(self, stack: str) -> tuple[list[str], list[str]]:
        """(query tokens, key tokens) for a stack's attention matrices."""
        src = self.tokens
        tgt = self.target_tokens if self.target_tokens is not None else self.tokens
        return {ENCODER: (src, src), DECODER: (tgt, tgt), CROSS: (tgt, src)}[stack]

    def head_keys(self, stack: str) -> np.ndarray:
        """Keys per *query* head [layer, head, key, head_dim]: a GQA group's kv head repeated (repeat_kv)."""
        return self.keys[stack][:, self.kv_heads[stack]]

    def head_values(self, stack: str) -> np.ndarray:
        """Values per *query* head [layer, head, key, head_dim] (see `head_keys`)."""
        return self.values[stack][:, self.kv_heads[stack]]

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
    """bool [token]: [CLS]/[SEP]/</s>/padding...; a mask token and an unknown-word token ([UNK]: an emoji, a rare
    script) stand for words the user typed: content, not special."""
    special_ids = set(tok.all_special_ids) - {tok.mask_token_id, tok.unk_token_id}
    return np.array([i in special_ids for i in ids], dtype=bool)


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
        labels = labels["input_ids"].to(bundle.device)
        start = torch.tensor([[model.config.decoder_start_token_id]], device=bundle.device)
        return torch.cat([start, labels[:, :-1]], dim=1), labels
    out = model.generate(**enc, max_new_tokens=min(64, bundle.max_tokens), do_sample=False, num_beams=1)
    return out[:, :-1], out[:, 1:]


def resolve(indices, n: int, what: str, allow_none: bool = False) -> list[int]:
    """Indices (negative from the end; None = all) -> sorted unique non-negative ones, or a CaptureError.
    `allow_none`: an empty selection is allowed (a stack left out of a per-stack selection)."""
    if indices is None:
        return list(range(n))
    if allow_none and len(indices) == 0:
        return []
    out = set()
    for i in indices:
        i = int(i)
        if not -n <= i < n:
            raise CaptureError(f"There is no {what} {i}: this input has {n} {what}s (0 to {n - 1}, or -1 for the last).")
        out.add(i % n)
    if not out:
        raise CaptureError(f"No {what} chosen: give at least one, or 'all'.")
    return sorted(out)


def _per_stack(selection):
    """`layers`/`rows` as given to `capture` -> stack -> that stack's indices (None = all)."""
    if isinstance(selection, dict):
        return lambda stack: selection.get(stack)
    return lambda stack: selection


def _query_lengths(bundle: ModelBundle, n_src: int, n_tgt: int | None) -> dict[str, int]:
    return {s: (n_src if s == ENCODER else n_tgt if n_tgt is not None else n_src) for s in bundle.arch.stacks}


def capture(bundle: ModelBundle, text: str, target: str | None = None, *, with_logits: bool = False,
            max_tokens: int | None = None, mask_positions: tuple[int, ...] = (),
            intervention: Intervention | None = None, layers=None, rows=None, qkv: bool = True,
            hidden: bool = True, weights: bool = True, pool: int = 0, details: bool = False) -> Capture:
    """Run `text` (and, for encoder-decoders, `target`) through the bundle and collect what was asked.

    layers: attention layers to keep (indices, negative from the end; None = all).
    rows: query positions to keep, for attention, queries, hidden states and logits (None = all).
    Either may be a dict {stack: indices} (a stack missing or None: all; for layers, [] records none of
    that stack): an encoder-decoder's decoder rows are not encoder positions (`viz.inside.walk`)
    qkv / hidden / weights: keep per-head q/k/v, hidden states, attention weights (False: only the
    first-token share and, with `pool=P`, [P, P] thumbnails of every recorded head).
    details: also keep each recorded layer's mask rows, position bias, scaling and soft-cap, so its
    scores can be recomputed from q and k alone (`viz.inside.walk`).
    Text longer than the model takes is truncated; `truncated` and `n_input_tokens` say so.
    Encoder-decoders without a target are teacher-forced on their own greedy output.
    `mask_positions` replaces those input tokens by the tokenizer's mask token; `intervention`
    (causal mask, ablated heads) changes the computation for this call only.
    Raises CaptureError (CaptureTooLarge when the request would not fit the memory budget).
    """
    text = _check_text(text)
    limit = min(max_tokens or bundle.max_tokens, bundle.max_tokens)
    model, tok = bundle.model, bundle.tokenizer
    with bundle.lock, torch.inference_mode():  # fast tokenizers are not thread-safe either
        enc, n_full = _encode(tok, text, limit)
        inputs = {"input_ids": enc["input_ids"].clone(), "attention_mask": enc["attention_mask"]}
        for pos in mask_positions:
            inputs["input_ids"][0, pos] = tok.mask_token_id
        inputs = {k: v.to(bundle.device) for k, v in inputs.items()}
        n_tgt = None
        if bundle.kind == "encoder-decoder":
            inputs["decoder_input_ids"], _ = _decoder_inputs(bundle, inputs, target)
            n_tgt = inputs["decoder_input_ids"].shape[1]
        lengths = _query_lengths(bundle, inputs["input_ids"].shape[1], n_tgt)
        layer_of, row_of = _per_stack(layers), _per_stack(rows)
        chosen = {s: resolve(layer_of(s), bundle.stack_layers(s), "layer", allow_none=isinstance(layers, dict))
                  for s in bundle.arch.stacks}
        picked = {s: resolve(row_of(s), lengths[s], "position") for s in bundle.arch.stacks}
        plan = dict(layers={s: frozenset(v) for s, v in chosen.items() if layer_of(s) is not None},
                    rows={s: torch.tensor(v) for s, v in picked.items() if row_of(s) is not None},
                    weights=weights, qkv=qkv, pool=pool, details=details)
        head_rows = row_of(ENCODER if bundle.kind == "encoder" else DECODER) is not None
        check_budget(bundle, lengths, chosen, picked, weights=weights, qkv=qkv, hidden=hidden, logits=with_logits)
        with recording(bundle, **plan) as rec, applied(bundle, intervention):
            out = model(**inputs, output_hidden_states=hidden, use_cache=False, return_dict=True,
                        **_logits_kwargs(model, with_logits, picked, bundle.kind, head_rows))
        ids = inputs["input_ids"][0].tolist()
        tokens, spans, special = _token_info(tok, enc, ids)
        cap = Capture(model_name=bundle.name, kind=bundle.kind, tokens=tokens, word_spans=spans, special=special,
                      input_ids=np.array(ids), n_input_tokens=n_full, truncated=n_full > len(ids),
                      layers=chosen, rows=picked)
        if bundle.kind == "encoder-decoder":
            dec_ids = inputs["decoder_input_ids"][0].tolist()
            cap.target_tokens = tok.convert_ids_to_tokens(dec_ids)
            cap.target_ids = np.array(dec_ids)
            cap.target_special = _special(tok, dec_ids)
            # shifted decoder inputs have no word ids: one span per token
            cap.target_word_spans = word_spans([None if s else i for i, s in enumerate(cap.target_special)])
        _fill(cap, rec, out, bundle, hidden)
        if with_logits and getattr(out, "logits", None) is not None:
            cap.logits = _logit_rows(out.logits[0], picked[ENCODER if bundle.kind == "encoder" else DECODER],
                                     head_rows)
    return cap


@functools.lru_cache(maxsize=None)
def _takes_logits_to_keep(model_class) -> bool:
    """Whether a class's forward has `logits_to_keep` (read once per class: `inspect.signature` is ~0.3 ms)."""
    import inspect

    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def _logits_kwargs(model, with_logits: bool, picked: dict, kind: str, selective: bool) -> dict:
    """Decoders compute only the logits shown (`logits_to_keep`): a 128k vocabulary at 4k tokens is ~2 GB."""
    if not _takes_logits_to_keep(type(model)):
        return {}
    if not with_logits:
        return {"logits_to_keep": 1}
    if selective and kind == "decoder":
        return {"logits_to_keep": torch.tensor(picked[DECODER], device=model.device)}
    return {}


def _logit_rows(logits: torch.Tensor, rows: list[int], selective: bool) -> np.ndarray:
    if selective and logits.shape[0] != len(rows):
        logits = logits[rows]
    return logits.float().cpu().numpy()


def _numpy(tensors: list[torch.Tensor]) -> np.ndarray:
    """[layer] x [1, ...] -> [layer, ...] float32 on the CPU."""
    return torch.stack([t[0] for t in tensors]).float().cpu().numpy()


def _fill(cap: Capture, rec: Recorder, out, bundle: ModelBundle, hidden: bool) -> None:
    for stack in bundle.arch.stacks:
        if not rec.recorded.get(stack):
            continue
        H, KV = bundle.n_heads(stack), bundle.n_kv_heads(stack)
        cap.kv_heads[stack] = np.arange(H) // max(1, H // KV)
        if rec.data.get((stack, "attn")):
            cap.attentions[stack] = _numpy(rec.data[(stack, "attn")])
        if rec.data.get((stack, "first")):
            cap.first_share[stack] = _numpy(rec.data[(stack, "first")])
        else:  # every row's weights were kept: one reduction over all layers (viz.core.recorder.first_share)
            cap.first_share[stack] = first_share(cap.attentions[stack])
        if rec.data.get((stack, "thumb")):
            cap.thumbnails[stack] = _numpy(rec.data[(stack, "thumb")])
        for part, dest in (("q", cap.queries), ("k", cap.keys), ("v", cap.values), ("bias", cap.score_bias)):
            if rec.data.get((stack, part)):
                dest[stack] = _numpy(rec.data[(stack, part)])
        if rec.data.get((stack, "mask")):
            m = _numpy([t[:, 0] for t in rec.data[(stack, "mask")]])  # [layer, row, key]
            cap.masks[stack] = np.where(m <= np.finfo(np.float32).min / 2, -np.inf, m).astype(np.float32)
            cap.scaling[stack] = np.array(rec.meta[(stack, "scaling")], dtype=np.float64)
            cap.softcap[stack] = np.array(rec.meta[(stack, "softcap")], dtype=np.float64)
        if KV != H and stack in cap.keys:  # the family's own count wins over the config's
            cap.kv_heads[stack] = np.arange(H) // max(1, H // cap.keys[stack].shape[1])
    if not hidden:
        return
    if bundle.kind == "encoder-decoder":
        cap.hidden_states[ENCODER] = _hidden(out.encoder_hidden_states, cap.rows[ENCODER])
        cap.hidden_states[DECODER] = _hidden(out.decoder_hidden_states, cap.rows[DECODER])
    else:
        stack = bundle.arch.stacks[0]
        cap.hidden_states[stack] = _hidden(out.hidden_states, cap.rows[stack])


def _hidden(states, rows: list[int]) -> np.ndarray:
    x = torch.stack([h[0] for h in states])
    if len(rows) != x.shape[1]:
        x = x[:, rows]
    return x.float().cpu().numpy()


def to_arrays(cap: Capture) -> dict[str, np.ndarray]:
    """The CLI/NPZ contract: `tokens`, `<stack>_attentions`, `<stack>_hidden_states`, ... (see `viz capture --help`)."""
    arrays: dict[str, np.ndarray] = {"tokens": np.array(cap.tokens), "input_ids": np.asarray(cap.input_ids),
                                     "special": cap.special,
                                     "word_spans": np.array(cap.word_spans, dtype=np.int64).reshape(-1, 2)}
    if cap.target_tokens is not None:
        arrays["target_tokens"] = np.array(cap.target_tokens)
    for stack, a in cap.attentions.items():
        arrays[f"{stack}_attentions"] = a
    for stack, h in cap.hidden_states.items():
        arrays[f"{stack}_hidden_states"] = h
    for name, d in (("queries", cap.queries), ("keys", cap.keys), ("values", cap.values),
                    ("kv_heads", cap.kv_heads), ("first_share", cap.first_share), ("thumbnails", cap.thumbnails)):
        for stack, a in d.items():
            arrays[f"{stack}_{name}"] = a
    for stack in cap.stacks:
        arrays[f"{stack}_layers"] = np.array(cap.layers.get(stack, range(len(cap.attentions[stack]))), dtype=np.int64)
        arrays[f"{stack}_rows"] = np.array(cap.rows.get(stack, range(cap.attentions[stack].shape[2])), dtype=np.int64)
    return arrays


def hook_count(model) -> int:
    """Forward (pre-)hooks attached anywhere in `model`. Capture adds none; leak tests compare counts."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
