"""Sessions share one model: forwards that truly overlap must each get exactly their own edit and record.

Like test_capture.py's barrier test: no bundle lock, and a barrier inside layer 0 holds every forward there
until all of them have reached it, so each one's later layers run while the others are mid-forward too.
A process-global recorder or edit (instead of the ContextVars of viz.core.recorder) makes these fail: the last
context set wins, so one thread records nothing and the others run with the wrong ablation or mask.
"""

import contextlib
import copy
import threading

import numpy as np
import pytest
import torch

from viz.analysis.head_stats import STATS
from viz.atlas.chunks import run_atlas
from viz.core.capture import recording
from viz.core.interventions import Intervention, applied
from viz.core.models import ModelBundle
from viz.core.recorder import EDIT, RECORDER

TEXT = "The cat sat on the mat because it was tired."


@contextlib.contextmanager
def meeting_in_layer_zero(model, parties: int):
    """A forward hook on the first encoder layer: every forward waits there for `parties` forwards."""
    barrier = threading.Barrier(parties, timeout=60)
    met = []
    handle = model.base_model.encoder.layer[0].register_forward_hook(lambda *_: met.append(barrier.wait()))
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


def forward(bundle, iv: Intervention | None, ids: torch.Tensor):
    """One plain forward under `iv`, recording: ([layer, head, q, k] weights, last hidden state)."""
    with torch.inference_mode(), applied(bundle, iv), recording(bundle, qkv=False) as rec:
        out = bundle.model(input_ids=ids)
    attn = torch.stack([a[0] for a in rec.data[("encoder", "attn")]]).numpy()
    assert rec.recorded["encoder"] == list(range(bundle.stack_layers("encoder")))
    return attn, out.last_hidden_state[0].numpy()


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-albert"])  # ALBERT: one shared layer module for all layers
def test_overlapping_forwards_with_different_interventions_each_get_their_own(load, name):
    bundle = load(name)
    ids = bundle.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    ivs = [Intervention(ablate=frozenset({(0, 1), (1, 2)})), Intervention(causal=True), None,
           Intervention(ablate=frozenset({(0, 3)}))]
    alone = [forward(bundle, iv, ids) for iv in ivs]  # one at a time: what each session must see
    for i in range(len(ivs)):  # the variants really differ, so a mix-up would show
        for j in range(i):
            assert np.abs(alone[i][1] - alone[j][1]).max() > 1e-3, (ivs[i], ivs[j])
    layer0 = bundle.model.base_model.encoder.albert_layer_groups[0] if name == "tiny-albert" else None
    if layer0 is not None:  # ALBERT's layers are one module: meet at its group's first call
        barrier = threading.Barrier(len(ivs), timeout=60)
        met, seen = [], threading.local()

        def once(*_):
            if not getattr(seen, "done", False):
                seen.done = True
                met.append(barrier.wait())

        handle = layer0.register_forward_hook(once)
        try:
            both = in_threads(lambda i: forward(bundle, ivs[i], ids), len(ivs))
        finally:
            handle.remove()
    else:
        with meeting_in_layer_zero(bundle.model, len(ivs)) as met:
            both = in_threads(lambda i: forward(bundle, ivs[i], ids), len(ivs))
    assert len(met) == len(ivs)  # every forward was inside the model at once
    for (a, h), (a0, h0) in zip(both, alone):
        np.testing.assert_allclose(a, a0, atol=1e-6)
        np.testing.assert_allclose(h, h0, atol=1e-5)
    assert np.abs(np.triu(both[1][0], 1)).max() == 0 and np.abs(np.triu(both[0][0], 1)).max() > 0
    assert RECORDER.get() is None and EDIT.get() is None


def test_overlapping_atlas_runs_do_not_mix(load):
    """Two sessions run the head atlas at once on one model. Each gets its own tokenizer and no lock here, so
    their batches' forwards overlap (the barrier meets them batch by batch)."""
    shared = load("tiny-bert")
    words = ["The cat sat on the mat, purring.", "Hi there!", "Yes; no: maybe?", "Is this the way home?",
             "We walked along the river and the water was cold.", "Birds sing early."]
    corpora = [words * 4, [" ".join(reversed(s.split())) + " and then some more words" for s in words] * 4]
    bundles = [ModelBundle(f"{shared.name}-{i}", shared.model, copy.deepcopy(shared.tokenizer), shared.arch,
                           lock=contextlib.nullcontext()) for i in range(2)]
    alone = [run_atlas(shared, c, batch_size=3) for c in corpora]
    assert any(np.abs(alone[0].stats[s] - alone[1].stats[s]).max() > 1e-3 for s in STATS)
    with meeting_in_layer_zero(shared.model, 2) as met:
        both = in_threads(lambda i: run_atlas(bundles[i], corpora[i], batch_size=3), 2)
    assert len(met) == 2 * 8  # 24 sentences in batches of 3, in both threads: every batch overlapped
    for x, y in zip(alone, both):
        assert x.n_tokens == y.n_tokens
        for s in STATS:
            np.testing.assert_allclose(y.stats[s], x.stats[s], atol=1e-6, err_msg=s)
