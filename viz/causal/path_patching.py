"""Path patching for decoders (Wang et al. 2022, §3.1; Goldowsky-Dill et al. 2023): how much of the answer
comes back through the direct path from one sender head into one receiver head's query, key or value input.

For a sender head s in layer l_s and a receiver r in layer l_r > l_s:
    δ_s      = W_O[s] (z_clean[s] − z_corrupt[s])                 [pos, d_model]  s's change of the residual
                                                                                   (the output projection's bias
                                                                                   cancels)
    input_r  = proj_r(pre_norm_r(resid_pre_corrupt[l_r] + δ_s))   only r's own query (key, value) input sees δ_s;
                                                                   every other reader keeps the corrupted stream
and the corrupted run continues with that input in r alone: everything after r recomputes. The normalised
effect fills a sender × receiver matrix (NaN where l_r <= l_s: no path). This is TransformerLens's
`get_act_patch_direct_path`, batched: every (sender, receiver) pair is one row of a batched forward.

Grouped key/value heads: a key or value input belongs to a key/value head, shared by its group of query
heads, so k and v receivers are key/value heads (`KV0`, …); query receivers are query heads.
Only pre-norm stacks have such a path (the sublayer's output is added to the residual unchanged); post-norm
and sandwich-norm families (OPT with do_layer_norm_before=False, Gemma 2) are refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from viz.core.arch import DECODER
from viz.causal.components import HEAD, Q, RESID_PRE, components, session
from viz.causal.patching import rows_per_forward
from viz.causal.task import PatchError, PatchTask, run_metric
from viz.core.models import ModelBundle

COMPONENTS = ("q", "k", "v")


@dataclass
class PathResult:
    task: PatchTask
    component: str  # q | k | v
    senders: list[tuple[int, int]]  # (layer, head)
    receivers: list[tuple[int, int]]  # (layer, head) for q; (layer, kv head) for k and v
    effect: np.ndarray  # [sender, receiver], NaN where there is no path
    patched: np.ndarray
    forwards: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    grouped: bool = False  # k/v receivers are key/value heads

    @property
    def rows(self) -> list[str]:
        return [f"L{l} H{h}" for l, h in self.senders]

    @property
    def cols(self) -> list[str]:
        unit = "H" if self.component == Q or not self.grouped else "KV"
        return [f"L{l} {unit}{h}" for l, h in self.receivers]

    def to_json(self, digits: int = 6) -> dict:
        eff = np.round(self.effect.astype(np.float64), digits)
        return self.task.to_json(digits) | {"site": f"path_{self.component}", "method": "exact", "rows": self.rows,
                                            "cols": self.cols, "effect": np.where(np.isfinite(eff), eff, None).tolist()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"effect": self.effect, "patched": self.patched, "rows": np.array(self.rows), "cols": np.array(self.cols),
                "metric": np.array([self.task.metric_clean, self.task.metric_corrupt])}


def check_path(bundle: ModelBundle, component: str) -> None:
    if bundle.kind != "decoder":
        raise PatchError("Path patching is for decoder-only models (a sender head's output reaches later heads "
                         "through the residual stream); use activation patching for this model.")
    if component not in COMPONENTS:
        raise PatchError(f"Unknown receiver input '{component}': use q, k or v.")
    sub = components(bundle).parts[DECODER].sublayer
    if sub.add_norm or sub.post_norm:
        raise PatchError(f"'{bundle.name}' normalises each attention output before adding it to the residual "
                         "stream (post-norm or sandwich norm), so a head has no direct path to later heads: "
                         "path patching needs a pre-norm decoder (GPT-2, Llama, Qwen, Mistral, Phi-3, GPT-NeoX).")


def sender_writes(bundle: ModelBundle, z_clean: dict, z_corrupt: dict, layer: int) -> torch.Tensor:
    """[head, pos, d_model]: each head's change of the residual stream, W_O[h] (z_clean[h] − z_corrupt[h])."""
    comps = components(bundle)
    out = comps.module(DECODER, layer, "out")
    d = (z_clean[layer][0] - z_corrupt[layer][0])  # [pos, head, d_head]
    T, H, dh = d.shape
    z = torch.zeros(H, T, H, dh, dtype=d.dtype, device=d.device)
    z[torch.arange(H), :, torch.arange(H)] = d.transpose(0, 1)
    return out(z.reshape(H, T, H * dh)) - out(torch.zeros_like(z).reshape(H, T, H * dh))


def path_patch(bundle: ModelBundle, task: PatchTask, component: str = "q",
               receivers: Sequence[tuple[int, int]] | None = None, senders: Sequence[tuple[int, int]] | None = None,
               *, batch_size: int | None = None, progress: Callable[[int, int], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> PathResult:
    """The sender × receiver matrix (see the module docstring). Receivers default to every head after layer 0,
    senders to every head before the last receiver's layer."""
    check_path(bundle, component)
    t0 = time.perf_counter()
    comps = components(bundle)
    L, H, KV = comps.n_layers[DECODER], comps.n_heads[DECODER], comps.n_kv[DECODER]
    n_recv = H if component == Q else KV
    receivers = list(receivers) if receivers else [(l, h) for l in range(1, L) for h in range(n_recv)]
    for l, h in receivers:
        if not (0 <= l < L and 0 <= h < n_recv):
            raise PatchError(f"There is no receiver L{l} {'H' if component == Q else 'KV'}{h}: this model has {L} "
                             f"layers of {n_recv} {'heads' if component == Q else 'key/value heads'}.")
    last = max(l for l, _ in receivers)
    senders = list(senders) if senders else [(l, h) for l in range(last) for h in range(H)]
    with torch.inference_mode(), session(bundle, read=[(DECODER, RESID_PRE), (DECODER, HEAD)]) as s:
        run_metric(bundle, task, "corrupt")
    resid, z_corrupt = s.store[(DECODER, RESID_PRE)], s.store[(DECODER, HEAD)]
    with torch.inference_mode(), session(bundle, read=[(DECODER, HEAD)]) as s:
        run_metric(bundle, task, "clean")
    z_clean = s.store[(DECODER, HEAD)]

    values: dict[tuple[int, int], torch.Tensor] = {}  # (sender index, receiver index) -> [pos, d_head]
    with torch.inference_mode():
        writes = {l: sender_writes(bundle, z_clean, z_corrupt, l) for l in sorted({l for l, _ in senders})}
        for layer in sorted({l for l, _ in receivers}):
            idx = [i for i, (l, _) in enumerate(senders) if l < layer]
            if not idx:
                continue
            x = resid[layer][0] + torch.stack([writes[senders[i][0]][senders[i][1]] for i in idx])  # [S, pos, d]
            norm = comps.module(DECODER, layer, "pre_norm")
            proj = comps.project(DECODER, layer, component, norm(x) if norm is not None else x)  # [S, pos, n, d]
            for j, (l, h) in enumerate(receivers):
                if l == layer:
                    for k, i in enumerate(idx):
                        values[(i, j)] = proj[k, :, h]
    todo = sorted(values, key=lambda ij: (receivers[ij[1]][0], ij))
    patched = np.full((len(senders), len(receivers)), np.nan)
    n_rows = rows_per_forward(len(task.clean_ids), batch_size)
    forwards, cancelled = 0, False
    for start in range(0, len(todo), n_rows):
        if should_stop is not None and should_stop():
            cancelled = True
            break
        chunk = todo[start:start + n_rows]
        with torch.inference_mode(), session(bundle, edit={(DECODER, component): _edit(chunk, receivers, values)}):
            m = run_metric(bundle, task, "corrupt", len(chunk)).cpu().numpy()
        for (i, j), value in zip(chunk, m):
            patched[i, j] = value
        forwards += 1
        if progress is not None:
            progress(start + len(chunk), len(todo))
    return PathResult(task, component, senders, receivers, task.normalise(patched), patched, forwards,
                      time.perf_counter() - t0, cancelled, grouped=KV != H)


def _edit(chunk: list[tuple[int, int]], receivers: list[tuple[int, int]], values: dict):
    by_layer: dict[int, list[tuple[int, int, torch.Tensor]]] = {}
    for row, (i, j) in enumerate(chunk):
        layer, head = receivers[j]
        by_layer.setdefault(layer, []).append((row, head, values[(i, j)]))

    def edit(layer: int, x: torch.Tensor):  # x [N, pos, heads, d_head]
        todo = by_layer.get(layer)
        if not todo:
            return None
        x = x.clone()
        rows = torch.tensor([r for r, _, _ in todo], device=x.device)
        heads = torch.tensor([h for _, h, _ in todo], device=x.device)
        x[rows, :, heads] = torch.stack([v for _, _, v in todo]).to(x.dtype)
        return x

    return edit
