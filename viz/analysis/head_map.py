"""A 2-D map of heads: each head is a point placed by its statistics, grouped by k-means.

The statistics have different units (nats, positions, shares), so each column is z-scored
across heads first; the map is the first two principal components (PCA by SVD), and the
clusters come from k-means (Lloyd 1982) with k-means++ seeding (Arthur & Vassilvitskii 2007)
on the z-scored statistics (not on the 2-D projection, which loses information).

Shapes: features [head_count, stat] -> coords [head_count, 2], labels [head_count].
"""

from __future__ import annotations

import numpy as np


def standardize(features: np.ndarray) -> np.ndarray:
    """z-score each column; constant columns become 0 (NaN is treated as the column mean)."""
    x = np.asarray(features, dtype=np.float64)
    mu = np.nanmean(x, axis=0)
    x = np.where(np.isnan(x), mu, x)
    sd = x.std(axis=0)
    return (x - mu) / np.where(sd > 0, sd, 1.0)


def pca_2d(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n, d] centred -> (coords [n, 2], explained variance ratio [2])."""
    z = z - z.mean(axis=0)
    u, s, _ = np.linalg.svd(z, full_matrices=False)
    coords = u[:, :2] * s[:2]
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    var = s ** 2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    return coords, np.pad(ratio, (0, 2 - len(ratio)))


def kmeans(z: np.ndarray, k: int, seed: int = 0, iters: int = 100) -> np.ndarray:
    """Cluster labels [n] (deterministic for a seed); k is clipped to the number of distinct points."""
    rng = np.random.default_rng(seed)
    n = len(z)
    k = max(1, min(k, len(np.unique(z.round(12), axis=0))))
    centres = [z[rng.integers(n)]]
    for _ in range(1, k):  # k-means++: next centre far from the chosen ones
        d2 = np.min([((z - c) ** 2).sum(1) for c in centres], axis=0)
        centres.append(z[rng.choice(n, p=d2 / d2.sum())] if d2.sum() > 0 else z[rng.integers(n)])
    centres = np.array(centres)
    labels = np.zeros(n, dtype=int)
    for _ in range(iters):
        new = ((z[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        if (new == labels).all() and _ > 0:
            break
        labels = new
        for j in range(k):
            if (labels == j).any():
                centres[j] = z[labels == j].mean(0)
    return labels


def head_map(features: np.ndarray, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[heads, stats] -> (coords [heads, 2], cluster labels [heads], explained variance [2])."""
    z = standardize(features)
    coords, ratio = pca_2d(z)
    return coords, kmeans(z, k, seed), ratio
