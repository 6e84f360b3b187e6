"""Sessions share one model: overlapping patching jobs each get their own result, and an error inside a patched
forward leaves nothing behind (as captum's test_hook_removal forces errors and then counts hooks).

The components' hooks are installed once per model (the first patching call) and stay; what a call changes lives
in a ContextVar. So "nothing left" means: the ContextVar is empty again, no hook was added or removed by the
failed call, and the next plain forward is bit for bit the forward before it.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest
import torch

from causal_models import own, tiny
from viz.core.capture import hook_count
from viz.causal.atp import attribution
from viz.causal.components import SESSION, components, session
from viz.causal.patching import sweep
from viz.causal.path_patching import path_patch
from viz.causal.task import make_task, run_metric
from viz.core.models import ModelBundle

TASKS = [("the cat sat on the mat", "the dog sat on the mat"), ("a bird flew over the house", "a plane flew over the house")]


def unlocked(bundle: ModelBundle) -> ModelBundle:
    """The same model without the bundle lock: forwards of two threads really overlap."""
    import copy

    return ModelBundle(bundle.name, bundle.model, copy.deepcopy(bundle.tokenizer), bundle.arch,
                       has_mlm_head=bundle.has_mlm_head, lock=contextlib.nullcontext())


@contextlib.contextmanager
def meet_once_in(module, parties: int):
    """Each thread's first forward through `module` waits there until `parties` threads are inside the model."""
    barrier = threading.Barrier(parties, timeout=60)
    met, seen = [], threading.local()

    def hook(*_):
        if not getattr(seen, "done", False):
            seen.done = True
            met.append(barrier.wait())

    handle = module.register_forward_hook(hook)
    try:
        yield met
    finally:
        handle.remove()


def in_threads(work, n: int) -> list:
    results, errors = [None] * n, []

    def run(i):
        try:
            results[i] = work(i)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors
    return results


def test_overlapping_sweeps_on_one_model_each_get_their_own():
    shared = own("tiny-llama")
    bundles = [unlocked(shared) for _ in TASKS]
    tasks = [make_task(b, *t) for b, t in zip(bundles, TASKS)]
    jobs = [lambda b, t: sweep(b, t, "resid_pre", batch_size=4).effect,
            lambda b, t: sweep(b, t, "head_pos", batch_size=5).effect,
            lambda b, t: attribution(b, t)[("decoder", "head_pos")],
            lambda b, t: path_patch(b, t, "q").effect]
    for job in jobs:
        alone = [job(b, t) for b, t in zip(bundles, tasks)]
        assert alone[0].shape != alone[1].shape or np.nanmax(np.abs(alone[0] - alone[1])) > 1e-3
        with meet_once_in(shared.model.model.layers[1].self_attn, len(TASKS)) as met:  # inside a layer
            both = in_threads(lambda i: job(bundles[i], tasks[i]), len(TASKS))
        assert len(met) == len(TASKS)  # both jobs were mid-forward at once
        for x, y in zip(both, alone):
            np.testing.assert_allclose(x, y, atol=1e-6, equal_nan=True)
    assert SESSION.get() is None


def test_exact_and_gradient_sessions_overlap_without_mixing():
    """One thread patches (inference mode), the other takes gradients (graph mode), meeting inside a layer."""
    shared = tiny("bert")
    a, b = unlocked(shared), unlocked(shared)
    ta = make_task(a, "the cat sat on the [MASK] .", "the dog sat on the [MASK] .")
    tb = make_task(b, "a bird flew over the [MASK] .", "a plane flew over the [MASK] .")
    alone = [sweep(a, ta, "head").effect, attribution(b, tb)[("encoder", "head")]]
    with meet_once_in(shared.model.bert.encoder.layer[0].attention.output.dense, 2) as met:
        both = in_threads(lambda i: sweep(a, ta, "head").effect if i == 0 else attribution(b, tb)[("encoder", "head")], 2)
    assert len(met) == 2
    for x, y in zip(both, alone):
        np.testing.assert_allclose(x, y, atol=1e-6)


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5", "tiny-albert-mlm"])
def test_an_error_inside_a_patched_forward_leaves_nothing_behind(name):
    bundle = tiny(name[5:-4] if name.endswith("-mlm") else name[5:])  # ALBERT: one module for every layer
    clean, corrupt = ("the cat sat on the [MASK] .", "the dog sat on the [MASK] .") if bundle.kind == "encoder" \
        else ("the cat sat on the mat", "the dog sat on the mat")
    task = make_task(bundle, clean, corrupt, prefix="the" if bundle.kind == "encoder-decoder" else None)
    comps = components(bundle)  # installed (once): from here on the count must not move
    hooks = hook_count(bundle.model)
    stack = bundle.arch.stacks[0]
    with torch.inference_mode():
        before = run_metric(bundle, task, "corrupt", 3)

    def explode(layer, x):
        if layer == 1:
            raise Boom("inside the forward")
        return x * 0.0  # layer 0 is really edited before the error

    for edit_site, graph in (("resid_pre", False), ("head", False), ("mlp_out", True)):
        ctx = torch.enable_grad() if graph else torch.inference_mode()
        with pytest.raises(Boom), ctx, session(bundle, read=[(stack, "head")], edit={(stack, edit_site): explode},
                                              graph=graph):
            run_metric(bundle, task, "corrupt", 3)
        assert SESSION.get() is None
        assert hook_count(bundle.model) == hooks
        with torch.inference_mode():
            after = run_metric(bundle, task, "corrupt", 3)
        assert torch.equal(after, before)  # the model computes exactly what it did before
    assert components(bundle) is comps  # not installed a second time


def test_a_sweep_that_fails_mid_way_leaves_the_model_as_it_was(monkeypatch):
    import viz.causal.patching as patching

    bundle = own("tiny-llama")
    task = make_task(bundle, *TASKS[0])
    want = sweep(bundle, task, "head").effect
    real, chunks = patching._edit, []

    def failing(chunk, *args):
        edit = real(chunk, *args)
        chunks.append(chunk)

        def fn(layer, x):
            if len(chunks) == 2 and layer == 1:
                raise Boom("second batched forward, layer 1")
            return edit(layer, x)

        return fn

    monkeypatch.setattr(patching, "_edit", failing)
    with pytest.raises(Boom):
        sweep(bundle, task, "head", batch_size=3)
    monkeypatch.setattr(patching, "_edit", real)
    assert len(chunks) == 2 and SESSION.get() is None
    np.testing.assert_array_equal(sweep(bundle, task, "head").effect, want)
