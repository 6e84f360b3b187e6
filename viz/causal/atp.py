"""Attribution patching (AtP; Nanda 2023, Syed et al. 2023): the first-order estimate of every patch at once,

    AtP(a) = (a_clean − a_corrupt) · ∂m/∂a |corrupted run

from one forward and one backward of the corrupted input (plus one clean forward for a_clean), normalised like
exact patching by (m_clean − m_corrupt). Per site:
    resid_pre, attn_out, mlp_out   [layer, position]         dot product over d_model
    head_pos                       [layer, head, position]   dot product over d_head
    head                           [layer, head]             head_pos summed over positions
    pattern                        [layer, head]             Σ_{q,k} (A_clean − A_corrupt)[q, k] · ∂m/∂A[q, k], with
                                                             ∂m/∂A[q, k] = ∂m/∂z[q] · v[k] (z = A·V, per head)
It is a linear approximation: it misses what a saturated softmax hides and what cancels (Kramár et al. 2024,
AtP*), so pages show it beside the exact result with `compare` (correlation, largest disagreements).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from viz.causal.components import HEAD, STREAM_SITES, components, session
from viz.causal.patching import HEAD_SITES, PatchResult, check_site, default_stack
from viz.causal.task import PatchTask, wide, run_metric
from viz.core.models import ModelBundle


def _sites(bundle: ModelBundle) -> list[tuple[str, str]]:
    comps = components(bundle)
    out = []
    for stack in bundle.arch.stacks:
        for site in (*STREAM_SITES, HEAD):
            if site in comps.sites(stack):
                out.append((stack, site))
    return out


def _recorded(bundle: ModelBundle, task: PatchTask, which: str, sites, graph: bool):
    """One forward keeping `sites` and every attention pattern and value -> (store, recorder, metric)."""
    from viz.core.capture import recording

    ctx = torch.enable_grad() if graph else torch.inference_mode()
    with ctx, recording(bundle, qkv=True) as rec, session(bundle, read=sites, graph=graph) as s:
        m = run_metric(bundle, task, which)[0]
    return s.store, rec, m


def attribution(bundle: ModelBundle, task: PatchTask) -> dict[tuple[str, str], np.ndarray]:
    """(stack, site) -> normalised AtP for every site of every stack, sites as in the module docstring."""
    sites = _sites(bundle)
    clean, rec_clean, _ = _recorded(bundle, task, "clean", sites, graph=False)
    corrupt, rec_corrupt, m = _recorded(bundle, task, "corrupt", sites, graph=True)
    keys = [(k, layer) for k in sites for layer in sorted(corrupt[k])]
    grads = torch.autograd.grad(m, [corrupt[k][layer] for k, layer in keys], allow_unused=True)
    g = {key: (torch.zeros_like(corrupt[key[0]][key[1]]) if gr is None else gr) for key, gr in zip(keys, grads)}
    scale = task.metric_clean - task.metric_corrupt
    out: dict[tuple[str, str], np.ndarray] = {}
    for stack, site in sites:
        L = len(corrupt[(stack, site)])
        per = [((clean[(stack, site)][l] - corrupt[(stack, site)][l].detach()) * g[((stack, site), l)])
               .sum(-1)[0] for l in range(L)]  # [pos] or [pos, head]
        if site == HEAD:
            hp = torch.stack([wide(p).T for p in per]).numpy() / scale  # [layer, head, pos]
            out[(stack, "head_pos")] = hp
            out[(stack, "head")] = hp.sum(-1)
            out[(stack, "pattern")] = _pattern_atp(rec_clean, rec_corrupt, stack,
                                                   [g[((stack, site), l)] for l in range(L)]) / scale
        else:
            out[(stack, site)] = wide(torch.stack(per)).numpy() / scale
    return out


def _pattern_atp(rec_clean, rec_corrupt, stack: str, grads_z: list[torch.Tensor]) -> np.ndarray:
    """[layer, head]: Σ (A_clean − A_corrupt) · (∂m/∂z · vᵀ), z = A·V per head (GQA value heads repeated)."""
    rows = []
    for a_c, a_k, v, gz in zip(rec_clean.data[(stack, "attn")], rec_corrupt.data[(stack, "attn")],
                               rec_corrupt.data[(stack, "v")], grads_z):
        H = a_c.shape[1]
        v = wide(v.repeat_interleave(H // v.shape[1], dim=1)[0])  # [H, k, d]
        dA = torch.einsum("qhd,hkd->hqk", wide(gz[0]), v)
        rows.append(((wide(a_c[0]) - wide(a_k[0])) * dA).sum((-1, -2)))
    return torch.stack(rows).numpy()


def atp_result(bundle: ModelBundle, task: PatchTask, site: str, stack: str | None = None,
               table: dict | None = None) -> PatchResult:
    """One site of `attribution` as a PatchResult (method "atp"); pass `table` to reuse a computed one."""
    stack = stack or default_stack(task.kind, site)
    check_site(bundle, site, stack)
    t0 = time.perf_counter()
    table = table if table is not None else attribution(bundle, task)
    effect = table[(stack, site)]
    patched = task.metric_corrupt + effect * (task.metric_clean - task.metric_corrupt)
    return PatchResult(task, stack, site, "atp", effect, patched, forwards=2, seconds=time.perf_counter() - t0)


@dataclass
class Agreement:
    """AtP against exact patching on one site: Pearson r over the cells, and the cells where they differ most."""

    correlation: float
    worst: list[tuple[tuple, float, float]]  # (cell index, exact, atp), largest |exact − atp| first


def compare(exact: np.ndarray, atp: np.ndarray, top: int = 5) -> Agreement:
    e, a = np.asarray(exact, dtype=np.float64), np.asarray(atp, dtype=np.float64)
    ok = np.isfinite(e) & np.isfinite(a)
    r = float(np.corrcoef(e[ok], a[ok])[0, 1]) if ok.sum() > 1 and e[ok].std() > 0 and a[ok].std() > 0 else float("nan")
    gap = np.where(ok, np.abs(e - a), -1.0)
    order = np.argsort(gap, axis=None)[::-1][:top]
    worst = [(tuple(int(i) for i in np.unravel_index(k, e.shape)), float(e.flat[k]), float(a.flat[k]))
             for k in order if gap.flat[k] >= 0]
    return Agreement(r, worst)

