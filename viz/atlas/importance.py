"""Head importance by gradient of the masked-LM loss w.r.t. per-head gates (Michel et al. 2019,
"Are Sixteen Heads Really Better than One?", §4.1, eq. 2-3): I_h = E_x |dL(x)/dxi_h|.

`head_mask` was removed from transformers v5, so the gates xi [layer, head] (ones, requiring
grad) scale each head's output inside our attention function (`viz.core.recorder.Edit`), just before
the heads are mixed by the output projection. The gates live in a ContextVar for this scope only:
another session sharing the cached model never sees them.

Masking is BERT's (Devlin et al. 2019 §3.1): 15% of the non-special tokens are chosen; of those
80% become [MASK], 10% a random token, 10% stay; the loss is over the chosen tokens only.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from viz.atlas.core import Batch, TokenClasses, iter_batches
from viz.core.arch import ENCODER
from viz.core.models import ModelBundle
from viz.core.recorder import EDIT, Edit, active


class NoMaskedLMHead(ValueError):
    pass


@contextmanager
def head_gates(bundle: ModelBundle, n_heads: int) -> Iterator[torch.Tensor]:
    """Gates [layer, head] (ones, requires_grad) scale the encoder's head outputs in this scope only."""
    L = bundle.stack_layers(ENCODER)
    gates = torch.ones(L, n_heads, requires_grad=True, device=bundle.device)
    edit = Edit(n_layers={ENCODER: L}, scales={(ENCODER, layer): gates[layer] for layer in range(L)})
    with active(EDIT, edit):
        yield gates


def mask_tokens(ids: torch.Tensor, maskable: torch.Tensor, mask_id: int, vocab_size: int,
                generator: torch.Generator, rate: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking. ids, maskable [B, T] -> (inputs [B, T], labels [B, T] with -100 where not chosen).
    At least one token per row with a maskable token is chosen, so short sentences still count."""
    r = torch.rand(ids.shape, generator=generator)
    chosen = (r < rate) & maskable
    # rows where chance chose nothing: choose the maskable token with the smallest draw
    empty = ~chosen.any(-1) & maskable.any(-1)
    if empty.any():
        first = r.masked_fill(~maskable, 2.0).argmin(-1)
        chosen[empty, first[empty]] = True
    labels = ids.masked_fill(~chosen, -100)
    how = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (how < 0.8)] = mask_id
    rnd = chosen & (how >= 0.8) & (how < 0.9)
    inputs[rnd] = torch.randint(vocab_size, (int(rnd.sum()),), generator=generator)
    return inputs, labels


def head_importance(bundle: ModelBundle, sentences: Sequence[str], *, batch_size: int = 16, max_tokens: int = 128,
                    seed: int = 0, normalize: bool = False,
                    progress: Callable[[int, int], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """[layer, head] mean |dL/dgate| over batches (Michel et al. 2019 eq. 3, with the expectation taken
    over batches: a batch's loss is the mean over its masked tokens); with `normalize`, each layer is
    divided by its l2 norm (their §4.1 note). Masking is seeded: the same call gives the same numbers.
    Raises NoMaskedLMHead for models without a masked-LM head."""
    if not bundle.has_mlm_head:
        raise NoMaskedLMHead(
            f"'{bundle.name}' has no masked-LM head, so there is no masked-LM loss to take gradients of. "
            "Pick a model with one (e.g. minilm-mlm, when it is installed) for head importance; the "
            "statistics above work for every model.")
    model, tok = bundle.model, bundle.tokenizer
    n_heads = int(model.config.num_attention_heads)
    tc = TokenClasses(tok, bundle.lock)
    gen = torch.Generator().manual_seed(seed)
    total, n_batches, done = None, 0, 0
    for batch in iter_batches(bundle, sentences, batch_size, max_tokens):
        if should_stop is not None and should_stop():
            break
        g = _batch_grad(bundle, batch, tc, gen, n_heads)
        if g is not None:
            total = g if total is None else total + g
            n_batches += 1
        done += len(batch.ids)
        if progress is not None:
            progress(done, len(sentences))
    if total is None:
        return np.full((bundle.n_layers, n_heads), np.nan)
    imp = (total / n_batches).numpy()
    if normalize:
        imp = imp / np.clip(np.linalg.norm(imp, axis=1, keepdims=True), 1e-12, None)
    return imp


def _batch_grad(bundle: ModelBundle, batch: Batch, tc: TokenClasses, gen: torch.Generator,
                n_heads: int) -> torch.Tensor | None:
    tok, model = bundle.tokenizer, bundle.model
    maskable = batch.mask & ~tc.classes(batch.ids)[..., 3]
    if not maskable.any():
        return None
    inputs, labels = mask_tokens(batch.ids, maskable, tok.mask_token_id, model.config.vocab_size, gen)
    with bundle.lock, torch.enable_grad(), head_gates(bundle, n_heads) as gates:
        dev = bundle.device
        out = model(input_ids=inputs.to(dev), attention_mask=batch.mask.long().to(dev), labels=labels.to(dev))
        (grad,) = torch.autograd.grad(out.loss, gates)  # parameters' .grad stays untouched
    return grad.abs().detach().cpu()
