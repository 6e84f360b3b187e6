"""The Patching page's server side: running its sweeps as a job (progress, Cancel, each finished sweep stored
in the result cache) and handing a clicked cell over to the Attention and Inside a layer pages."""

from __future__ import annotations

import numpy as np
import streamlit as st

from viz.app import cache, ui

ss = st.session_state


def runs_of(task, comps, site: str, stack: str) -> int:
    from viz.causal.patching import variants

    return len(variants(site, comps.n_layers[stack], comps.n_heads[stack], len(task.tokens(stack))))


def runs_left(task_key: tuple, todo: list[tuple[str, str]]) -> int:
    """Patched runs of the sweeps in `todo` that are not stored yet."""
    from viz.causal.components import components

    task, comps = cache.get_patch_task(*task_key), components(cache.get_bundle(task_key[0]))
    return sum(runs_of(task, comps, *w) for w in todo if cache.cached_patch(task_key, w) is None)


def position_tokens(task, stack: str) -> list[str]:
    """Axis tokens of `stack`; where the clean and corrupted inputs differ, 'clean→corrupt'."""
    from viz.figures.patching import position_labels

    from viz.core.tokens import readable

    same = task.kind == "encoder-decoder" and stack != "encoder"  # the decoder reads one prefix in both runs
    clean = readable(list(task.tokens(stack)))  # each input read as text first: 'Ġkeys→Ġkey' is no byte-level token
    return position_labels(clean, clean if same else readable(list(task.corrupt_tokens)))


def run_sweeps(task_key: tuple, todo: list[tuple[str, str]]) -> bool:
    """Run the sweeps of `todo` not stored yet, one progress bar over all their patched runs. False if cancelled."""
    from viz.causal.components import components
    from viz.causal.patching import sweep

    bundle, task = cache.get_bundle(task_key[0]), cache.get_patch_task(*task_key)
    missing = [w for w in todo if cache.cached_patch(task_key, w) is None]
    comps = components(bundle)
    total = sum(runs_of(task, comps, *w) for w in missing) or 1
    bar, done = st.progress(0.0, text="Starting…"), 0
    for site, stack in missing:
        res = sweep(bundle, task, site, stack, should_stop=lambda: ss.get("patch_cancel") is not None,
                    progress=lambda d, t, s=site, base=done: bar.progress(
                        min(1.0, (base + d) / total), text=f"{s}: {base + d:,} / {total:,} patched runs"))
        if res.cancelled:
            bar.empty()
            return False
        cache.store_patch(task_key, (site, stack), res)
        done += res.effect.size
    bar.empty()
    return True


def run_path(task_key: tuple, component: str, receivers: tuple) -> bool:
    from viz.causal.path_patching import path_patch

    bar = st.progress(0.0, text="Starting…")
    res = path_patch(cache.get_bundle(task_key[0]), cache.get_patch_task(*task_key), component, list(receivers),
                     should_stop=lambda: ss.get("patch_cancel") is not None,
                     progress=lambda d, t: bar.progress(d / t, text=f"{d:,} / {t:,} sender → receiver paths"))
    bar.empty()
    if not res.cancelled:
        cache.store_patch(task_key, ("path", component, receivers), res)
    return not res.cancelled


def start(flag: str) -> None:
    ss[flag], ss.patch_cancel = True, None
    if flag == "patch_path_running":
        ss.patch_path_open = True  # the expander the button sits in stays open for the run and its result


def cancel(settings) -> None:
    ss.patch_running = ss.patch_path_running = False
    ss.patch_cancel = settings


# ----------------------------------------------------------------------------- hand-over
# Callbacks (they run before the next script run, when the sidebar's `text` may still be set); the page calls
# `follow()` to switch. `patch_handover` = {text, target} of the shown task, written by the page on every run.
# Streamlit 1.67 drops every widget's state on a st.switch_page (script_runner: a page change with no widget
# states from the browser keeps none), so the next page ran on the default model while the sidebar still showed
# the chosen one. Values set from code survive: the sidebar's are set again here, before the switch.
SIDEBAR = ("model_choice", "model_other", "model_device", "model_dtype", "export_format")


def _common() -> None:
    for key in SIDEBAR:
        if key in ss:
            ss[key] = ss[key]
    h = ss.get("patch_handover") or {}
    ss.text = h.get("text", ss.get("text", ""))
    for key in ("attn_target", "inside_target"):
        ss[key] = h.get("target") or ""


def open_head(chart_key: str, stack: str):
    def on_select() -> None:
        cell = ui.clicked_customdata(chart_key)
        if cell is None:
            return
        _common()
        ss.attn_stack, ss.attn_layer, ss.attn_head = stack, int(cell[0]), int(cell[1])
        ss.patch_goto = "pages/attention.py"

    return on_select


def open_cell(chart_key: str, stack: str):
    def on_select() -> None:
        cell = ui.clicked_customdata(chart_key)
        if cell is None:
            return
        _common()
        ss.inside_stack, ss.inside_layer, ss.inside_token = stack, int(cell[0]), int(cell[1])
        for key in [k for k in ss if str(k).startswith("inside_token_")]:
            del ss[key]  # the Inside page keeps one token widget per token list: let it take inside_token
        ss.patch_goto = "pages/inside.py"

    return on_select


def follow() -> None:
    page = ss.pop("patch_goto", None)
    if page:
        st.switch_page(page)


def arrays(task_key: tuple, todo: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Every stored sweep of this task and the AtP beside it, for the NPZ download."""
    out = {}
    atp = cache.get_attribution(task_key)
    for site, stack in todo:
        res = cache.cached_patch(task_key, (site, stack))
        if res is not None:
            out[f"{stack}_{site}_exact"] = res.effect
            out[f"{stack}_{site}_atp"] = atp[(stack, site)]
            out[f"{stack}_{site}_tokens"] = np.array(res.tokens)
    task = cache.get_patch_task(*task_key)
    out["metric"] = np.array([task.metric_clean, task.metric_corrupt])
    out["clean_tokens"], out["corrupt_tokens"] = np.array(task.clean_tokens), np.array(task.corrupt_tokens)
    return out
