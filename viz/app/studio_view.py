"""The Training studio's views of a job: live while it runs, the replay when it has ended (pages/studio.py keeps
the form that starts and resumes runs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from viz.app import ui
from viz.figures import studio as F
from viz.train import studio as S


# short enough for a third of the page (longer ones ran past the chart's edge); the axis says the rest
ACCURACY_TITLES = {"mlm": "Held-out masked-token accuracy",
                   "denoise": "Held-out reconstruction accuracy",
                   "dates": "Held-out target accuracy",
                   "reverse": "Held-out target accuracy",
                   "clm": "Held-out next-token accuracy",
                   "repeat": "Held-out top-1, repeated half"}


def grid_title(cfg: S.StudioConfig, part: str, step: int | None = None) -> str:
    """A title that fits the chart: a long probe is cut (the whole sentence is on the chart's axes)."""
    def quote(text: str, n: int = 40) -> str:
        return f"“{text if len(text) <= n else text[: n - 1] + '…'}”"

    at = "" if step is None else f" at step {step}"
    if part == "cross":
        return f"Cross-attention: decoder (rows, teacher-forced on {quote(cfg.probe_target, 30)}) → source{at}"
    where = "Encoder self-attention: " if cfg.task in S.ENCODER_DECODER else \
        "Causal self-attention: " if cfg.task in S.DECODER else "Probe "
    return f"{where}{quote(cfg.probe)}{at}"


def decoder_curves(cfg: S.StudioConfig, arrays: dict, where: str, at: int | None = None) -> None:
    """Decoder runs: the best head's induction / previous / duplicate score and the in-context figures over
    the snapshots, with the step where the best induction score first reaches 0.5 marked (the phase change)."""
    steps = arrays["steps"]
    phase = S.decoder.phase_change_step(steps, arrays["induction"].max(axis=(1, 2)))
    cols = st.columns(2)
    with cols[0]:
        ui.plot(F.score_curves(steps, {k: arrays[k] for k in S.SCORES}, S.decoder.SCORE_LABELS, phase_step=phase,
                               mark_step=at), key=f"studio_scores_{where}", stem=f"{cfg.name}-head-scores")
    with cols[1]:
        repeat = cfg.task == "repeat"
        ui.plot(F.context_curves(steps, arrays["eval_loss"], arrays["icl"],
                                 arrays["first_half_loss"] if repeat else None,
                                 "loss on the repeated half" if repeat else "held-out loss", phase),
                key=f"studio_context_{where}", stem=f"{cfg.name}-in-context")
    st.caption("Phase change: " + (f"the best induction score first reached 0.5 at step {phase}." if phase is not None
                                   else "no head has reached an induction score of 0.5 yet."))


def live(job: S.TrainingJob | None, running: bool) -> None:
    """The live view of the session's job (the page redraws it every second as a fragment while it runs):
    Cancel, progress, metrics, curves and the heads at the latest snapshot. `running`: whether the job was
    running when the page started drawing (its end reruns the whole page, into the replay)."""
    if job is None:
        return
    history, snaps = job.view()
    cfg = job.config
    if job.running:
        st.button("Cancel", key="studio_cancel", on_click=job.cancel,
                  help="Stops after the current step, snapshots it and saves that model.")
        st.progress(min(1.0, history[-1]['step'] / cfg.steps) if history else 0.0,
                    text=f"Training '{cfg.name}': step {history[-1]['step'] if history else 0} of {cfg.steps}")
    if job.running and not history:
        what = f"tokenizing {len(job.train_sentences):,} sentences and " if job.train_sentences else ""
        st.info(f"Preparing: {what}building the model…", icon="⏳")
    if history:
        last = history[-1]
        top1 = next((s["eval_top1"] for s in reversed(snaps) if s["eval_top1"] is not None), None)
        m = st.columns(4)
        m[0].metric("Step", f"{last['step']} / {cfg.steps}")
        m[1].metric("Loss (moving average)", f"{last['loss_ema']:.3f}")
        m[2].metric("Held-out token accuracy" if cfg.task in S.ENCODER_DECODER else
                    "Held-out next-token top-1" if cfg.task in S.DECODER else "Held-out top-1",
                    "—" if top1 is None else f"{100 * top1:.1f}%")
        m[3].metric("Tokens / s", f"{last['tokens_per_s']:.0f}")
        cols = st.columns(3)
        with cols[0]:
            ui.plot(F.loss_curve(history, "Training loss (both halves)" if cfg.task == "repeat" else "Training loss"),
                    key="studio_loss", stem=f"{cfg.name}-loss")
        with cols[1]:
            ui.plot(F.accuracy_curve(snaps, ACCURACY_TITLES.get(cfg.task, ACCURACY_TITLES["mlm"]),
                                     "top-1, teacher-forced (%)" if cfg.task in S.ENCODER_DECODER else "top-1 (%)",
                                     steps=cfg.steps),
                    key="studio_acc", stem=f"{cfg.name}-accuracy")
        with cols[2]:
            ui.plot(F.throughput_curve(history), key="studio_speed", stem=f"{cfg.name}-tokens-per-s")
        if cfg.task in S.DECODER and snaps and job.running:  # when it ends, the replay draws them
            decoder_curves(cfg, S.snapshot_arrays(snaps), "live")
    if job.running and snaps:
        st.subheader(f"Heads now (snapshot at step {snaps[-1]['step']})")
        ui.plot(F.probe_grid(snaps[-1]["probe_attn"], job.probe_tokens, grid_title(cfg, "encoder")),
                key="studio_live_grid", stem=f"{cfg.name}-heads-live")
        if "probe_cross" in snaps[-1]:
            ui.plot(F.probe_grid(snaps[-1]["probe_cross"], job.probe_tokens, grid_title(cfg, "cross"),
                                 row_tokens=job.probe_target_tokens), key="studio_live_cross",
                    stem=f"{cfg.name}-cross-live")
    if running and not job.running:
        st.rerun()  # the job ended: redraw the whole page with the replay section


def replay(job: S.TrainingJob) -> None:
    """A finished (or cancelled) job's snapshots: a step slider over the heads, the per-head statistics over
    training, and the downloads (loss per step, statistics per snapshot, every snapshot as NPZ)."""
    history, snaps = job.view()
    arrays = S.snapshot_arrays(snaps)
    st.header("Replay: how each head changed")
    steps_list = [int(s) for s in arrays["steps"]]
    at = st.select_slider("Training step", steps_list, value=steps_list[-1], key="studio_step")
    i = steps_list.index(at)
    ui.plot(F.probe_grid(arrays["probe_attn"][i], job.probe_tokens, grid_title(job.config, "encoder", at),
                         zmax=float(arrays["probe_attn"].max())),  # one colour scale for every step
            key="studio_grid", stem=f"{job.config.name}-heads-step-{at}")
    if "probe_cross" in arrays:
        ui.plot(F.probe_grid(arrays["probe_cross"][i], job.probe_tokens, grid_title(job.config, "cross", at),
                             zmax=float(arrays["probe_cross"].max()), row_tokens=job.probe_target_tokens),
                key="studio_cross", stem=f"{job.config.name}-cross-step-{at}")
    keys = S.head_keys(arrays)
    labels = {**S.STAT_LABELS, **S.decoder.SCORE_LABELS}
    if job.config.task in S.DECODER:
        decoder_curves(job.config, arrays, "replay", at)
    over = "over the probe corpus, encoder" if "probe_cross" in arrays else \
        "on held-out repeated random tokens" if job.config.task in S.DECODER else "over the probe corpus"
    stat = st.radio(f"Statistic ({over})", keys, format_func=labels.get, key="studio_stat", horizontal=True)
    stat = stat if stat in keys else keys[0]  # a kept choice from a run of the other kind
    ui.plot(F.stat_over_steps(arrays["steps"], arrays[stat], labels[stat], mark_step=at),
            key="studio_stat_fig", stem=f"{job.config.name}-{stat}")
    L, H = arrays[stat].shape[1:]
    long = pd.DataFrame([{"step": s, "layer": li, "head": h, **{k: float(arrays[k][j, li, h]) for k in keys}}
                         for j, s in enumerate(steps_list) for li in range(L) for h in range(H)])
    d = st.columns(3)
    with d[0]:
        ui.table_download(pd.DataFrame(history), key="studio_history_csv", stem=f"{job.config.name}-history",
                          label="Loss per step (CSV)")
    with d[1]:
        ui.table_download(long, key="studio_stats_csv", stem=f"{job.config.name}-head-stats",
                          label="Head statistics per snapshot (CSV)")
    with d[2]:
        ui.npz_download({**arrays, "probe_tokens": np.array(job.probe_tokens),
                         "probe_target_tokens": np.array(job.probe_target_tokens)}, key="studio_npz",
                        stem=f"{job.config.name}-snapshots", label="Snapshots (NPZ)")
