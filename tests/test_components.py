"""Named components read by `viz.causal.components` against what each family's model itself exposes: the hidden
states it returns, plain hooks on modules named by hand (causal_models.MODULES), and the q/k/v the recorder's
attention function received. Plus: the hooks change nothing while no session is active, install once, and a
session cannot name a component that a stack does not have."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from causal_models import MODULES, bundle_of, own, redrawn
from viz.core.capture import capture, hook_count
from viz.causal.components import ComponentError, components, session
from viz.core.models import TINY_FAMILIES

TEXT = "the cat sat on the mat because it was tired"
ROTATED = {"modernbert", "llama", "qwen2", "qwen3", "mistral", "gemma2", "phi3", "gpt_neox"}  # RoPE on q and k
SCALED = {"opt"}  # q multiplied by the scaling before the attention call


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_sites_are_what_the_model_computes(family):
    model, tok = redrawn(family)
    plain = copy.deepcopy(model)  # never touched by our hooks or attention function
    bundle = bundle_of(model, tok, family)
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    kw = {"input_ids": ids}
    if bundle.kind == "encoder-decoder":
        kw["decoder_input_ids"] = ids[:, :6]
    comps = components(bundle)
    read = [(s, site) for s in bundle.arch.stacks for site in comps.sites(s)]
    with torch.inference_mode(), session(bundle, read=read) as ses:
        ours = model(**kw, output_hidden_states=True)

    kept: dict = {}
    handles = []
    for stack, paths in MODULES[family].items():
        for layer in range(bundle.stack_layers(stack)):
            for where in ("out", "mlp"):
                if where not in paths:
                    continue
                mod = plain.get_submodule(paths[where].format(l=layer))
                handles.append(mod.register_forward_pre_hook(
                    lambda m, a, key=(stack, where, "in"): kept.setdefault(key, []).append(a[0].clone())))
                handles.append(mod.register_forward_hook(
                    lambda m, a, o, key=(stack, where, "out"): kept.setdefault(key, []).append(o.clone())))
            if "{l}" not in paths.get("out", "{l}"):
                break  # ALBERT: one module; its calls, in order, are the layers
    with torch.inference_mode():
        theirs = plain(**kw, output_hidden_states=True)
    for h in handles:
        h.remove()
    with torch.inference_mode():
        assert torch.equal(model(**kw).logits, ours.logits)  # reading changes nothing, bit for bit
    # the plain copy runs eager attention, ours SDPA: the same numbers up to float rounding
    close = dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.logits, theirs.logits, **close)

    for stack in bundle.arch.stacks:
        L, H = bundle.stack_layers(stack), bundle.n_heads(stack)
        store = {site: ses.store[(stack, site)] for site in comps.sites(stack)}
        if stack != "cross":
            hs = theirs.hidden_states if bundle.kind != "encoder-decoder" else \
                (theirs.encoder_hidden_states if stack == "encoder" else theirs.decoder_hidden_states)
            for l in range(L):
                torch.testing.assert_close(store["resid_pre"][l], hs[l], **close)
                want = kept[(stack, "mlp", "out")][l]
                torch.testing.assert_close(store["mlp_out"][l], want.reshape(store["mlp_out"][l].shape), **close)
        for l in range(L):
            z = kept[(stack, "out", "in")][l]
            torch.testing.assert_close(store["head"][l], z.reshape(*z.shape[:-1], H, -1), **close)
            torch.testing.assert_close(store["attn_out"][l], kept[(stack, "out", "out")][l], **close)
            assert store["head"][l].shape[-2:] == (H, comps.head_dim(stack))

    cap = capture(bundle, TEXT, None if bundle.kind != "encoder-decoder" else "the cat sat on the")
    for stack in cap.stacks:
        if bundle.kind == "encoder-decoder" and stack != "encoder":
            continue  # capture decodes its own target; the decoder's inputs differ from `kw` here
        for part, arrays in (("v", cap.values), ("k", cap.keys), ("q", cap.queries)):
            if part != "v" and (family in ROTATED or part == "q" and family in SCALED):
                continue
            got = torch.stack([t[0] for _, t in sorted(ses.store[(stack, part)].items())])  # [layer, pos, head, d]
            np.testing.assert_allclose(got.transpose(1, 2).numpy(), arrays[stack], atol=1e-4,
                                       err_msg=f"{stack} {part}")


def test_hooks_install_once_and_do_nothing_without_a_session():
    model, tok = redrawn("llama")
    bundle = bundle_of(model, tok, "llama")
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    assert hook_count(model) == 0
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    comps = components(bundle)
    n = hook_count(model)
    assert n == 2 * (1 + 2 + 1 + 3)  # per layer: the block, the output projection (pre+post), the MLP, q, k, v
    assert components(bundle) is comps and hook_count(model) == n
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, before)


def test_a_session_names_only_components_that_exist():
    bundle = own("tiny-bart")
    with pytest.raises(ComponentError, match="no component resid_pre in its cross stack"):
        with session(bundle, read=[("cross", "resid_pre")]):
            pass
    with pytest.raises(ComponentError, match="no component head in its encoder stack"):
        with session(own("tiny-llama"), read=[("encoder", "head")]):
            pass
