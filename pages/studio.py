"""Training studio: pretrain a small model on your text in the background and watch its heads form."""

import streamlit as st

from viz.app import studio_view as view
from viz.app import ui
from viz.train import studio as S

JOB = "studio_job"  # the session's one TrainingJob (viz.train.studio.launch enforces one at a time)
UPLOAD_LIMIT = 20_000_000  # bytes of uploaded text

ui.through_app()
st.title("Training studio")
st.caption("Pretrain a small BERT (masked LM), a small BART (denoising, or a synthetic seq2seq task) or a small "
           "Llama decoder (causal LM, or repeated random tokens: watch an induction head form) and watch "
           "attention heads specialise. Training runs in the background (one job per session): the page stays "
           "usable, other sessions are unaffected. Every few steps a snapshot records each head's attention on a "
           "probe sentence (for an encoder–decoder also the cross-attention) and its statistics over a small "
           "probe corpus; the finished model appears in every page's model picker.")


def request(what: str) -> None:
    """Buttons record what they asked for in session state (a callback), not in their one-run return value:
    the request survives ui.through_app()'s rerun on a cold deep link."""
    st.session_state.studio_request = what


job: S.TrainingJob | None = st.session_state.get(JOB)
running = bool(job and job.running)

def decoder_defaults() -> None:
    """Picking a decoder task sets the settings its run is known to work with (a 2-layer, 4-head model
    forms an induction head with these); every one can still be changed."""
    task = st.session_state.get("studio_task")
    if task in S.DECODER:
        st.session_state.update({f"studio_{k}": v for k, v in S.decoder.DEFAULTS[task].items()})


# collapsed while a job runs (it sat open over the live charts): a new label is a new expander, so it really
# folds (an expander keeps its open state while its label stays the same); its widgets stay drawn and keep values
with st.expander("New training run" + (" (when this one has ended)" if running else ""), expanded=not running):
    c1, c2 = st.columns(2)
    task = c1.selectbox("Pretext task", list(S.TASKS), format_func=S.TASKS.get, key="studio_task",
                        on_change=decoder_defaults)
    encdec, synthetic, dec = task in S.ENCODER_DECODER, task in S.SYNTHETIC, task in S.DECODER
    # the random model is a BERT, a BART or a Llama by task (the greyed choice said "a small BERT" for the Llama)
    arch = "Llama" if dec else "BART" if encdec else "BERT"
    init = c2.radio("Start from", list(S.INITS), key="studio_init", horizontal=True,
                    format_func=lambda k: f"Random weights (a small {arch})" if k == "scratch" else S.INITS[k],
                    disabled=encdec or dec, help="Encoder–decoder and decoder tasks start from random weights "
                                                 "(MiniLM is an encoder).")
    if dec:
        init = "scratch"
        st.caption("A Llama-architecture decoder (RoPE, RMSNorm, SwiGLU, half as many key/value heads as query "
                   "heads). Snapshots score every head for induction, previous-token and duplicate-token attention "
                   "on held-out random sequences repeated once, and measure the in-context learning score (loss "
                   "late in the context minus early; Olsson et al. 2022)."
                   + (" Each sequence is 8-20 random words from a 200-word vocabulary, then the same words again; "
                      "held-out figures count the repeated half." if task == "repeat" else ""))
    if encdec:
        init = "scratch"
        st.caption("A BART encoder–decoder with the chosen layers in the encoder and in the decoder. "
                   + ("It trains on freshly generated examples; held-out accuracy is teacher-forced target tokens."
                      if synthetic else "It rebuilds each corpus sentence from a copy whose spans were replaced "
                                        "by [MASK]; held-out accuracy is teacher-forced target tokens."))
    scratch = init == "scratch"
    c1, c2, c3 = st.columns(3)
    layers = c1.slider("Layers", 1, 6, 2, key="studio_layers", disabled=not scratch)
    heads = c2.select_slider("Heads", [1, 2, 4, 8], value=2, key="studio_heads", disabled=not scratch)
    hidden = c3.select_slider("Width", [32, 64, 128, 256], value=64, key="studio_hidden", disabled=not scratch,
                              help="Hidden size; the feed-forward layer is 4x wider.")
    c1, c2, c3, c4 = st.columns(4)
    steps = c1.number_input("Steps", 1, 100_000, 300, step=50, key="studio_steps")
    lr = c2.select_slider("Learning rate", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], value=3e-3, key="studio_lr",
                          format_func=lambda v: f"{v:g}")
    batch = c3.select_slider("Batch size", [8, 16, 32, 64], value=32, key="studio_batch")
    every = c4.number_input("Snapshot every K steps", 1, 10_000, 25, key="studio_every")
    source, n_train, upload, probe_target = "synthetic", 0, None, ""
    if task == "repeat":  # StudioConfig.check sets the probe: a held-out repeated sequence
        probe = S.decoder.repeat_probe(S.decoder.repeat_tokenizer())
        st.caption(f"Probe (held out; its attention is recorded at every snapshot): “{probe}”")
    elif synthetic:
        pairs = S.synthetic_probes(task)
        probe, probe_target = st.selectbox(
            "Probe example (held out; its attention is recorded at every snapshot)", pairs,
            format_func=lambda p: f"{p[0]}  →  {p[1]}", key=f"studio_probe_{task}")
    else:
        c1, c2 = st.columns(2)
        source = c1.radio("Corpus", ["bundled", "upload"], key="studio_corpus", horizontal=True,
                          format_func={"bundled": "Bundled (250k sentences)", "upload": "Upload a .txt"}.get)
        n_train = c2.number_input("Training sentences (bundled)", 100, 250_000, 2000, step=500, key="studio_n",
                                  disabled=source != "bundled")
        upload = st.file_uploader("Your corpus: plain text, one sentence per line", type=["txt"],
                                  key="studio_upload") if source == "upload" else None
        if dec:  # a sentence said twice: the second time, an induction head looks back at the first
            probe = st.text_input("Probe text (its attention is recorded at every snapshot)", S.decoder.CLM_PROBE,
                                  key="studio_probe_clm")
        else:
            probe = st.text_input("Probe sentence (its attention is recorded at every snapshot)", S.PROBE_SENTENCE,
                                  key="studio_probe")
    name = st.text_input("Run name (folder under the user model directory)", "", key="studio_name",
                         placeholder="default: studio-<date>-<time>")
    st.button("Start training", key="studio_start", type="primary", on_click=request, args=("start",),
              disabled=running)
asked = st.session_state.pop("studio_request", None)


def corpus_or_none():
    if task == "repeat":
        return [], [], []
    if synthetic:
        return S.synthetic_data(task)
    if source == "bundled":
        return S.bundled_corpus(int(n_train), seed=0)
    if upload is None:
        st.warning("Upload a .txt corpus first (one sentence per line), or pick the bundled corpus.", icon="📄")
        return None
    if upload.size > UPLOAD_LIMIT:
        st.warning(f"The file has {upload.size / 1e6:.0f} MB; the studio takes at most "
                   f"{UPLOAD_LIMIT / 1e6:.0f} MB of text.", icon="📄")
        return None
    try:
        return S.split_corpus(upload.getvalue().decode("utf-8").splitlines())
    except UnicodeDecodeError:
        st.warning("The file is not UTF-8 text; save it as plain UTF-8 text and upload again.", icon="📄")
    except ValueError as e:
        st.warning(str(e), icon="📄")
    return None


if asked == "start":
    if running:  # checked before reading the corpus; launch() refuses as well
        st.warning(f"A training job ('{job.config.name}') is already running in this session: wait for it to "
                   "finish or cancel it before starting another.", icon="⏳")
    elif (data := corpus_or_none()) is not None:
        cfg = S.StudioConfig(name=name, task=task, init=init, layers=layers, heads=heads, hidden=hidden,
                             steps=int(steps), batch_size=batch, lr=lr, snapshot_every=int(every), probe=probe,
                             probe_target=probe_target)
        try:
            job = S.launch(st.session_state, S.TrainingJob(cfg, *data), JOB)
            st.rerun()  # redraw from the top: the form gives way to the live charts
        except S.JobAlreadyRunning as e:
            st.warning(str(e), icon="⏳")
        except (ValueError, FileExistsError) as e:
            st.error(str(e), icon="🚫")

resumable = [] if running else S.resumable_runs()
if resumable:
    c1, c2 = st.columns([3, 1])
    pick = c1.selectbox("Resume a cancelled run", resumable, format_func=lambda p: p.name, key="studio_resume_pick")
    c2.button("Resume", key="studio_resume", on_click=request, args=("resume",))
    if asked == "resume":
        try:
            job = S.launch(st.session_state, S.TrainingJob.resume_from(pick), JOB)
            st.rerun()
        except S.JobAlreadyRunning as e:
            st.warning(str(e), icon="⏳")
        except (OSError, ValueError, KeyError) as e:
            st.error(f"Could not resume '{pick.name}': {e}", icon="🚫")


def use_model(path: str) -> None:
    st.session_state.model_choice = path


if job is not None and not running:  # outside the fragment: the button must rerun the whole app (sidebar too)
    if job.status == S.FAILED:
        st.error(f"Training failed: {job.error}", icon="🚫")
    elif job.saved_step is not None:
        verb = "Finished" if job.status == S.DONE else "Cancelled"
        where = " (the Encoder–decoder page generates with it)" if job.config.task in S.ENCODER_DECODER else \
            " (the Head atlas scores its heads)" if job.config.task in S.DECODER else ""
        st.success(f"{verb} at step {job.saved_step}: saved as a Hugging Face checkpoint in `{job.run_dir}`. "
                   f"It is in the sidebar's model picker on every page{where}.", icon="💾")
        st.button("Use this model in the other pages", key="studio_use", on_click=use_model, args=(str(job.run_dir),))


@st.fragment(run_every=1.0 if running else None)
def progress() -> None:
    view.live(st.session_state.get(JOB), running)


progress()

if job is not None and not running and job.snapshots:
    view.replay(job)
