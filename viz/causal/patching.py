"""Exact activation patching (Meng et al. 2022; Wang et al. 2022; Heimersheim & Nanda 2024): run the corrupted
input with one component's clean activation put in, and measure how much of the answer comes back.

Sweeps (effect normalised by `PatchTask.normalise`: 0 = nothing restored, 1 = all):
    resid_pre, attn_out, mlp_out   [layer, position]          one (layer, position) per patched run
    head                           [layer, head]              a head's output at every position
    head_pos                       [layer, head, position]    a head's output at one position
    pattern                        [layer, head]              a head's attention pattern (all rows): its output
                                                              becomes pattern_clean · V_corrupt, which is what
                                                              the corrupted run computes from the clean pattern
Stacks: `encoder` / `decoder` (self-attention and the stream), `cross` (an encoder–decoder's cross-attention
heads: head, head_pos, pattern, attn_out). Positions count along the patched stack.

Batched: the N patched variants of a chunk are the N rows of one forward of the corrupted input; each row's
edit touches its own row only (`viz.causal.components` sessions). `alpha` < 1 patches a_corrupt +
alpha·(a_clean − a_corrupt) instead (the finite difference that attribution patching approximates).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from viz.core.arch import CROSS, DECODER, ENCODER
from viz.causal.components import HEAD, RESID_PRE, STREAM_SITES, components, session
from viz.causal.task import PatchError, PatchTask, model_inputs, run_metric
from viz.core.models import ModelBundle

HEAD_SITES = ("head", "head_pos", "pattern")
SWEEP_SITES = (*STREAM_SITES, *HEAD_SITES)
TOKENS_PER_FORWARD = 8192  # rows x tokens of one batched forward


@dataclass
class PatchResult:
    """One sweep. `effect` normalised, `patched` the raw metric of each patched run (NaN where not run)."""

    task: PatchTask
    stack: str
    site: str
    method: str  # exact | atp
    effect: np.ndarray  # [layer, position] | [layer, head] | [layer, head, position]
    patched: np.ndarray
    forwards: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def rows(self) -> list[str]:
        return [f"L{i}" for i in range(self.effect.shape[0])]

    @property
    def cols(self) -> list:
        if self.site in HEAD_SITES:
            return [f"H{i}" for i in range(self.effect.shape[1])]
        return list(range(self.effect.shape[1]))

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.task.tokens(self.stack)

    def to_json(self, digits: int = 6) -> dict:
        eff = np.round(self.effect.astype(np.float64), digits)
        out = self.task.to_json(digits) | {"site": self.site, "stack": self.stack, "method": self.method,
                                           "rows": self.rows, "cols": self.cols,
                                           "effect": np.where(np.isfinite(eff), eff, None).tolist()}
        if self.site == "head_pos":
            out["positions"] = list(range(self.effect.shape[2]))
        out["position_tokens"] = list(self.tokens)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {"effect": self.effect, "patched": self.patched, "rows": np.array(self.rows),
                "cols": np.array([str(c) for c in self.cols]), "position_tokens": np.array(self.tokens),
                "clean_tokens": np.array(self.task.clean_tokens), "corrupt_tokens": np.array(self.task.corrupt_tokens),
                "metric": np.array([self.task.metric_clean, self.task.metric_corrupt])}


# ----------------------------------------------------------------------------- what a sweep patches
def default_stack(kind: str, site: str) -> str:
    """Encoders: the encoder. Decoders: the decoder. Encoder–decoders: the decoder's stream and the cross-attention
    heads (the decoder reads the same prefix in both runs: what differs arrives through cross-attention)."""
    if kind == "encoder":
        return ENCODER
    return CROSS if kind == "encoder-decoder" and site in HEAD_SITES else DECODER


def check_site(bundle: ModelBundle, site: str, stack: str) -> None:
    if site not in SWEEP_SITES:
        raise PatchError(f"Unknown site '{site}': use one of {', '.join(SWEEP_SITES)}.")
    if stack not in bundle.arch.stacks:
        raise PatchError(f"'{bundle.name}' has no {stack} stack (it has: {', '.join(bundle.arch.stacks)}).")
    if stack == CROSS and site in (RESID_PRE, "mlp_out"):
        raise PatchError(f"Cross-attention has no {site} of its own: patch the decoder's stream instead.")


def variants(site: str, n_layers: int, n_heads: int, n_pos: int) -> list[tuple]:
    """Every patched run of a sweep, layer-major: (layer, position) | (layer, head) | (layer, head, position)."""
    if site in STREAM_SITES:
        return [(l, p) for l in range(n_layers) for p in range(n_pos)]
    if site == "head_pos":
        return [(l, h, p) for l in range(n_layers) for h in range(n_heads) for p in range(n_pos)]
    return [(l, h) for l in range(n_layers) for h in range(n_heads)]


def _edit(chunk: list[tuple], site: str, source: dict[int, torch.Tensor], alpha: float):
    """The edit of one batched forward: row i of the batch gets variant chunk[i] from `source[layer]`
    ([1, pos, d_model] for the stream; [1, pos, head, d_head] for heads)."""
    by_layer: dict[int, list[tuple[int, tuple]]] = {}
    for row, v in enumerate(chunk):
        by_layer.setdefault(v[0], []).append((row, v[1:]))

    def edit(layer: int, x: torch.Tensor) -> torch.Tensor | None:
        todo = by_layer.get(layer)
        if not todo:
            return None
        rows = torch.tensor([r for r, _ in todo], device=x.device)
        src = source[layer][0].to(x.dtype)
        if site in STREAM_SITES:  # x [N, pos, d]
            pos = torch.tensor([v[0] for _, v in todo], device=x.device)
            idx, new = (rows, pos), src[pos]
        elif site == "head_pos":  # x [N, pos, head, d]
            heads = torch.tensor([v[0] for _, v in todo], device=x.device)
            pos = torch.tensor([v[1] for _, v in todo], device=x.device)
            idx, new = (rows, pos, heads), src[pos, heads]
        else:  # a head at every position: x[rows, :, heads] is [n, pos, d]
            heads = torch.tensor([v[0] for _, v in todo], device=x.device)
            idx, new = (rows, slice(None), heads), src[:, heads].transpose(0, 1)
        x = x.clone()
        x[idx] = new if alpha == 1.0 else x[idx] + alpha * (new - x[idx])
        return x

    return edit


# ----------------------------------------------------------------------------- clean activations
def read_sites(bundle: ModelBundle, task: PatchTask, which: str, sites) -> dict:
    """One forward of the clean or corrupted input keeping `sites` ((stack, site) pairs) -> (stack, site) -> layer
    -> tensor. An encoder's output layer is not run: nothing is read after its last block."""
    with torch.inference_mode(), session(bundle, read=sites) as s:
        if task.kind == "encoder":
            bundle.model.base_model(**model_inputs(bundle, task, which))
        else:
            run_metric(bundle, task, which)
    return s.store


def pattern_values(bundle: ModelBundle, task: PatchTask, stack: str) -> dict[int, torch.Tensor]:
    """layer -> [1, pos, head, d_head]: each head's output if its pattern were the clean one and its values the
    corrupted ones (pattern_clean · V_corrupt, GQA value heads repeated)."""
    from viz.core.capture import recording

    def record(which: str):
        with torch.inference_mode(), recording(bundle, layers={stack: None}, qkv=True) as rec:
            run_metric(bundle, task, which)
        return rec.data[(stack, "attn")], rec.data[(stack, "v")]

    attn_clean, _ = record("clean")
    _, v_corrupt = record("corrupt")
    out = {}
    for layer, (a, v) in enumerate(zip(attn_clean, v_corrupt)):  # a [1, H, q, k], v [1, KV, k, d]
        H, KV = a.shape[1], v.shape[1]
        v = v.repeat_interleave(H // KV, dim=1)
        out[layer] = torch.einsum("bhqk,bhkd->bqhd", a.to(v.dtype), v)
    return out


def _sources(bundle: ModelBundle, task: PatchTask, site: str, stack: str) -> dict[int, torch.Tensor]:
    if site == "pattern":
        return pattern_values(bundle, task, stack)
    base = HEAD if site in HEAD_SITES else site
    store = read_sites(bundle, task, "clean", [(stack, base)])
    return store[(stack, base)]


# ----------------------------------------------------------------------------- the sweep
def rows_per_forward(n_tokens: int, batch_size: int | None = None) -> int:
    return max(1, batch_size or min(64, TOKENS_PER_FORWARD // max(1, n_tokens)))


def sweep(bundle: ModelBundle, task: PatchTask, site: str, stack: str | None = None, *, alpha: float = 1.0,
          batch_size: int | None = None, progress: Callable[[int, int], None] | None = None,
          should_stop: Callable[[], bool] | None = None, measure=None) -> PatchResult:
    """Exact patching of every component of one kind (see the module docstring). `progress(done, total)` after
    each batched forward; `should_stop()` before each: a stopped sweep returns `cancelled=True` (NaN where not run).
    `measure(bundle, task, n)` -> [n]: what a batched forward of the corrupted input returns per row (default: the
    task's metric; the benchmark reads an encoder's output instead)."""
    measure = measure or (lambda b, t, n: run_metric(b, t, "corrupt", n))
    stack = stack or default_stack(task.kind, site)
    check_site(bundle, site, stack)
    t0 = time.perf_counter()
    comps = components(bundle)
    L, H = comps.n_layers[stack], comps.n_heads[stack]
    n_pos = len(task.tokens(stack))
    todo = variants(site, L, H, n_pos)
    source = _sources(bundle, task, site, stack)
    shape = {"head": (L, H), "pattern": (L, H), "head_pos": (L, H, n_pos)}.get(site, (L, n_pos))
    patched = np.full(shape, np.nan)
    n_rows = rows_per_forward(max(len(task.clean_ids), len(task.decoder_ids)), batch_size)
    key = (stack, HEAD if site in HEAD_SITES else site)
    done, cancelled, forwards = 0, False, 0
    for start in range(0, len(todo), n_rows):
        if should_stop is not None and should_stop():
            cancelled = True
            break
        chunk = todo[start:start + n_rows]
        with torch.inference_mode(), session(bundle, edit={key: _edit(chunk, site, source, alpha)}):
            m = measure(bundle, task, len(chunk)).cpu().numpy()
        for v, value in zip(chunk, m):
            patched[v] = value
        done += len(chunk)
        forwards += 1
        if progress is not None:
            progress(done, len(todo))
    return PatchResult(task, stack, site, "exact", task.normalise(patched), patched, forwards,
                       time.perf_counter() - t0, cancelled)


def patch_all_positions(bundle: ModelBundle, task: PatchTask, site: str, layer: int, stack: str | None = None) -> float:
    """The normalised effect of patching one stream site at every position of one layer at once."""
    stack = stack or default_stack(task.kind, site)
    source = _sources(bundle, task, site, stack)[layer]

    def edit(l: int, x: torch.Tensor):
        return source.to(x.dtype).expand_as(x).clone() if l == layer else None

    with torch.inference_mode(), session(bundle, edit={(stack, site): edit}):
        m = float(run_metric(bundle, task, "corrupt")[0])
    return float(task.normalise(m))
