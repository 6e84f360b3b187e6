"""Every page control set at least once, and its effect read off what the page shows (AppTest).

The expected values are computed here from captures and numpy (the atlas's k-means is checked by the property
that defines it), never by calling the page's own figure code.
"""


import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from apptest import TEXT, open_page, rerun, tokens_of
from conftest import APP, chart_spec
from viz.app.ui import EXAMPLES
from viz.core.models import load_model



# ----------------------------------------------------------------------------- sidebar
def test_sidebar_example_picker_sets_the_text_every_page_reads():
    from viz.core.capture import capture

    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.sidebar.selectbox(key="example").set_value(EXAMPLES[3]).run()
    assert not at.exception
    assert at.session_state["text"] == EXAMPLES[3]
    want = capture(load_model("minilm"), EXAMPLES[3])
    head = chart_spec(at, "attn_head_fig")["data"][0]
    assert tokens_of(head["x"]) == want.tokens
    np.testing.assert_allclose(head["z"], want.attentions["encoder"][0, 0], atol=1e-6)


# ----------------------------------------------------------------------------- layer flow
def drawn_links(fig: dict) -> set[tuple[int, int, int]]:
    """(level, to-token, from-token) of every link line in the flow view (segments [lv, lv+1, None])."""
    links = set()
    for trace in fig["data"]:
        if trace.get("mode") != "lines":
            continue
        xs, ys = list(trace["x"]), list(trace["y"])
        for i in range(0, len(xs), 3):
            assert xs[i + 1] == xs[i] + 1
            links.add((int(xs[i]), int(ys[i + 1]), int(ys[i])))
    return links


def links_by_definition(mats: np.ndarray, threshold: float, top_k: int) -> set[tuple[int, int, int]]:
    """Per level and token: its top_k incoming weights, of those the ones >= threshold (and > 0)."""
    out = set()
    for lv, m in enumerate(mats):
        for q in range(m.shape[0]):
            for j in np.argsort(-m[q], kind="stable")[:top_k]:
                if m[q, j] >= threshold and m[q, j] > 0:
                    out.add((lv, q, int(j)))
    return out


def test_flow_view_link_weighting_threshold_and_top_k():
    from viz.core.capture import capture
    from viz.tasks.flowdata import layer_flow

    bundle = load_model("minilm")
    cap = capture(bundle, TEXT)
    A = cap.attentions["encoder"].astype(np.float64)
    T = A.shape[-1]
    graph = 0.5 * A.mean(1) + 0.5 * np.eye(T)
    graph /= graph.sum(-1, keepdims=True)
    lf = layer_flow(bundle, cap, "encoder")
    norm = lf.norm_summed / lf.norm_summed.sum(-1, keepdims=True)
    at = open_page("flow")
    assert at.selectbox(key="flow_weights").value == "graph"
    assert drawn_links(chart_spec(at, "flow_view")) == links_by_definition(graph, 0.05, 3)
    seen = []
    for kind, mats, threshold, top_k in (("raw", A.mean(1), 0.05, 3), ("raw", A.mean(1), 0.2, 3),
                                         ("raw", A.mean(1), 0.2, 1), ("norm", norm, 0.0, 2), ("graph", graph, 0.3, 10)):
        rerun(at, flow_weights=kind, flow_threshold=threshold, flow_topk=top_k)
        fig = chart_spec(at, "flow_view")
        want = links_by_definition(mats, threshold, top_k)
        assert drawn_links(fig) == want, (kind, threshold, top_k)
        seen.append(len(want))
    assert len(set(seen)) == len(seen)  # every setting changed what is drawn


def test_flow_norm_panel_layer_and_head():
    from viz.core.capture import capture
    from viz.tasks.flowdata import layer_flow

    bundle = load_model("minilm")
    lf = layer_flow(bundle, capture(bundle, TEXT), "encoder")
    at = open_page("flow", flow_norm_layer=4, flow_norm_head=9)
    raw, norm = chart_spec(at, "flow_raw_head"), chart_spec(at, "flow_norm_head_fig")
    assert "L4 H9" in raw["layout"]["title"]["text"] and "L4 H9" in norm["layout"]["title"]["text"]
    np.testing.assert_allclose(raw["data"][0]["z"], lf.raw[4, 9], atol=1e-6)
    np.testing.assert_allclose(norm["data"][0]["z"], lf.norm[4, 9], atol=1e-5)
    np.testing.assert_allclose(chart_spec(at, "flow_norm_res")["data"][0]["z"], lf.norm_res[4], atol=1e-5)
    assert np.abs(lf.raw[4, 9] - lf.raw[0, 0]).max() > 0.05  # another head really is another picture


# ----------------------------------------------------------------------------- masked LM
def test_mlm_top_k_sets_how_many_predictions_are_shown():
    from viz.tasks.mlm import predict

    text = "She poured a cup of [MASK] and read the paper."
    bundle = load_model("minilm-mlm")
    at = open_page("mlm", model_choice="minilm-mlm", text=text)
    for k in (3, 12):
        rerun(at, model_choice="minilm-mlm", text=text, mlm_topk=k)
        (pred,) = predict(bundle, text, top_k=k, layers=True).predictions
        bars = chart_spec(at, f"mlm_top_{pred.position}")
        assert tokens_of(bars["data"][0]["y"])[::-1] == [t for t, _ in pred.top] and len(pred.top) == k
        assert bars["layout"]["title"]["text"] == f"top {k}"
        table = chart_spec(at, f"mlm_layers_{pred.position}")["data"][0]
        assert np.array(table["text"]).shape == (k, bundle.n_layers + 1)


# ----------------------------------------------------------------------------- encoder–decoder
def test_encoder_decoder_step_layer_head_and_prev_next():
    import copy

    import torch

    bundle = load_model("seq2seq-dates")
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["model_choice"] = "seq2seq-dates"
    at.switch_page("pages/encdec.py")
    at.run()
    assert not at.exception
    out = at.dataframe[0].value["output"].tolist()
    tok = bundle.tokenizer
    src = tok("3 March 2021", return_tensors="pt")
    dec = [bundle.model.config.decoder_start_token_id] + tok.convert_tokens_to_ids(out)[:-1]
    model = copy.deepcopy(bundle.model)
    model.set_attn_implementation("eager")
    with torch.inference_mode():
        ref = model(**src, decoder_input_ids=torch.tensor([dec]), output_attentions=True, use_cache=False)
    cross = torch.stack([a[0] for a in ref.cross_attentions]).numpy()  # [layer, head, step, source]
    self_ = torch.stack([a[0] for a in ref.decoder_attentions]).numpy()  # [layer, head, step, step]

    def shown(step, layer, head):
        c, s = chart_spec(at, "ed_step_cross"), chart_spec(at, "ed_step_self")
        assert c["layout"]["title"]["text"].startswith(f"Step {step}:")
        pick = (lambda a: a[layer].mean(0)) if head == "mean" else (lambda a: a[layer, head])
        np.testing.assert_allclose(c["data"][0]["y"], pick(cross[:, :, step]), atol=6e-5)  # 4 digits drawn
        np.testing.assert_allclose(s["data"][0]["y"], pick(self_[:, :, step, : step + 1]), atol=6e-5)
        assert tokens_of(s["data"][0]["x"]) == tok.convert_ids_to_tokens(dec[: step + 1])

    shown(0, 1, "mean")  # opens on step 0, the last layer, the mean over heads
    at.session_state["ed_step_layer"], at.session_state["ed_step_head"] = 0, 2
    at.session_state["model_choice"] = "seq2seq-dates"
    at.run()
    shown(0, 0, 2)
    for button, step in (("ed_next", 1), ("ed_next", 2), ("ed_prev", 1)):
        at.button(key=button).click()
        at.session_state["model_choice"] = "seq2seq-dates"
        at.run()
        assert not at.exception and at.select_slider(key="ed_step").value == step
        shown(step, 0, 2)
    for _ in range(len(out) + 2):  # past the last step: it stays on the last
        at.button(key="ed_next").click()
        at.session_state["model_choice"] = "seq2seq-dates"
        at.run()
    assert at.select_slider(key="ed_step").value == len(out) - 1
    shown(len(out) - 1, 0, 2)


# ----------------------------------------------------------------------------- head atlas
SENTENCES = ["The cat sat on the mat, and the dog slept.", "She poured a cup of coffee and read the paper.",
             "The keys to the cabinet are on the table.", "Is this the way to the station?",
             "We walked along the river; the water was cold.", "Birds sing in the early morning, loudly!",
             "Unbelievably, the committee postponed the decision again.", "My grandmother's recipe needs eggs."]


def atlas_page(monkeypatch, tmp_path, max_tokens: int) -> AppTest:
    corpus = tmp_path / "sample.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    monkeypatch.setenv("VIZ_SAMPLE_CORPUS", str(corpus))
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("pages/atlas.py").run()
    assert not at.exception
    # settings no other test uses (the sentences are short): this test's Run, never a result stored by another
    at.number_input(key="atlas_max_tokens").set_value(max_tokens).run()
    return at


def test_atlas_column_picker_measures_the_chosen_column(monkeypatch, tmp_path):
    from viz.atlas.chunks import run_atlas

    at = atlas_page(monkeypatch, tmp_path, 120)
    rows = "id,sentence,lang\n" + "".join(f'{i},"{s}",en\n' for i, s in enumerate(SENTENCES))
    at.radio(key="atlas_source").set_value("Upload a file").run()
    at.file_uploader(key="atlas_upload").set_value(("corpus.csv", rows.encode(), "text/csv")).run()
    picker = at.selectbox(key="atlas_column")
    assert list(picker.options) == ["id", "sentence", "lang"]
    bundle = load_model("minilm")
    for column, sentences in (("sentence", SENTENCES), ("id", [str(i) for i in range(len(SENTENCES))])):
        at.selectbox(key="atlas_column").set_value(column).run()
        assert any("Press **Run atlas**" in i.value for i in at.info)  # another corpus: nothing measured yet
        at.button(key="atlas_run").click().run()
        assert not at.exception and f"{len(sentences)} sentences" in at.success[0].value
        want = run_atlas(bundle, sentences)
        table = at.dataframe[0].value
        np.testing.assert_allclose(table["entropy"].to_numpy(float), want.stats["entropy"].ravel(), atol=2e-6)
        np.testing.assert_allclose(table["prev"].to_numpy(float), want.stats["prev"].ravel(), atol=2e-6)
        assert f"{want.n_tokens:,} tokens" in at.success[0].value


def test_atlas_word_level_and_clusters(monkeypatch, tmp_path):
    from viz.analysis.head_stats import STATS
    from viz.atlas.chunks import run_atlas

    at = atlas_page(monkeypatch, tmp_path, 110)
    at.toggle(key="atlas_words").set_value(True).run()
    at.button(key="atlas_run").click().run()
    assert not at.exception
    res = run_atlas(load_model("minilm"), SENTENCES, words=True)
    at.selectbox(key="atlas_stat").set_value("distance").run()
    grid = chart_spec(at, "atlas_stat_fig")["data"][0]["z"]
    np.testing.assert_allclose(grid, np.round(res.stats["distance"], 4), atol=1e-6)  # tokens first
    at.radio(key="atlas_level").set_value("words").run()
    assert not at.exception
    grid = chart_spec(at, "atlas_stat_fig")["data"][0]["z"]
    np.testing.assert_allclose(grid, np.round(res.word_stats["distance"], 4), atol=1e-6)
    assert np.abs(res.word_stats["distance"] - res.stats["distance"]).max() > 0.05  # words really differ
    table = at.dataframe[0].value
    np.testing.assert_allclose(table["word_distance"].to_numpy(float), res.word_stats["distance"].ravel(), atol=2e-6)

    feats = np.stack([res.word_stats[s].ravel() for s in STATS], axis=1)
    z = (feats - feats.mean(0)) / np.where(feats.std(0) > 0, feats.std(0), 1)  # z-scored, as the page says
    for k in (3, 7):
        at.slider(key="atlas_k").set_value(k).run()
        traces = chart_spec(at, "atlas_map_fig")["data"]
        assert len(traces) == k and [t["name"] for t in traces] == [f"cluster {c}" for c in range(k)]
        label = np.full(len(z), -1)
        for c, t in enumerate(traces):
            for layer, head, _ in t["customdata"]:
                assert label[int(layer) * 12 + int(head)] == -1  # every head in exactly one cluster
                label[int(layer) * 12 + int(head)] = c
        assert (label >= 0).all()
        centres = np.stack([z[label == c].mean(0) for c in range(k)])
        nearest = ((z[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        assert (nearest == label).all()  # k-means converged: every head sits with its nearest centre


# ----------------------------------------------------------------------------- training studio
def test_studio_layers_heads_width_lr_and_corpus_upload(tmp_path, monkeypatch):
    """The model the studio builds has the chosen layers/heads/width, the trainer gets the chosen learning rate,
    and it trains on exactly the uploaded lines (split into train and held-out)."""
    import json

    from viz.train import studio as S

    monkeypatch.setenv("VIZ_USER_MODELS", str(tmp_path))
    seen = {}
    real = S.mlm.train_mlm

    def spy(*args, **kwargs):
        seen.update(kwargs, train=args[2], eval=args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(S.mlm, "train_mlm", spy)
    words = ["river", "garden", "station", "kitchen", "forest", "market"]
    lines = [f"The {i}th visitor walked to the {words[i % 6]} before noon." for i in range(60)]
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("pages/studio.py")
    for k, v in dict(studio_steps=4, studio_every=2, studio_batch=8, studio_name="ctl").items():
        at.session_state[k] = v
    at.run()
    assert not at.exception
    at.slider(key="studio_layers").set_value(3)
    at.select_slider(key="studio_heads").set_value(4)
    at.select_slider(key="studio_hidden").set_value(32)
    at.select_slider(key="studio_lr").set_value(1e-2)
    at.radio(key="studio_corpus").set_value("upload").run()
    assert at.number_input(key="studio_n").disabled  # the bundled corpus's size no longer applies
    at.button(key="studio_start").click().run()  # no file yet: a message, no job
    assert any("Upload a .txt corpus first" in w.value for w in at.warning) and "studio_job" not in at.session_state
    at.file_uploader(key="studio_upload").set_value(("mine.txt", ("\n".join(lines) + "\n").encode(), "text/plain"))
    at.run()
    at.button(key="studio_start").click().run()
    assert not at.exception and not at.error
    job = at.session_state["studio_job"]
    assert job.wait(300).status == S.DONE, job.error
    assert (job.config.layers, job.config.heads, job.config.hidden, job.config.lr) == (3, 4, 32, 1e-2)
    cfg = json.loads((tmp_path / "ctl" / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["hidden_size"]) == (3, 4, 32)
    assert job.snapshots[-1]["probe_attn"].shape[:2] == (3, 4)
    assert seen["lr_head"] == seen["lr_encoder"] == 1e-2
    assert sorted(job.train_sentences + job.eval_sentences) == sorted(lines)
    assert seen["train"] == job.train_sentences and seen["eval"] == job.eval_sentences and len(seen["eval"]) == 6
