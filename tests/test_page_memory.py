"""Bounded memory in the app: byte-bounded caches under a tiny budget, and nothing a page keeps per
session beyond what it draws (AppTest on the real MiniLM; the RSS curve itself is bench/bench_load.py)."""

import gc
import weakref

import pytest
from streamlit.testing.v1 import AppTest

from conftest import APP
from viz.tasks import compare
from viz.app import cache
from viz.app.store import MB, ByteLRU, model_nbytes

TEXTS = ["Colorless green ideas sleep furiously.", "The keys to the cabinet are on the table.",
         "A stitch in time saves nine, said my grandmother.", "Rain fell on the quiet town all night long."]


@pytest.fixture
def spy_captures(monkeypatch):
    """Weak references to the arrays of every capture the app computes."""
    refs = []
    real = cache.capture

    def spy(*args, **kwargs):
        cap = real(*args, **kwargs)
        refs.append(weakref.ref(cap.attentions["encoder"]))
        return cap

    monkeypatch.setattr(cache, "capture", spy)
    monkeypatch.setattr(compare, "capture", spy)  # Compare masking runs its two captures itself
    return refs


def test_a_tiny_budget_bounds_the_results_cache_and_pages_still_draw(monkeypatch, spy_captures):
    budget = 1 * MB  # a 10-token MiniLM capture is ~0.25 MB: a few fit, not all
    monkeypatch.setattr(cache, "RESULTS", ByteLRU(budget))
    at = AppTest.from_file(APP, default_timeout=180).run()
    for text in TEXTS * 2:
        at.sidebar.text_area(key="text").set_value(text).run()
        assert not at.exception
        assert len(at.get("plotly_chart")) == 4  # model view, first-token shares, one head, aggregate
        assert cache.RESULTS.nbytes <= budget
    s = cache.RESULTS.stats()
    assert s["evictions"] > 0 and 0 < s["bytes"] <= budget
    assert len(spy_captures) > len(TEXTS)  # evicted texts were computed again on their second visit


def test_a_session_keeps_nothing_the_cache_let_go(monkeypatch, spy_captures):
    """With nothing cached, no capture may survive a finished run: widget callbacks and download buttons
    outlive the run, and a page function among them would keep the page's capture and arrays alive."""
    monkeypatch.setattr(cache, "RESULTS", ByteLRU(0))
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.sidebar.text_area(key="text").set_value(TEXTS[0]).run()
    at.toggle(key="attn_words").set_value(True).run()
    at.toggle(key="attn_hide_special").set_value(True).run()
    assert not at.exception and len(at.get("plotly_chart")) == 4
    gc.collect()
    assert spy_captures and not [r for r in spy_captures if r() is not None]


@pytest.mark.parametrize("path,state", [
    ("pages/flow.py", {"flow_token": 2}),  # a click callback defined in the page, and every NPZ of a stack
    ("pages/routes.py", {"routes_token": 2}),  # click callbacks (ui.pick) and the NPZ of every contribution
    ("pages/compare.py", {"model_choice": "minilm-mlm", "cmp_variant": "causal"}),
    ("pages/match.py", {}),  # two captures (both model views), the matching, a pair's click callbacks
])
def test_other_pages_keep_nothing_either(monkeypatch, spy_captures, path, state):
    """app.py drops a finished page's data (>= 1 MB a value) from its globals (ui.release_page_data), so a
    page's own callbacks (Layer flow's click-to-follow, Compare's head picker) cannot keep its arrays alive.
    ~80 tokens: the attention tensor is ~1.8 MB."""
    monkeypatch.setattr(cache, "RESULTS", ByteLRU(0))
    at = AppTest.from_file(APP, default_timeout=240)
    at.switch_page(path)
    for k, v in {"text": " ".join(TEXTS * 3), **state}.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception and at.get("plotly_chart")
    gc.collect()
    assert spy_captures and not [r for r in spy_captures if r() is not None]


def test_models_are_evicted_by_size_and_freed(monkeypatch):
    store = ByteLRU(1, sizer=lambda b: model_nbytes(b.model), share=False, keep_oversized=True,
                    on_evict=cache._model_evicted)
    monkeypatch.setattr(cache, "MODELS", store)
    first = cache.get_bundle("tiny-bert")
    gone = weakref.ref(first.model)
    assert cache.get_bundle("tiny-bert") is first  # a hit, not a reload
    del first
    second = cache.get_bundle("tiny-gpt2")  # over the budget: the least recently used model goes
    assert store.keys() == [("tiny-gpt2",)] and store.stats()["evictions"] == 1
    gc.collect()
    assert gone() is None  # freed, although models are loaded after gc.freeze()
    assert second.model is not None


def test_download_callables_hold_keys_and_rebuild_after_eviction(monkeypatch, load):
    """The NPZ buttons' callables run after the page, without a script context, possibly after the cache
    dropped the capture: they recompute it and give the documented keys."""
    import numpy as np

    from viz.analysis.words import attention_view
    from viz.core.capture import capture, to_arrays

    monkeypatch.setattr(cache, "RESULTS", ByteLRU(0))
    got = cache.capture_arrays("tiny-bert", "one two three")
    want = to_arrays(capture(load("tiny-bert"), "one two three"))
    assert set(got) == set(want) and np.allclose(got["encoder_attentions"], want["encoder_attentions"])
    view = cache.attention_view_arrays("tiny-bert", "one two three", None, "encoder", True, True)
    attn, q_lab, k_lab = attention_view(capture(load("tiny-bert"), "one two three"), "encoder", True, True,
                                        load("tiny-bert").tokenizer)
    assert np.allclose(view["attentions"], attn) and list(view["key_tokens"]) == k_lab == ["one", "two", "three"]


def test_other_download_callables(monkeypatch):
    """Layer flow, Compare masking and Encoder–decoder NPZ buttons: keys in, the documented arrays out."""
    monkeypatch.setattr(cache, "RESULTS", ByteLRU(0))
    full = cache.layer_flow_arrays("tiny-bert", "one two three", None, "encoder")
    assert {"raw", "rollout", "query_tokens"} <= set(full)
    some = cache.layer_flow_arrays("tiny-bert", "one two three", None, "encoder", ("raw", "norm", "norm_summed"))
    assert set(some) == {"raw", "norm", "norm_summed"}
    both = cache.comparison_arrays("tiny-bert", "one two three", "causal", (), frozenset())
    assert both["base"].shape == both["other"].shape == both["diff"].shape
    gen = cache.generation_arrays("tiny-bart", "a b c", "greedy", None, 1, 3, 5)
    assert {"cross_attentions", "encoder_attentions", "target_tokens"} <= set(gen)
