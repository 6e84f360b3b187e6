"""One numbering convention for layers, heads and hidden states, on every page, figure and export.

Layers and heads count from 0: the first layer is L0, the last L{n-1}; the first head is H0.
A hidden state is named by the layer it leaves: "emb" (the embeddings, before any layer), then
L0 … L{n-1}. So `hidden_states[i]` (shape [layer + 1, token, dim]) is `level(i)`: "emb" for i = 0,
else L{i-1}; and attention of layer L{i} reads level(i) and writes level(i + 1).
"""

from __future__ import annotations

CONVENTION = ("Layers and heads count from 0: L0 is the first layer, H0 the first head. A hidden state is "
              "named by the layer it leaves: emb (the embeddings), then L0, L1, …")


def layer(i: int) -> str:
    return f"L{i}"


def head(i: int) -> str:
    return f"H{i}"


def level(i: int) -> str:
    """Hidden-state index (0 = embeddings) -> its name."""
    return "emb" if i == 0 else f"L{i - 1}"


def levels(n_levels: int) -> list[str]:
    """Names of `n_levels` hidden states (embeddings first)."""
    return [level(i) for i in range(n_levels)]
