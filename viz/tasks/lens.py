"""The logit lens for causal LMs: the model's own final norm and unembedding applied to every layer's
residual stream (nostalgebraist, "interpreting GPT: the logit lens", 2020; Belrose et al. 2023 call
the untrained version the logit lens beside their tuned lens).

Which modules those are is family data (`viz.core.arch.LensSite`), never a check of a model's name. In
transformers 5 the last `hidden_states` entry is already normalised (it is `last_hidden_state`), so
the last layer gets only the unembedding; its lens equals the model's own logits, and
`tests/test_lens.py` holds every supported family to that (with random final-norm weights, so that
normalising twice would show).

Shapes:
    states   sequence of [layer + 1] tensors [..., dim]  (embeddings first, as `hidden_states`)
    returns  [layer + 1, ..., vocab] logits
"""

from __future__ import annotations

from typing import Sequence

import torch

from viz.core.errors import CaptureError
from viz.core.models import ModelBundle


class LensUnavailable(CaptureError):
    """This model's family has no known final norm / unembedding; the message says what to do."""


def _module(model, path: str):
    """`model.get_submodule(path)`, or None where the checkpoint has no such module (or it is None)."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def lens_parts(bundle: ModelBundle) -> tuple[list, torch.nn.Module]:
    """(the modules applied before the unembedding, in order; the unembedding) of `bundle`'s family."""
    site = bundle.arch.lens
    if bundle.kind != "decoder" or site is None:
        raise LensUnavailable(
            f"The logit lens needs a causal LM whose final norm and unembedding are known; '{bundle.name}' "
            f"({bundle.config.model_type}, {bundle.kind}) is not one. Pick a decoder such as tiny-llama or tiny-gpt2.")
    unembed = _module(bundle.model, site.unembed)
    if unembed is None:
        raise LensUnavailable(f"'{bundle.name}' has no '{site.unembed}' module: it cannot be read with a logit lens.")
    return [m for m in (_module(bundle.model, p) for p in site.norm) if m is not None], unembed


def _post(bundle: ModelBundle, logits: torch.Tensor) -> torch.Tensor:
    """The logit post-processing the family's forward applies (soft-capping, scaling), from its config."""
    for attr, op in bundle.arch.lens.ops:
        value = getattr(bundle.config, attr, None)
        if value is None:
            continue
        if op == "softcap":
            logits = torch.tanh(logits / value) * value
        elif op == "scale":
            logits = logits * value
        elif op == "divide":
            logits = logits / value
        else:
            raise ValueError(f"unknown logit op {op!r}")
    return logits


@torch.inference_mode()
def lens_logits(bundle: ModelBundle, states: Sequence[torch.Tensor]) -> torch.Tensor:
    """Logits of every layer's residual stream `[layer + 1, ..., vocab]` (float32). Raises LensUnavailable.

    The layers go through the unembedding as one stacked matrix: on a large vocabulary, reading its
    weights once instead of once per layer is most of the cost."""
    norms, unembed = lens_parts(bundle)

    def normed(x: torch.Tensor) -> torch.Tensor:
        for m in norms:
            x = m(x)
        return x

    states = [h.to(bundle.dtype) for h in states]
    last = states[-1] if bundle.arch.lens.last_normed else normed(states[-1])
    x = torch.cat([normed(torch.stack(states[:-1])), last[None]]) if len(states) > 1 else last[None]
    return _post(bundle, unembed(x).float())


def chosen_rank(logits: torch.Tensor, token: int) -> torch.Tensor:
    """Rank of `token` in each row of `logits [..., vocab]` (1 = the top prediction; ties count in its favour)."""
    return (logits > logits[..., token : token + 1]).sum(-1) + 1
