"""Heads of two models matched by what they do: head-to-head similarity and a one-to-one assignment.

Heads have no identity across models ("L3 H7" of one model is not "L3 H7" of another), so a comparison first
matches them by behaviour. Similarity of head a (model A) and head b (model B) over the same rows (query positions
of the same sentences, at the same level: tokens, or words when the tokenizers differ):

    sim(a, b) = 1 - mean over rows r of JSD(A_a[r], B_b[r])        JSD in bits, so sim is in [0, 1]
    JSD(p, q) = H(m) - (H(p) + H(q)) / 2,   m = (p + q) / 2        (Lin 1991)

The matching is the one-to-one assignment of heads that maximises the summed similarity (the Hungarian method,
`scipy.optimize.linear_sum_assignment`); with unequal head counts the smaller model's heads are all matched.

Cost: H(m) has to be computed for every pair of heads and every attention cell, (heads_A x heads_B x cells);
`SimilarityAccumulator.add` does it as [heads, cells] blocks of packed cells (no padding), a few A heads against
all B heads at a time, one log per cell and pair, the sums kept in float64 (bench/bench_match.py).

Shapes: packed rows `[head, cell]`: every head's attention cells of some sentences, flattened in one order shared
by both models (row-major per sentence, sentences one after the other); `rows` = how many attention rows those cells
form. Heads are numbered row-major by layer then head (index = layer * H + head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Every cell gets TINY / 2 added before the logs, so a cell equal to 0 (masked, underflowed) counts 0 * log 0 = 0
# and no pass clamps it; it changes no cell above ~1e-23 in float32.
TINY = 1e-30


def _xlogx_sum(x: torch.Tensor) -> torch.Tensor:
    """sum over the last axis of x log x, in float64."""
    return (x * torch.log(x)).sum(-1, dtype=torch.float64)


class SimilarityAccumulator:
    """Sums of JSD terms between every head of A and every head of B over packed cells, batch after batch.

    add(a [NA, D], b [NB, D], rows): fold in D cells forming `rows` attention rows. similarity(): [NA, NB]."""

    def __init__(self, n_a: int, n_b: int, block_cells: int = 1024, block_heads: int = 8) -> None:
        self.n_a, self.n_b = n_a, n_b
        self.plogp = np.zeros(n_a)  # sum of p log p per head of A (nats)
        self.qlogq = np.zeros(n_b)
        self.mass_a, self.mass_b = np.zeros(n_a), np.zeros(n_b)  # sum of the cells (= rows when rows sum to 1)
        self.slogs = np.zeros((n_a, n_b))  # sum of s log s, s = p + q
        self.rows = 0
        self.block_cells, self.block_heads = block_cells, block_heads

    def add(self, a: torch.Tensor, b: torch.Tensor, rows: int) -> None:
        a = a.detach().float() + TINY / 2
        b = b.detach().float() + TINY / 2
        if a.shape[0] != self.n_a or b.shape[0] != self.n_b or a.shape[1] != b.shape[1]:
            raise ValueError(f"packed cells of A {tuple(a.shape)} and B {tuple(b.shape)} do not line up "
                             f"({self.n_a} and {self.n_b} heads, one cell order)")
        self.rows += int(rows)
        self.mass_a += a.sum(-1, dtype=torch.float64).numpy()
        self.mass_b += b.sum(-1, dtype=torch.float64).numpy()
        self.plogp += _xlogx_sum(a).numpy()
        self.qlogq += _xlogx_sum(b).numpy()
        D, c = a.shape[1], self.block_heads
        acc = torch.zeros((self.n_a, self.n_b), dtype=torch.float64)
        for d0 in range(0, D, self.block_cells):
            ad, bd = a[:, d0:d0 + self.block_cells], b[:, d0:d0 + self.block_cells]
            s = torch.empty((min(c, self.n_a), self.n_b, ad.shape[1]))
            logs = torch.empty_like(s)
            for i in range(0, self.n_a, c):
                n = min(c, self.n_a - i)
                si, li = s[:n], logs[:n]
                torch.add(ad[i:i + n, None], bd[None], out=si)  # s = p + q for n heads of A x every head of B
                torch.log(si, out=li)
                li.mul_(si)
                acc[i:i + n] += li.sum(-1)  # float32 within a block of cells, float64 across blocks
        self.slogs += acc.numpy()

    def jsd(self) -> np.ndarray:
        """[NA, NB] mean JSD per row, in bits (0 = the same rows, 1 = disjoint supports)."""
        if self.rows == 0:
            return np.full((self.n_a, self.n_b), np.nan)
        # sum m log m with m = s / 2  =  (sum s log s - ln 2 * sum s) / 2
        mlogm = 0.5 * (self.slogs - math.log(2) * (self.mass_a[:, None] + self.mass_b[None]))
        total = 0.5 * (self.plogp[:, None] + self.qlogq[None]) - mlogm  # sum over rows of JSD, nats
        return np.clip(total / self.rows / math.log(2), 0.0, 1.0)

    def similarity(self) -> np.ndarray:
        return 1.0 - self.jsd()


def head_similarity(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, rows: int) -> np.ndarray:
    """Packed cells of both models `[NA, D]`, `[NB, D]` forming `rows` rows -> similarity `[NA, NB]`."""
    acc = SimilarityAccumulator(a.shape[0], b.shape[0])
    acc.add(torch.as_tensor(np.array(a)) if isinstance(a, np.ndarray) else a,
            torch.as_tensor(np.array(b)) if isinstance(b, np.ndarray) else b, rows)
    return acc.similarity()


def pack(attn: np.ndarray | torch.Tensor) -> torch.Tensor:
    """One sentence's attention `[layer, head, q, k]` -> packed cells `[layer * head, q * k]`."""
    t = torch.as_tensor(np.array(attn) if isinstance(attn, np.ndarray) and not attn.flags.writeable else attn)
    return t.reshape(t.shape[0] * t.shape[1], -1)


@dataclass(frozen=True)
class Pair:
    a: int  # head index of A (layer * H_A + head)
    b: int  # head index of B
    similarity: float


def assign(similarity: np.ndarray) -> list[Pair]:
    """The one-to-one assignment maximising the summed similarity (Hungarian method), in A's head order."""
    from scipy.optimize import linear_sum_assignment

    sim = np.asarray(similarity, dtype=np.float64)
    rows, cols = linear_sum_assignment(np.nan_to_num(sim, nan=0.0), maximize=True)
    return sorted((Pair(int(i), int(j), float(sim[i, j])) for i, j in zip(rows, cols)), key=lambda p: p.a)


def split(index: int, heads: int) -> tuple[int, int]:
    """Head index -> (layer, head)."""
    return index // heads, index % heads


# ----------------------------------------------------------------------------- a studio run through training
@dataclass
class Lineage:
    """Each final head followed back through a run's snapshots (studio probe sentence).

    steps [S]; matched [S, N] = the head of snapshot s assigned to final head n; similarity [S, N] its similarity;
    N = layers * heads of the final snapshot (head index = layer * H + head)."""

    steps: np.ndarray
    matched: np.ndarray
    similarity: np.ndarray
    layers: int
    heads: int


def follow_heads(probe_attn: np.ndarray, steps: np.ndarray, final: int = -1) -> Lineage:
    """`probe_attn [S, L, H, T, T]` (training/snapshots.npz) -> every snapshot's heads matched to snapshot
    `final`'s (the last: the trained model), so a head can be followed through training."""
    S, L, H = probe_attn.shape[:3]
    ref = pack(probe_attn[final])
    rows = probe_attn.shape[3]
    matched = np.zeros((S, L * H), dtype=np.int64)
    sims = np.zeros((S, L * H))
    for s in range(S):
        sim = head_similarity(pack(probe_attn[s]), ref, rows)
        for p in assign(sim):
            matched[s, p.b], sims[s, p.b] = p.a, p.similarity
    return Lineage(np.asarray(steps), matched, sims, L, H)
