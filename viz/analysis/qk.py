"""Queries and keys of one head in one picture (AttentionViz, Yeh et al. 2023, IEEE VIS, §4).

A head scores query i against key j as q_i·k_j·scaling. Two changes leave every attention row unchanged and put
queries and keys in one comparable cloud:

- scale queries by a and keys by 1/a: every product q_i·k_j is unchanged;
- translate every key by one vector c: (a q_i)·(k_j / a + c) = q_i·k_j + a q_i·c, the same shift for every key of
  row i, and softmax ignores a shift shared by a row.

c puts the keys' centroid on the queries' (c = a mean(q) - mean(k) / a), and a is chosen (by bisection on log a)
so that queries and keys then have equal mean norms: the mean query-key offset is gone and neither set dwarfs the
other. (When no a in [1e-4, 1e4] equalises the norms, e.g. every query on one ray, the closest is used.)

Then both sets are projected together to 2-D: PCA (built in), t-SNE (scikit-learn, with progress and cancel) or
UMAP (umap-learn, only when installed). Shapes: q [N, d], k [M, d] (one head; a grouped-query head's keys are
its key/value head's).
"""

from __future__ import annotations

import contextvars
import importlib.util
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Normalised:
    q: np.ndarray  # [N, d] a * q
    k: np.ndarray  # [M, d] k / a + offset
    offset: np.ndarray  # [d] c, added to every key after scaling
    scale: float  # a


def normalise(q: np.ndarray, k: np.ndarray) -> Normalised:
    """Queries and keys with the key centroid on the query centroid and equal mean norms (module docstring); every
    row softmax(q_i·k_j·scaling over j) is unchanged."""
    q64, k64 = np.asarray(q, dtype=np.float64), np.asarray(k, dtype=np.float64)
    mu_q, centred = q64.mean(0), k64 - k64.mean(0)
    q_norm = np.linalg.norm(q64, axis=1).mean()

    # |k / a + c| = |centred / a + a mu_q|, from per-key constants: each bisection step is O(keys)
    kk, kq, qq = (centred ** 2).sum(1), centred @ mu_q, float(mu_q @ mu_q)

    def gap(log_a: float) -> float:  # mean |a q| - mean |k / a + c|: increasing in a
        a = np.exp(log_a)
        return a * q_norm - np.sqrt(np.maximum(kk / a ** 2 + 2 * kq + a ** 2 * qq, 0)).mean()

    lo, hi = np.log(1e-4), np.log(1e4)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if gap(mid) < 0 else (lo, mid)
    a = float(np.exp(0.5 * (lo + hi)))
    offset = a * mu_q - k64.mean(0) / a
    return Normalised((q64 * a).astype(np.float32), (k64 / a + offset).astype(np.float32), offset.astype(np.float32), a)


# ----------------------------------------------------------------------------- projections
METHODS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


class ProjectionCancelled(RuntimeError):
    """`should_stop()` said stop while a t-SNE was running."""


def available_methods() -> list[str]:
    """PCA and t-SNE always; UMAP when umap-learn is installed."""
    return ["pca", "tsne"] + (["umap"] if importlib.util.find_spec("umap") is not None else [])


def pca(x: np.ndarray, dims: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """x [N, d] -> (coordinates [N, dims], explained variance ratio [dims]); each axis' sign fixed so that its
    largest loading is positive (the same picture on every run)."""
    import torch  # its matmuls run on the threads torch is given (one in the app), not numpy's BLAS pool

    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    centred = x - x.mean(0)
    # the eigenvectors of the d x d scatter matrix: for points >> dimensions far cheaper than an SVD of the points
    values, vectors = (t.numpy() for t in torch.linalg.eigh(centred.T @ centred))
    order = np.argsort(values)[::-1][:dims]
    vt = vectors[:, order].T
    vt = vt * np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])[:, None]
    total = float(np.clip(values, 0, None).sum()) or 1.0
    coords = (centred @ torch.as_tensor(np.ascontiguousarray(vt.T))).numpy()
    return coords.astype(np.float32), np.clip(values[order], 0, None) / total


# t-SNE progress: scikit-learn's gradient descent is wrapped once; the wrapper reports to the callback set for the
# calling thread's context only (two sessions' t-SNEs never see each other's callbacks), as the recorder does.
_TSNE_TICK: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("viz_tsne_tick", default=None)
_PATCH_LOCK = threading.Lock()


def _install_tsne_progress() -> None:
    from sklearn.manifold import _t_sne

    with _PATCH_LOCK:
        if getattr(_t_sne._gradient_descent, "_viz", False):
            return
        original = _t_sne._gradient_descent

        def gradient_descent(objective, p0, *args, **kwargs):
            tick = _TSNE_TICK.get()
            if tick is None:
                return original(objective, p0, *args, **kwargs)

            def counted(p, *a, **kw):
                tick()
                return objective(p, *a, **kw)

            return original(counted, p0, *args, **kwargs)

        gradient_descent._viz = True
        _t_sne._gradient_descent = gradient_descent


def tsne(x: np.ndarray, seed: int = 0, max_iter: int = 500, progress: Callable[[int, int], None] | None = None,
         should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """t-SNE (scikit-learn, Barnes-Hut, PCA initialisation) of x [N, d] -> [N, 2]. progress(iteration, max_iter)
    every 10 iterations; should_stop() then too (raises ProjectionCancelled)."""
    from sklearn.manifold import TSNE

    _install_tsne_progress()
    x = np.asarray(x, dtype=np.float32)
    count = [0]

    def tick() -> None:
        count[0] += 1
        if count[0] % 10 == 0:
            if should_stop is not None and should_stop():
                raise ProjectionCancelled(f"t-SNE stopped after {count[0]} of {max_iter} iterations.")
            if progress is not None:
                progress(min(count[0], max_iter), max_iter)

    token = _TSNE_TICK.set(tick)
    try:
        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        out = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter,
                   method="barnes_hut").fit_transform(x)
    finally:
        _TSNE_TICK.reset(token)
    return out.astype(np.float32)


def project(x: np.ndarray, method: str = "pca", seed: int = 0, progress=None, should_stop=None) -> np.ndarray:
    """x [N, d] -> [N, 2] by `method` (METHODS)."""
    if method == "pca":
        return pca(x)[0]
    if method == "tsne":
        return tsne(x, seed=seed, progress=progress, should_stop=should_stop)
    if method == "umap":
        if "umap" not in available_methods():
            raise ValueError("UMAP needs umap-learn (pip install umap-learn); PCA and t-SNE work without it.")
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(np.asarray(x)).astype(np.float32)
    raise ValueError(f"Unknown projection '{method}': use one of {', '.join(METHODS)}.")
