"""The journey of hidden states through the layers.

How far each token's representation moves from layer to layer and how close it already is
to its final form (cosine similarity across layers, as in Ethayarajh 2019, "How Contextual
are Contextualized Word Representations?", §3, and Voita et al. 2019, "The Bottom-up
Evolution of Representations in the Transformer"), how alike tokens are within one layer
(Ethayarajh's self-similarity / anisotropy), and a 2-D PCA of each token's path.

Shapes:
    hidden   [level, token, dim]   level 0 = embeddings, level L = last layer's output
"""

from __future__ import annotations

import numpy as np


def _unit(h: np.ndarray) -> np.ndarray:
    h = np.asarray(h, dtype=np.float64)
    return h / np.clip(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12, None)


def consecutive_cosine(hidden: np.ndarray) -> np.ndarray:
    """cos(h_l[t], h_{l+1}[t]) for every token: [level - 1, token]; low = the layer changed the token a lot."""
    u = _unit(hidden)
    return (u[:-1] * u[1:]).sum(axis=-1)


def cosine_to_final(hidden: np.ndarray) -> np.ndarray:
    """cos(h_l[t], h_L[t]): [level, token]; the last row is 1."""
    u = _unit(hidden)
    return (u * u[-1:]).sum(axis=-1)


def token_similarity(hidden: np.ndarray) -> np.ndarray:
    """Cosine similarity between every pair of tokens at every level: [level, token, token]."""
    u = _unit(hidden)
    return np.einsum("ltd,lsd->lts", u, u)


def pca_paths(hidden: np.ndarray, n_components: int = 2, normalise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Each token's path through the levels projected onto the top principal components of all
    (level, token) vectors pooled: returns (paths [level, token, n_components], explained variance ratio).

    `normalise` scales each vector to unit length first: hidden-state norms grow through the
    layers, and without it the first component mostly tracks the layer index.
    """
    h = _unit(hidden) if normalise else np.asarray(hidden, dtype=np.float64)
    levels, tokens, dim = h.shape
    flat = h.reshape(-1, dim)
    centred = flat - flat.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(n_components, vt.shape[0])
    proj = centred @ vt[:k].T
    var = s ** 2
    ratio = var[:k] / max(var.sum(), 1e-12)
    return proj.reshape(levels, tokens, k), ratio
