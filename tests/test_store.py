"""viz.app.store.ByteLRU: byte budget, LRU order, read-only sharing between sessions, single-flight."""

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from viz.app.store import MB, ByteLRU, budget_from_env, freeze, isolated, model_nbytes, nbytes


def arr(n_mb: float) -> np.ndarray:
    return np.ones(int(n_mb * MB) // 4, dtype=np.float32)


@dataclass
class Result:
    tokens: list
    arrays: dict = field(default_factory=dict)


def test_budget_is_bytes_and_eviction_is_least_recently_used():
    store = ByteLRU(3 * MB + 4096)  # room for three 1 MB entries, not four
    for k in "abc":
        store.put(k, arr(1))
    assert len(store) == 3 and store.nbytes <= store.budget
    store.get("a")  # a is now the most recent: b goes first
    store.put("d", arr(1))
    assert store.keys() == ["c", "a", "d"]
    assert store.stats()["evictions"] == 1
    store.put("e", arr(2))  # needs two slots: c and a go
    assert store.keys() == ["d", "e"] and store.nbytes <= store.budget


def test_a_tiny_budget_keeps_nothing_bigger_and_still_answers():
    store = ByteLRU(64 * 1024)
    calls = []
    value = store.get_or_compute("big", lambda: calls.append(1) or arr(1))
    assert value.shape == (MB // 4,) and len(store) == 0 and store.nbytes == 0
    store.get_or_compute("big", lambda: calls.append(1) or arr(1))
    assert len(calls) == 2  # not stored, so computed again


def test_a_model_larger_than_the_budget_stays_alone():
    store = ByteLRU(1 * MB, sizer=lambda v: v, share=False, keep_oversized=True)
    store.put("small", MB // 2)
    store.put("huge", 5 * MB)
    assert store.keys() == ["huge"]
    store.put("next", MB // 2)
    assert store.keys() == ["next"]


def test_eviction_callback_sees_each_evicted_entry():
    seen = []
    store = ByteLRU(1 * MB + 4096, on_evict=lambda k, v: seen.append(k))
    store.put("a", arr(1))
    store.put("b", arr(1))
    assert seen == ["a"]


def test_sessions_cannot_change_each_others_results():
    """st.cache_data gave each reader its own unpickled copy; here arrays are read-only and shared,
    and every reader gets its own containers."""
    store = ByteLRU(16 * MB)
    first = store.get_or_compute("k", lambda: Result(["a", "b"], {"attn": np.arange(6.0).reshape(2, 3)}))
    second = store.get("k")
    assert first is not second and np.shares_memory(first.arrays["attn"], second.arrays["attn"])  # no copy
    with pytest.raises(ValueError):
        first.arrays["attn"][0, 0] = 99.0
    with pytest.raises(ValueError):
        first.arrays["attn"] += 1
    with pytest.raises(ValueError):  # the read-only flag cannot be switched back on a shared array
        first.arrays["attn"].flags.writeable = True
    first.tokens.append("c")
    first.arrays["attn"] = np.zeros(3)
    third = store.get("k")
    assert third.tokens == ["a", "b"] and third.arrays["attn"][1, 2] == 5.0
    assert second.tokens == ["a", "b"]


def test_a_real_capture_is_shared_read_only(load):
    from viz.core.capture import capture

    store = ByteLRU(64 * MB)
    bundle = load("tiny-bert")
    a = store.get_or_compute(("c", "hi there"), lambda: capture(bundle, "hi there"))
    b = store.get(("c", "hi there"))
    assert np.shares_memory(a.attentions["encoder"], b.attentions["encoder"])
    assert not any(x.flags.writeable for x in (a.attentions["encoder"], a.hidden_states["encoder"],
                                               a.queries["encoder"], a.special))
    a.tokens[0] = "changed"
    assert b.tokens[0] == "[CLS]" and store.get(("c", "hi there")).tokens[0] == "[CLS]"
    assert store.nbytes >= a.attentions["encoder"].nbytes + a.hidden_states["encoder"].nbytes


def test_concurrent_misses_compute_once():
    store = ByteLRU(16 * MB)
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return arr(0.1)

    out = []
    threads = [threading.Thread(target=lambda: out.append(store.get_or_compute("k", slow))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(out) == 4


def test_exceptions_are_not_stored():
    store = ByteLRU(MB)

    def boom():
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        store.get_or_compute("k", boom)
    assert "k" not in store and store.get_or_compute("k", lambda: 1) == 1


def test_sizes_count_array_bases_once_and_models_by_parameters():
    a = np.zeros((100, 100), dtype=np.float32)
    assert nbytes([a, a[:10], a.T]) < a.nbytes + 1000
    frozen = freeze({"x": a})
    assert nbytes(frozen) < a.nbytes + 1000 and not isolated(frozen)["x"].flags.writeable
    import torch

    lin = torch.nn.Linear(10, 10)
    assert model_nbytes(lin) == (100 + 10) * 4


def test_budget_from_env(monkeypatch):
    monkeypatch.setenv("VIZ_CACHE_MB", "12")
    assert budget_from_env("VIZ_CACHE_MB", 1024) == 12 * MB
    monkeypatch.setenv("VIZ_CACHE_MB", "lots")
    assert budget_from_env("VIZ_CACHE_MB", 1024) == 1024 * MB
    monkeypatch.delenv("VIZ_CACHE_MB")
    assert budget_from_env("VIZ_CACHE_MB", 1024) == 1024 * MB
