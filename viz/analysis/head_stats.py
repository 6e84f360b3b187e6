"""Per-head attention statistics over a corpus, aggregated as it streams.

What a head *does* shows over many sentences (Clark et al. 2019, "What does BERT look at?",
§3-4: heads that attend to [SEP] as a no-op, to the previous or next token, to punctuation;
"broad" heads with high entropy). `HeadStatsAccumulator` takes one padded batch of attention
at a time and keeps only per-head sums, counts and a running top-k of sentences, so memory
stays flat however long the corpus is.

The accumulator is also the *partial sums* of a chunk of the corpus (viz.atlas.chunks): float64
sums, int64 counts and a top-k kept in a total order (score descending, then sentence id
ascending), so `merge` of the chunks' accumulators gives the same result in any order and
on any worker (up to float64 addition order, which viz.atlas.chunks fixes by merging in
chunk order).

Shapes:
    attn        [batch, layer, head, query, key]   one padded batch, rows sum to 1 over real keys
    mask        [batch, token] bool                 real (non-padding) tokens
    query_rows  [batch, token] bool                 rows that enter the statistics
    groups      [batch, token, 3] bool              key classes, in GROUPS order: cls, sep, punct

Definitions (per query row i of one sentence, over its real keys j; a_ij renormalised to sum
to 1 over real keys so padded keys never count):
    entropy   -sum_j a_ij ln a_ij   (nats)                          Clark et al. 2019 §3 (Fig. 4)
    distance  sum_j a_ij |i - j|    (positions: tokens, or words)   Vig & Belinkov 2019 §4.2
    cls       sum of a_ij over keys j that are the start token ([CLS], <s>, BOS)
    sep       sum of a_ij over keys j that are separator/end tokens ([SEP], </s>, EOS)
    punct     sum of a_ij over keys j made only of Unicode punctuation (P* categories)
    self      a_ii
    prev      a_i,i-1   over rows whose previous position is a real token
    next      a_i,i+1   over rows whose next position is a real token
    first     a_i,f     f = the first real position, over rows i > f: the share on the first token, whatever
                        it is (the "attention sink" of StreamingLLM, Xiao et al. 2023; for a model whose first
                        token is [CLS]/BOS it equals cls on those rows)
A head's statistic is the mean over every counted row of the corpus (token-weighted, as in
Clark et al.): rows of special tokens are *not* counted (`query_rows`), their columns are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

STATS = ("entropy", "distance", "cls", "sep", "punct", "self", "prev", "next", "first")
GROUPS = ("cls", "sep", "punct")
SHARES = ("cls", "sep", "punct", "self", "prev", "next", "first")

# A head is given the role of the share it exceeds most (value / threshold, ties: this order).
# 0.5 follows Clark et al.'s "more than half of its attention" reading of their Fig. 2-3;
# punctuation is ~10% of tokens, so 30% on it is already a strong preference.
ROLE_THRESHOLDS = {"prev": 0.5, "next": 0.5, "self": 0.5, "cls": 0.5, "sep": 0.5, "punct": 0.3}
ROLE_NAMES = {"prev": "previous-token", "next": "next-token", "self": "self", "cls": "[CLS]",
              "sep": "[SEP]/end (no-op)", "punct": "punctuation"}
TOP_MIN_ROWS = 3  # sentences with fewer counted rows never enter a head's top-k
BROAD_FRACTION = 0.8  # "broad": mean entropy >= 80% of the mean of ln(#keys), the uniform maximum


def row_stats(attn: torch.Tensor, mask: torch.Tensor, groups: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-row statistics of one padded batch.

    attn [B, L, H, T, T], mask [B, T] bool, groups [B, T, 3] bool (cls, sep, punct)
    -> {stat: [B, L, H, T]}: values for every query row (padding rows are garbage; weight them out).
    """
    attn = attn.float()
    keyf = mask.to(attn.dtype)[:, None, None, None, :]
    a = attn * keyf
    a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)  # padded keys never count
    T = a.shape[-1]
    pos = torch.arange(T, dtype=a.dtype)
    dist = (pos[:, None] - pos[None, :]).abs()  # [T, T]
    out = {"entropy": -torch.special.xlogy(a, a).sum(-1),
           "distance": torch.einsum("blhqk,qk->blhq", a, dist)}
    shares = a @ groups.to(a.dtype)[:, None, None, :, :]  # [B, L, H, T, 3]
    for g, name in enumerate(GROUPS):
        out[name] = shares[..., g]
    out["self"] = torch.diagonal(a, dim1=-2, dim2=-1)
    zero = a.new_zeros(a.shape[:-2] + (1,))  # [B, L, H, 1]
    out["prev"] = torch.cat([zero, torch.diagonal(a, offset=-1, dim1=-2, dim2=-1)], -1)  # row i -> key i-1
    out["next"] = torch.cat([torch.diagonal(a, offset=1, dim1=-2, dim2=-1), zero], -1)  # row i -> key i+1
    first = first_position(mask).to(a.device)  # [B]: the first real key (padding may sit on either side)
    out["first"] = a[torch.arange(a.shape[0], device=a.device), :, :, :, first]  # [B, L, H, T]
    return out


def first_position(mask: torch.Tensor) -> torch.Tensor:
    """[B, T] bool -> [B] long: the index of each row's first True (0 for a row without any)."""
    return mask.to(torch.int8).argmax(-1)


def row_weights(mask: torch.Tensor, query_rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Which rows count for which statistic: [B, T] float per stat (prev/next need that neighbour)."""
    rows = (query_rows & mask).float()
    has_prev = torch.zeros_like(mask)
    has_prev[:, 1:] = mask[:, :-1]
    has_next = torch.zeros_like(mask)
    has_next[:, :-1] = mask[:, 1:]
    w = {s: rows for s in STATS}
    w["prev"] = rows * has_prev.float()
    w["next"] = rows * has_next.float()
    after_first = torch.arange(mask.shape[1], device=mask.device)[None, :] > first_position(mask)[:, None]
    w["first"] = rows * after_first.float()  # the first token's own row would always give 1
    return w


def merge_words(attn: torch.Tensor, word_index: torch.Tensor, n_words: int) -> torch.Tensor:
    """Token attention -> word attention (Clark et al. 2019 §2: sum over key pieces, mean over query pieces).

    attn [B, L, H, T, T]; word_index [B, T] long: the word of each token, -1 for padding
    -> [B, L, H, W, W] with W = n_words; rows of padded words are zero.
    """
    B, T = word_index.shape
    word_index = word_index.to(attn.device)
    member = torch.zeros(B, n_words, T, dtype=attn.dtype, device=attn.device)
    valid = word_index >= 0
    b_idx, t_idx = valid.nonzero(as_tuple=True)
    member[b_idx, word_index[b_idx, t_idx], t_idx] = 1.0
    to_words = attn @ member.transpose(1, 2)[:, None, None]  # [B, L, H, T, W]: sum over key pieces
    mean_q = member / member.sum(-1, keepdim=True).clamp_min(1)
    return mean_q[:, None, None] @ to_words  # [B, L, H, W, W]: mean over query pieces


def top_merge(scores: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best candidates along the last axis in a total order: score descending, then sentence id
    ascending (ties never depend on which chunk or batch came first). -> (scores, ids), ids -1 = none."""
    order = ids.argsort(dim=-1, stable=True)
    scores, ids = scores.gather(-1, order), ids.gather(-1, order)
    order = scores.argsort(dim=-1, descending=True, stable=True)[..., :k]
    scores, ids = scores.gather(-1, order), ids.gather(-1, order)
    return scores, ids.masked_fill(scores == -torch.inf, -1)


@dataclass
class HeadStatsAccumulator:
    """Running per-head sums over batches; `means()` gives {stat: [layer, head]}.

    Also keeps, per statistic and head, the `top_k` sentences (by their sentence-mean of that
    statistic) so a page can show where a head's pattern is strongest: [stat, layer, head, k].
    Sums are float64, counts int64; `merge` adds another accumulator's (a chunk's partial sums).
    """

    n_layers: int
    n_heads: int
    top_k: int = 5
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    log_keys: float = 0.0  # sum of ln(#real keys) over counted rows: the entropy of uniform attention
    top_scores: torch.Tensor | None = None  # [stat, L, H, k] float32
    top_ids: torch.Tensor | None = None  # [stat, L, H, k] sentence ids, -1 = none

    def __post_init__(self) -> None:
        L, H, k = self.n_layers, self.n_heads, self.top_k
        self.sums = {s: np.zeros((L, H)) for s in STATS}
        self.counts = {s: 0 for s in STATS}
        self.top_scores = torch.full((len(STATS), L, H, k), -torch.inf)
        self.top_ids = torch.full((len(STATS), L, H, k), -1, dtype=torch.long)

    def add(self, attn: torch.Tensor, mask: torch.Tensor, query_rows: torch.Tensor, groups: torch.Tensor,
            sentence_ids: torch.Tensor | None = None) -> None:
        """Fold one batch in. attn [B, L, H, T, T]; mask, query_rows [B, T] bool; groups [B, T, 3];
        sentence_ids [B] long (corpus index of each row of the batch, for the top-k). The tensors may
        live on an accelerator: only the reduced sums come back to the CPU."""
        rs = row_stats(attn, mask, groups)
        ws = row_weights(mask, query_rows)
        per_sentence = []
        for s in STATS:
            w = ws[s]
            self.sums[s] += torch.einsum("blhq,bq->lh", rs[s].double(), w.double()).cpu().numpy()
            self.counts[s] += int(w.sum().item())  # a sum of 0/1 weights: exact
            n = w.sum(-1)  # [B]
            mean = torch.einsum("blhq,bq->blh", rs[s], w) / n.clamp_min(1)[:, None, None]
            # a sentence with one or two counted rows would top every list by chance: it needs TOP_MIN_ROWS
            per_sentence.append(mean.masked_fill((n < TOP_MIN_ROWS)[:, None, None], -torch.inf))
        n_keys = mask.sum(-1, keepdim=True).float()  # [B, 1]
        self.log_keys += float((ws["entropy"] * n_keys.clamp_min(1).log()).sum())
        if sentence_ids is not None:
            self._update_top(torch.stack(per_sentence).permute(0, 2, 3, 1).cpu(), sentence_ids.cpu())  # [S, L, H, B]

    def _update_top(self, scores: torch.Tensor, sentence_ids: torch.Tensor) -> None:
        ids = sentence_ids.view(1, 1, 1, -1).expand_as(scores)
        self.top_scores, self.top_ids = top_merge(torch.cat([self.top_scores, scores], -1),
                                                  torch.cat([self.top_ids, ids], -1), self.top_k)

    def merge(self, other: "HeadStatsAccumulator") -> None:
        """Add another accumulator's sums, counts and top-k (same layers, heads and k) into this one."""
        if (other.n_layers, other.n_heads, other.top_k) != (self.n_layers, self.n_heads, self.top_k):
            raise ValueError(f"cannot merge statistics of {other.n_layers}x{other.n_heads} heads (top {other.top_k}) "
                             f"into {self.n_layers}x{self.n_heads} (top {self.top_k})")
        for s in STATS:
            self.sums[s] += other.sums[s]
            self.counts[s] += other.counts[s]
        self.log_keys += other.log_keys
        self.top_scores, self.top_ids = top_merge(torch.cat([self.top_scores, other.top_scores], -1),
                                                  torch.cat([self.top_ids, other.top_ids], -1), self.top_k)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (to save as .npz or send between processes): sums [stat, L, H] float64,
        counts [stat] int64, log_keys [] float64, top_scores [stat, L, H, k] float32, top_ids int64."""
        return {"sums": np.stack([self.sums[s] for s in STATS]),
                "counts": np.array([self.counts[s] for s in STATS], dtype=np.int64),
                "log_keys": np.float64(self.log_keys), "top_scores": self.top_scores.numpy(),
                "top_ids": self.top_ids.numpy()}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "HeadStatsAccumulator":
        n, L, H, k = a["top_ids"].shape
        if n != len(STATS) or len(a["sums"]) != len(STATS):
            raise ValueError(f"partial sums of {n} statistics, this version keeps {len(STATS)} ({', '.join(STATS)})")
        acc = cls(L, H, k)
        acc.sums = {s: np.array(a["sums"][i], dtype=np.float64) for i, s in enumerate(STATS)}
        acc.counts = {s: int(a["counts"][i]) for i, s in enumerate(STATS)}
        acc.log_keys = float(a["log_keys"])
        acc.top_scores = torch.from_numpy(np.array(a["top_scores"], dtype=np.float32))
        acc.top_ids = torch.from_numpy(np.array(a["top_ids"], dtype=np.int64))
        return acc

    def means(self) -> dict[str, np.ndarray]:
        """{stat: [layer, head]} corpus means (NaN where no row counted)."""
        return {s: self.sums[s] / self.counts[s] if self.counts[s] else np.full_like(self.sums[s], np.nan)
                for s in STATS}

    @property
    def max_entropy(self) -> float:
        """Mean over counted rows of ln(#keys): what a uniform head would score."""
        return self.log_keys / self.counts["entropy"] if self.counts["entropy"] else float("nan")


def head_roles(means: dict[str, np.ndarray], max_entropy: float) -> np.ndarray:
    """[layer, head] role labels from `ROLE_THRESHOLDS` (documented above); 'broad' / 'mixed' otherwise."""
    ratios = np.stack([means[s] / t for s, t in ROLE_THRESHOLDS.items()])  # [role, L, H]
    names = np.array([ROLE_NAMES[s] for s in ROLE_THRESHOLDS])
    best = np.nanargmax(np.nan_to_num(ratios, nan=-1.0), axis=0)
    roles = np.where(np.take_along_axis(ratios, best[None], 0)[0] >= 1, names[best], "")
    broad = means["entropy"] >= BROAD_FRACTION * max_entropy
    return np.where(roles != "", roles, np.where(broad, "broad", "mixed")).astype(object)
