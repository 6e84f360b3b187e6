"""Exact patching on every family against explicit hooks written here (GPT-2 and Llama also against
TransformerLens: test_patching_tl.py).

The reference runs a SECOND copy of the same weights (eager attention, none of our hooks or attention function),
one patched forward per cell, with a plain forward (pre-)hook on a module named in `causal_models.MODULES`
(written by hand from each family's module tree, not read from viz.inside.recipes), and computes the metric from the model's
full logits. Patterns are patched inside the attention itself: a test attention function that calls the
family's own eager attention and, for the patched head, recomputes the output from the clean weights.
Weights are re-drawn larger than the tiny models' defaults (std 0.3), so heads are not uniform and the metric
moves by more than 0.25 between the clean and the corrupted input (asserted): a normalised effect is then not
float noise divided by a tiny difference.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from causal_models import MODULES, bundle_of, pair_for, redrawn
from viz.causal.patching import sweep
from viz.causal.task import make_task
from viz.core.models import TINY_FAMILIES

# ----------------------------------------------------------------------------- the reference model
class Ref:
    """The reference copy: explicit hooks, the metric from full logits, patterns patched in a test attention."""

    def __init__(self, model, family: str, task, n_layers: dict, n_heads: dict):
        self.model, self.family, self.task = model, family, task
        self.calls: dict = {}
        self.n_layers, self.n_heads = n_layers, n_heads
        self.weights: dict = {}  # (module id, call index) -> captured attention weights
        self.pattern = None  # (module, call index, head, clean weights) to put in

    def inputs(self, which: str) -> dict:
        t = self.task
        ids = torch.tensor([t.clean_ids if which == "clean" else t.corrupt_ids])
        kw = {"input_ids": ids}
        if t.kind == "encoder-decoder":
            kw["decoder_input_ids"] = torch.tensor([t.decoder_ids])
        return kw

    def metric(self, which: str, hooks=()) -> float:
        self.calls = {}
        handles = [h() for h in hooks]
        try:
            with torch.inference_mode():
                logits = self.model(**self.inputs(which), use_cache=False).logits[0].double()
        finally:
            for h in handles:
                h.remove()
        t = self.task
        row = logits[-1] if t.kind == "decoder" else logits[t.answer_position]
        if t.kind == "encoder":
            lp = row.log_softmax(-1)
            return float(lp[t.target] - (lp[t.foil] if t.foil is not None else 0.0))
        return float(row[t.target] - row[t.foil])

    def module(self, stack: str, where: str, layer: int):
        path = MODULES[self.family][stack][where]
        return self.model.get_submodule(path.format(l=layer)), "{l}" not in path

    def _hook(self, stack, where, layer, fn, pre):
        """A hook running fn(tensor) on `layer`'s call of the module (the n-th call of a shared one)."""
        mod, shared = self.module(stack, where, layer)
        calls = [0]

        def at_layer() -> bool:
            i = calls[0]
            calls[0] += 1
            return not shared or i % self.n_layers[stack] == layer

        if pre:
            def hook(m, args, kwargs):
                if not at_layer():
                    return None
                y = fn(args[0] if args else kwargs["hidden_states"])
                if y is None:
                    return None
                return ((y, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": y})

            return lambda: mod.register_forward_pre_hook(hook, with_kwargs=True)
        return lambda: mod.register_forward_hook(lambda m, a, out: fn(out) if at_layer() else None)

    def patch(self, stack: str, site: str, layer: int, head=None, pos=None) -> float:
        """The corrupted run's metric with one component's clean value put in."""
        where, pre = {"resid_pre": ("layer", True), "attn_out": ("out", False), "mlp_out": ("mlp", False),
                      "head": ("out", True), "head_pos": ("out", True)}[site]
        kept = {}

        def keep(x):
            kept["x"] = x.clone().reshape(1, -1, x.shape[-1])  # OPT's feed-forward runs on [pos, d]: batch 1
            return None

        self.metric("clean", [self._hook(stack, where, layer, keep, pre)])
        clean = kept["x"]

        def put(x):
            shape, x = x.shape, x.clone().reshape(1, -1, x.shape[-1])
            if head is None:
                x[:, pos] = clean[:, pos]
            else:
                d = x.shape[-1] // self.n_heads[stack]
                cols = slice(head * d, (head + 1) * d)
                rows = slice(None) if pos is None else pos
                x[:, rows, cols] = clean[:, rows, cols]
            return x.reshape(shape)

        return self.metric("corrupt", [self._hook(stack, where, layer, put, pre)])

    def patch_pattern(self, stack: str, layer: int, head: int) -> float:
        mod, shared = self.module(stack, "attn", layer)
        call = layer if shared else 0
        self.weights.clear()
        self.metric("clean")
        self.pattern = (mod, call, head, self.weights[(id(mod), call)])
        try:
            return self.metric("corrupt")
        finally:
            self.pattern = None


REFS: list[Ref] = []  # the Ref whose forward is running (the attention function below finds it here)


def ref_attention(module, query, key, value, attention_mask, **kwargs):
    """Test attention: the family's own eager attention; keeps the weights, and patches one head's pattern."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    out, weights = eager(module, query, key, value, attention_mask, **kwargs)
    ref = REFS[-1]
    count = ref.calls.get(id(module), 0)
    ref.calls[id(module)] = count + 1
    ref.weights[(id(module), count)] = weights.detach().clone()
    p = ref.pattern
    if p is not None and p[0] is module and p[1] == count:
        H = weights.shape[1]
        v = value.repeat_interleave(H // value.shape[1], dim=1)  # transformers' repeat_kv
        out = out.clone()
        out[:, :, p[2]] = (p[3][:, p[2]] @ v[:, p[2]]).to(out.dtype)  # [batch, q, d] into [batch, q, head, d]
    return out, weights


AttentionInterface.register("viz_test_reference", ref_attention)
AttentionMaskInterface.register("viz_test_reference", eager_mask)


def setup(family: str):
    model, tok = redrawn(family)
    reference = copy.deepcopy(model)  # before our bundle installs anything on `model`
    bundle = bundle_of(model, tok, family)
    task = make_task(bundle, **pair_for(bundle))
    reference.set_attn_implementation("viz_test_reference")
    n_layers = {s: bundle.stack_layers(s) for s in bundle.arch.stacks}
    n_heads = {s: bundle.n_heads(s) for s in bundle.arch.stacks}
    return bundle, Ref(reference.eval(), family, task, n_layers, n_heads)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_site_matches_explicit_hooks(family):
    bundle, ref = setup(family)
    REFS.append(ref)
    try:
        t = ref.task
        m_clean, m_corrupt = ref.metric("clean"), ref.metric("corrupt")
        assert abs(t.metric_clean - m_clean) < 1e-4 and abs(t.metric_corrupt - m_corrupt) < 1e-4
        assert abs(m_clean - m_corrupt) > 0.25, (m_clean, m_corrupt)  # the normalisation divides by this

        def norm(m):
            return (m - m_corrupt) / (m_clean - m_corrupt)

        checked = 0
        for stack in bundle.arch.stacks:
            sites = ["head", "head_pos", "pattern", "attn_out"] + ([] if stack == "cross" else ["resid_pre", "mlp_out"])
            for site in sites:
                res = sweep(bundle, t, site, stack)
                for cell in np.ndindex(res.effect.shape):
                    if site == "pattern":
                        want = ref.patch_pattern(stack, cell[0], cell[1])
                    elif site in ("head", "head_pos"):
                        want = ref.patch(stack, site, cell[0], head=cell[1], pos=cell[2] if site == "head_pos" else None)
                    else:
                        want = ref.patch(stack, site, cell[0], pos=cell[1])
                    assert abs(res.effect[cell] - norm(want)) <= 1e-4, (stack, site, cell, res.effect[cell], norm(want))
                    checked += 1
                assert np.abs(res.effect).max() > 1e-3, (stack, site)  # something moved: a patch that did nothing would pass
        assert checked > 100
    finally:
        REFS.remove(ref)
