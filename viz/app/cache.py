"""Caching around the library (the only viz module besides `viz.app.ui` that imports streamlit).

Two byte-bounded LRU caches shared by every session (`viz.app.store.ByteLRU`), not `st.cache_*`:

- models, bounded by their parameters' bytes (`VIZ_MODEL_CACHE_MB`, default 4096): shared objects, hence
  the bundle lock and the ContextVar-gated hooks in `viz.core.capture`; the most recent model always stays.
- results (captures, flows, generations, mask predictions, comparisons, head atlases), bounded by the
  bytes of their arrays (`VIZ_CACHE_MB`, default 768). Their arrays are read-only and every caller gets
  its own containers, so one session can never change what another session draws (see `viz.app.store`).

A miss shows a spinner, as `st.cache_data` did. Exceptions are never cached.
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from viz.app import serving
from viz.core.capture import Capture, capture
from viz.tasks.encdec import Generation, generate
from viz.core.models import ModelBundle, load_key
from viz.app.store import DEFAULT_CACHE_MB, DEFAULT_MODEL_CACHE_MB, ByteLRU, budget_from_env, model_nbytes

_MISS = object()


def _model_evicted(name, bundle) -> None:
    serving.refresh()  # models are loaded after gc.freeze(): let the collector see an evicted one again


MODELS = ByteLRU(budget_from_env("VIZ_MODEL_CACHE_MB", DEFAULT_MODEL_CACHE_MB),
                 sizer=lambda b: model_nbytes(b.model), share=False, keep_oversized=True, on_evict=_model_evicted)
RESULTS = ByteLRU(budget_from_env("VIZ_CACHE_MB", DEFAULT_CACHE_MB))


def _cached(store: ByteLRU, key: tuple, compute, spinner: str | None):
    """`store`'s value for `key`, computed (once, whoever else asks meanwhile) under a spinner on a miss."""
    hit = store.get(key, _MISS)
    if hit is not _MISS:
        return hit
    if spinner and get_script_run_ctx(suppress_warning=True) is not None:  # not in a download's callable
        with st.spinner(spinner):
            return store.get_or_compute(key, compute)
    return store.get_or_compute(key, compute)


def _load(name: str) -> ModelBundle:
    """`name` is a model key: a model name, optionally with `@device:dtype` (see `viz.core.models.model_key`)."""
    bundle = load_key(name)
    serving.settle()  # a model's objects live long: keep them out of every later collection
    return bundle


def get_bundle(name: str) -> ModelBundle:
    return _cached(MODELS, (name,), lambda: _load(name), "Loading model…")


def get_capture(name: str, text: str, target: str | None = None, with_logits: bool = False,
                layers: tuple[int, ...] | None = None, pool: int = 0, weights: bool = True,
                spinner: str | None = "Running the model…") -> Capture:
    """A capture; `layers`/`pool`/`weights` as in `viz.core.capture.capture` (the model view of a long input asks
    for pooled thumbnails only, one opened layer in full)."""
    return _cached(RESULTS, ("capture", name, text, target, with_logits, layers, pool, weights),
                   lambda: capture(get_bundle(name), text, target, with_logits=with_logits, layers=layers, pool=pool,
                                   weights=weights, qkv=weights and pool == 0), spinner)


def get_attention_view(name: str, text: str, target: str | None, stack: str, words: bool, hide: bool,
                       sink: bool = False, layers: tuple[int, ...] | None = None,
                       spinner: str | None = "Running the model…"):
    """(attention [layer, head, q, k], query labels, key labels) after the Attention page's toggles
    (`viz.analysis.words.attention_view`) of the capture of `layers` (None: all). A toggled view is a new
    array: cached beside the capture, so a click that reruns the page does not merge or renormalise again."""
    from viz.analysis.words import attention_view

    cap = get_capture(name, text, target, layers=layers, spinner=spinner)
    if not words and not hide and not sink:
        return attention_view(cap, stack)
    return _cached(RESULTS, ("attention_view", name, text, target, stack, words, hide, sink, layers),
                   lambda: attention_view(cap, stack, words, hide, get_bundle(name).tokenizer, sink), None)


# Download buttons build their file when clicked, after the page's run, from these: they hold the
# cache keys, never the arrays, so an idle session keeps nothing alive once the cache lets go of it.
def capture_arrays(name: str, text: str, target: str | None = None, pool: int = 0, weights: bool = True) -> dict:
    """The capture as the NPZ/CLI contract (`viz.core.capture.to_arrays`); `pool`/`weights` as the page asked."""
    from viz.core.capture import to_arrays

    return to_arrays(get_capture(name, text, target, pool=pool, weights=weights, spinner=None))


def attention_view_arrays(name: str, text: str, target: str | None, stack: str, words: bool, hide: bool,
                          sink: bool = False, layers: tuple[int, ...] | None = None) -> dict:
    import numpy as np

    attn, q_lab, k_lab = get_attention_view(name, text, target, stack, words, hide, sink, layers, spinner=None)
    return {"attentions": attn, "query_tokens": np.array(q_lab), "key_tokens": np.array(k_lab)}


def layer_flow_arrays(name: str, text: str, target: str | None, stack: str, keys: tuple[str, ...] = ()) -> dict:
    """The Layer flow arrays of `stack` (`LayerFlow.arrays()`), or only `keys` of them."""
    arrays = _cached(RESULTS, ("layer_flow", name, text, target, stack), lambda: _layer_flow(name, text, target, stack),
                     None).arrays()
    return {k: v for k, v in arrays.items() if not keys or k in keys}


def comparison_arrays(name: str, text: str, variant: str, positions: tuple[int, ...], heads: frozenset) -> dict:
    import numpy as np

    cmp = get_comparison(name, text, variant, positions, heads)
    stack = next(iter(cmp.base.attentions))
    return {"base": cmp.base.attentions[stack], "other": cmp.other.attentions[stack], "diff": cmp.diff,
            "head_js": cmp.head_js, "tokens": np.array(cmp.base.tokens)}


def generation_arrays(name: str, text: str, method: str, target: str | None = None, num_beams: int = 4,
                      max_new_tokens: int = 20, top_k: int = 5) -> dict:
    from viz.core.capture import to_arrays

    return to_arrays(get_generation(name, text, method, target, num_beams, max_new_tokens, top_k).to_capture())


def _layer_flow(name: str, text: str, target: str | None, stack: str):
    from viz.tasks.flowdata import layer_flow

    return layer_flow(get_bundle(name), get_capture(name, text, target), stack)


def get_axis_tokens(name: str, text: str, target: str | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """stack -> (query tokens, key tokens), from a forward that records nothing (encoder-decoders decode greedily
    when no target is given, as every capture does)."""
    def compute():
        bundle = get_bundle(name)
        cap = capture(bundle, text, target, layers={s: [] for s in bundle.arch.stacks}, hidden=False, qkv=False,
                      weights=False)
        return {s: cap.axis_tokens(s) for s in bundle.arch.stacks}

    return _cached(RESULTS, ("axis_tokens", name, text, target), compute, "Tokenizing…")


def get_inside(name: str, text: str, target: str | None, stack: str, layer: int, token: int):
    """`viz.inside.inside`: one layer and one query token, every head (the head walk itself is cheap)."""
    from viz.inside.walk import inside

    return _cached(RESULTS, ("inside", name, text, target, stack, layer, token),
                   lambda: inside(get_bundle(name), text, target, stack=stack, layer=layer, token=token),
                   "Walking the layer…")


def get_layer_flow(name: str, text: str, target: str | None, stack: str):
    return _cached(RESULTS, ("layer_flow", name, text, target, stack), lambda: _layer_flow(name, text, target, stack),
                   "Computing rollout and norm-based attention…")


def get_flow(name: str, text: str, target: str | None, stack: str, layer: int, queries: tuple[int, ...] | None,
             max_tokens: int | None, progress=None):
    """Attention flow (viz.analysis.flow.attention_flow) for one layer, memoised. No spinner: the page
    draws a progress bar from inside the computation."""
    from viz.analysis.flow import attention_flow

    def compute():
        attn = get_capture(name, text, target).attentions[stack]
        return attention_flow(attn, layer=layer, queries=None if queries is None else list(queries),
                              max_tokens=max_tokens, progress=progress)

    return _cached(RESULTS, ("flow", name, text, target, stack, layer, queries, max_tokens), compute, None)


def get_generation(name: str, text: str, method: str, target: str | None = None, num_beams: int = 4,
                   max_new_tokens: int = 20, top_k: int = 5) -> Generation:
    return _cached(RESULTS, ("generation", name, text, method, target, num_beams, max_new_tokens, top_k),
                   lambda: generate(get_bundle(name), text, method, target=target, num_beams=num_beams,
                                    max_new_tokens=max_new_tokens, top_k=top_k), "Decoding…")


def get_mask_result(name: str, text: str, positions: tuple[int, ...], top_k: int, layers: bool):
    from viz.tasks.mlm import predict

    return _cached(RESULTS, ("mask", name, text, positions, top_k, layers),
                   lambda: predict(get_bundle(name), text, positions=positions, top_k=top_k, layers=layers),
                   "Predicting masked tokens…")


def get_comparison(name: str, text: str, variant: str, positions: tuple[int, ...], heads: frozenset):
    from viz.tasks.compare import compare

    return _cached(RESULTS, ("comparison", name, text, variant, positions, heads),
                   lambda: compare(get_bundle(name), text, variant, positions=positions, heads=heads),
                   "Running both variants…")


def get_head_scores(name: str, seed: int, length: int):
    """viz.tasks.heads.head_scores of a decoder (induction, previous, duplicate, sink), memoised per inputs."""
    from viz.tasks.heads import head_scores

    return _cached(RESULTS, ("head_scores", name, seed, length),
                   lambda: head_scores(get_bundle(name), seed=seed, length=length),
                   "Scoring heads on repeated random tokens…")


def get_lm_generation(name: str, prompt: str, method: str, max_new_tokens: int = 20, top_k: int = 5,
                      temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, num_beams: int = 4, beam: int = 0,
                      stop_at_eos: bool = True):
    """Decoder-only step-through generation (viz.tasks.generate_lm), memoised per settings."""
    from viz.tasks.generate_lm import generate_lm

    return _cached(RESULTS, ("lm_generation", name, prompt, method, max_new_tokens, top_k, temperature, top_p, seed,
                             num_beams, beam, stop_at_eos),
                   lambda: generate_lm(get_bundle(name), prompt, method, max_new_tokens=max_new_tokens, top_k=top_k,
                                       temperature=temperature, top_p=top_p, seed=seed, num_beams=num_beams,
                                       beam=beam, stop_at_eos=stop_at_eos), "Generating…")


# ----------------------------------------------------------------------------- head atlas
# The atlas job runs in the page (it draws a progress bar and can be cancelled), so it is not computed
# through `_cached`: the page stores the finished result under (model, corpus hash, options).
def cached_atlas(name: str, corpus_key: str, options: tuple):
    """The stored AtlasResult / importance array for these inputs, or None."""
    return RESULTS.get(("atlas", name, corpus_key, options))


def store_atlas(name: str, corpus_key: str, options: tuple, result) -> None:
    RESULTS.put(("atlas", name, corpus_key, options), result)


def stats() -> dict:
    """Entries, bytes, budget, hits, misses and evictions of both caches (for the bench and tests)."""
    return {"models": MODELS.stats(), "results": RESULTS.stats()}


# ----------------------------------------------------------------------------- compare models, queries and keys
def get_match(name_a: str, name_b: str, text: str, max_tokens: int, level: str = "auto"):
    """viz.atlas.match.match_models of two models over one text (corpus runs are stored by the page: store_job)."""
    from viz.atlas.match import match_models

    return _cached(RESULTS, ("match", name_a, name_b, text, max_tokens, level),
                   lambda: match_models(get_bundle(name_a), get_bundle(name_b), [text], max_tokens=max_tokens,
                                        level=level), "Running both models…")


def get_sentence_views(name_a: str, name_b: str, text: str, level: str, max_tokens: int):
    """viz.atlas.match.sentence_views: one sentence's attention of every head of both models at `level`."""
    from viz.atlas.match import sentence_views

    return _cached(RESULTS, ("sentence_views", name_a, name_b, text, level, max_tokens),
                   lambda: sentence_views(get_bundle(name_a), get_bundle(name_b), text, level, max_tokens), None)


def cached_job(kind: str, *key):
    """A stored result of a page-run job (a corpus match, a q/k gathering, a t-SNE), or None."""
    return RESULTS.get((kind, *key))


def store_job(kind: str, *key_and_result) -> None:
    *key, result = key_and_result
    RESULTS.put((kind, *key), result)


def get_computed(kind: str, key: tuple, compute, spinner: str | None = None):
    """A cheap derived result (a PCA, a word view), memoised under (kind, *key)."""
    return _cached(RESULTS, (kind, *key), compute, spinner)


# ----------------------------------------------------------------------------- patching (viz.causal)
# A patching sweep runs in the page (progress bar, Cancel), like the head atlas: the page stores each finished
# sweep under the task's key. `task_key` = (model, clean, corrupt, target, foil, prefix).
def get_patch_task(name: str, clean: str, corrupt: str, target: str | None, foil: str | None, prefix: str | None):
    """viz.causal.task.make_task (tokenized, checked, both inputs measured); raises PatchError."""
    from viz.causal.task import make_task

    return _cached(RESULTS, ("patch_task", name, clean, corrupt, target, foil, prefix),
                   lambda: make_task(get_bundle(name), clean, corrupt, target, foil, prefix), "Running both inputs…")


def cached_patch(task_key: tuple, what: tuple):
    """A stored sweep (what = (site, stack)) or path patching result (what = ("path", component, receivers))."""
    return RESULTS.get(("patch", *task_key, *what))


def store_patch(task_key: tuple, what: tuple, result) -> None:
    RESULTS.put(("patch", *task_key, *what), result)


def get_attribution(task_key: tuple) -> dict:
    """viz.causal.atp.attribution: (stack, site) -> AtP of every component, one forward + backward."""
    from viz.causal.atp import attribution

    return _cached(RESULTS, ("patch_atp", *task_key),
                   lambda: attribution(get_bundle(task_key[0]), get_patch_task(*task_key)), "Attribution patching…")
