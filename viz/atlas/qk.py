"""Every query and key vector of a corpus for the heads of chosen layers, as the model computed them (after RoPE;
a grouped-query head's keys are its key/value head's): `gather_qk`, then one head's points (`head_points`,
normalised and projected by viz.analysis.qk) or every head's PCA as small multiples (`overview`).

The corpus runs like the Head atlas: length-sorted padded batches, progress after each, `should_stop` before each.
Padding is dropped: one point per real token and kind.

Shapes: q [N, layer, head, d], k [N, layer, kv_head, d], N = real tokens of the corpus, in sentence order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from viz.analysis.qk import Normalised, normalise, pca, project
from viz.atlas.core import DEFAULT_BATCH, DEFAULT_MAX_TOKENS, TokenClasses, atlas_stack, iter_batches, runner
from viz.core.capture import recording
from viz.core.models import ModelBundle

CLASSES = ("special", "punctuation", "word", "word piece")  # token classes: colour by class


@dataclass
class QKData:
    model: str
    stack: str
    layers: list[int]
    n_heads: int
    kv_heads: np.ndarray  # [head] the key/value head each query head reads
    q: np.ndarray  # [N, len(layers), head, d]
    k: np.ndarray  # [N, len(layers), kv_head, d]
    sentence: np.ndarray  # [N] corpus index
    position: np.ndarray  # [N] token position in its sentence
    tokens: list[str]  # [N]
    token_class: np.ndarray  # [N] index into CLASSES
    scaling: list[float]  # per layer: scores = q·k·scaling (+ mask)
    n_sentences: int = 0
    cancelled: bool = False
    sentence_tokens: dict[int, list[str]] = field(default_factory=dict)

    def head(self, layer: int, head: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw (q [N, d], k [N, d]) of one head."""
        li = self.layers.index(layer)
        return self.q[:, li, head], self.k[:, li, int(self.kv_heads[head])]


def gather_qk(bundle: ModelBundle, sentences: Sequence[str], layers: Sequence[int], *,
              max_tokens: int = DEFAULT_MAX_TOKENS, batch_size: int = DEFAULT_BATCH,
              progress: Callable[[int, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> QKData:
    """q and k of every head of `layers` for every real token of `sentences` (attention of the atlas's stack)."""
    stack = atlas_stack(bundle)
    n_layers = bundle.stack_layers(stack)
    layers = sorted({int(x) % n_layers for x in layers})
    tc = TokenClasses(bundle.tokenizer, bundle.lock)
    qs, ks, sent, pos, cls, toks = [], [], [], [], [], []
    by_sentence: dict[int, list[str]] = {}
    scaling: list[float] = []
    done, cancelled = 0, False
    fast = bool(getattr(bundle.tokenizer, "is_fast", False))  # word ids (word pieces) need a fast tokenizer
    for batch in iter_batches(bundle, sentences, batch_size=batch_size, max_tokens=max_tokens, words=fast):
        if should_stop is not None and should_stop():
            cancelled = True
            break
        with bundle.lock, torch.inference_mode(), recording(bundle, layers={stack: frozenset(layers)}, qkv=True,
                                                            weights=False, details=True) as rec:
            dev = bundle.device
            runner(bundle)(input_ids=batch.ids.to(dev), attention_mask=batch.mask.long().to(dev), use_cache=False)
        q = torch.stack(rec.data[(stack, "q")], 1).float().cpu()  # [B, layer, head, T, d]
        k = torch.stack(rec.data[(stack, "k")], 1).float().cpu()  # [B, layer, kv, T, d]
        scaling = rec.meta[(stack, "scaling")][:len(layers)]
        classes = tc.classes(batch.ids)  # [B, T, 4] cls, sep, punct, special
        for r, sid in enumerate(batch.sentence_ids.tolist()):
            n = int(batch.mask[r].sum())
            qs.append(q[r, :, :, :n].permute(2, 0, 1, 3).numpy())
            ks.append(k[r, :, :, :n].permute(2, 0, 1, 3).numpy())
            ids = batch.ids[r, :n].tolist()
            with bundle.lock:
                words = bundle.tokenizer.convert_ids_to_tokens(ids)
            wids = batch.word_ids[r][:n] if batch.word_ids else [None] * n
            c = np.where(classes[r, :n, 3].numpy(), 0, np.where(classes[r, :n, 2].numpy(), 1, 2))
            piece = np.array([t > 0 and w is not None and w == wids[t - 1] for t, w in enumerate(wids)])
            cls.append(np.where((c == 2) & piece, 3, c))
            sent.append(np.full(n, sid))
            pos.append(np.arange(n))
            toks.extend(words)
            by_sentence[sid] = words
        done += len(batch.ids)
        if progress is not None:
            progress(done, len(sentences))
    H = bundle.n_heads(stack)
    KV = ks[0].shape[2] if ks else bundle.n_kv_heads(stack)
    order = np.argsort(np.concatenate(sent), kind="stable") if sent else np.zeros(0, int)  # back to corpus order
    cat = (lambda xs, shape: np.concatenate(xs)[order] if xs else np.zeros(shape, np.float32))  # noqa: E731
    d = qs[0].shape[-1] if qs else 1
    return QKData(model=bundle.name, stack=stack, layers=layers, n_heads=H, kv_heads=np.arange(H) // max(1, H // KV),
                  q=cat(qs, (0, len(layers), H, d)), k=cat(ks, (0, len(layers), KV, d)),
                  sentence=cat(sent, (0,)).astype(np.int64), position=cat(pos, (0,)).astype(np.int64),
                  tokens=[toks[i] for i in order], token_class=cat(cls, (0,)).astype(np.int64),
                  scaling=scaling, n_sentences=done, cancelled=cancelled, sentence_tokens=by_sentence)


@dataclass
class HeadPoints:
    """One head's queries then keys, normalised (viz.analysis.qk.normalise) and projected: coords [2N, 2];
    kind [2N] 0 = query, 1 = key; sentence/position/token_class [2N]."""

    layer: int
    head: int
    method: str
    coords: np.ndarray
    kind: np.ndarray
    sentence: np.ndarray
    position: np.ndarray
    token_class: np.ndarray
    tokens: list[str]
    norm: Normalised


def head_points(data: QKData, layer: int, head: int, method: str = "pca", seed: int = 0, progress=None,
                should_stop=None) -> HeadPoints:
    q, k = data.head(layer, head)
    norm = normalise(q, k)
    coords = project(np.concatenate([norm.q, norm.k]), method, seed=seed, progress=progress, should_stop=should_stop)
    n = len(q)
    two = lambda a: np.concatenate([a, a])  # noqa: E731
    return HeadPoints(layer, head, method, coords, np.repeat([0, 1], n), two(data.sentence), two(data.position),
                      two(data.token_class), data.tokens + data.tokens, norm)


def overview(data: QKData, max_points: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every head's PCA (normalised q and k together) -> (coords [layer, head, 2 * n, 2], kind [2 * n]) on the same
    n <= max_points tokens (a seeded sample) for every head: a small multiple like the model view."""
    N = len(data.tokens)
    pick = np.sort(np.random.default_rng(seed).choice(N, size=min(N, max_points), replace=False))
    out = np.zeros((len(data.layers), data.n_heads, 2 * len(pick), 2), dtype=np.float32)
    for li, layer in enumerate(data.layers):
        for h in range(data.n_heads):
            q, k = data.head(layer, h)
            norm = normalise(q, k)
            coords = pca(np.concatenate([norm.q, norm.k]))[0]
            out[li, h] = np.concatenate([coords[:N][pick], coords[N:][pick]])
    return out, np.repeat([0, 1], len(pick))
