"""Every download of every page, parsed, against what the page shows and against the library.

AppTest runs each page in this process; the `downloads` fixture (conftest) keeps every download button's data,
and a click's bytes are built from it exactly as Streamlit builds them. Each test also asserts the page's whole
set of downloads, so a new button fails here until its file is checked too. The references are the library's
own functions run here on the bundled models (`capture`, `predict`, `mask_sweep`, `generate`, `compare`,
`layer_flow`, the atlas statistics recomputed from captures), themselves checked against independent references
in the unit tests.
"""

import json

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from apptest import TEXT, open_page, rerun, tokens_of
from conftest import APP, chart_spec
from viz.core.models import load_model



def html_keys(at) -> set[str]:
    return {f"{c.key}_html_{kind}" for c in at.get("plotly_chart") for kind in ("small", "offline")}


def test_attention_page_downloads(downloads):
    from viz.core.capture import capture

    at = open_page("attention", attn_layer=3, attn_head=7, attn_agg="max", attn_agg_layer="layer 2")
    cap = capture(load_model("minilm"), TEXT)
    A, tokens = cap.attentions["encoder"], cap.tokens
    head = chart_spec(at, "attn_head_fig")["data"][0]
    np.testing.assert_allclose(head["z"], A[3, 7], atol=1e-6)
    assert tokens_of(head["x"]) == tokens == tokens_of(head["y"])
    rows, cols, values = downloads.matrix("attn_head_csv")
    assert rows == tokens == cols
    np.testing.assert_allclose(values, head["z"], atol=1e-6)
    agg = chart_spec(at, "attn_agg_fig")
    np.testing.assert_allclose(agg["data"][0]["z"], A[2].max(0), atol=1e-6)
    assert agg["layout"]["title"]["text"].startswith("max over heads · layer 2")
    np.testing.assert_allclose(downloads.matrix("attn_agg_csv")[2], A[2].max(0), atol=1e-6)
    sink = downloads.csv("attn_sink_csv", index_col=0)
    assert list(sink.index) == [f"L{i}" for i in range(6)] and list(sink.columns) == [f"H{h}" for h in range(12)]
    np.testing.assert_allclose(sink.to_numpy(), chart_spec(at, "attn_sink_fig")["data"][0]["z"], atol=1e-6)
    np.testing.assert_allclose(sink.to_numpy(), A[:, :, 1:, 0].mean(-1), atol=1e-6)  # by its definition
    heads = downloads.npz("attn_model_npz")
    np.testing.assert_allclose(heads["attentions"], A, atol=1e-6)
    assert list(heads["query_tokens"]) == tokens == list(heads["key_tokens"])
    whole = downloads.npz("attn_capture_npz")
    np.testing.assert_allclose(whole["encoder_attentions"], A, atol=1e-6)
    np.testing.assert_allclose(whole["encoder_hidden_states"], cap.hidden_states["encoder"], atol=1e-5)
    np.testing.assert_allclose(whole["encoder_queries"], cap.queries["encoder"], atol=1e-5)
    assert list(whole["tokens"]) == tokens
    assert downloads.check_html(at) == 4
    assert downloads.keys() == {"attn_model_npz", "attn_sink_csv", "attn_head_csv", "attn_agg_csv",
                                "attn_capture_npz"} | html_keys(at)


def test_mlm_page_downloads_equal_predict_and_the_sweep(downloads):
    from viz.tasks.mlm import mask_sweep, predict

    text = "The cat sat on the [MASK] because it was tired."
    at = open_page("mlm", model_choice="minilm-mlm", text=text, mlm_positions=[2], mlm_topk=7)
    bundle = load_model("minilm-mlm")
    r = predict(bundle, text, positions=(2,), top_k=7, layers=True)
    assert [p.position for p in r.predictions] == [2, 6]
    rows = downloads.csv("mlm_top_csv")
    layer_rows = downloads.csv("mlm_layer_csv")
    for pred in r.predictions:
        bars = chart_spec(at, f"mlm_top_{pred.position}")["data"][0]  # best on top: listed last
        assert tokens_of(bars["y"])[::-1] == [t for t, _ in pred.top]
        np.testing.assert_allclose(np.asarray(bars["x"], float)[::-1], [p for _, p in pred.top], atol=1e-6)
        mine = rows[rows.position == pred.position]
        assert mine["token"].tolist() == [t for t, _ in pred.top] and mine["rank"].tolist() == list(range(1, 8))
        np.testing.assert_allclose(mine["prob"], [p for _, p in pred.top], atol=1e-6)
        table = chart_spec(at, f"mlm_layers_{pred.position}")["data"][0]  # [rank, level]: text = token, z = p
        assert np.array(table["text"]).T.tolist() == [[t for t, _ in row] for row in pred.layer_top]
        np.testing.assert_allclose(np.asarray(table["z"], float).T, [[p for _, p in row] for row in pred.layer_top],
                                   atol=1e-6)
        mine = layer_rows[layer_rows.position == pred.position]
        assert mine["level"].tolist() == [lv for lv in table["x"] for _ in range(7)]
        assert mine["token"].tolist() == [t for row in pred.layer_top for t, _ in row]
    cat = r.predictions[0]
    assert rows[rows.position == 2]["original"].unique().tolist() == ["cat"]
    orig = chart_spec(at, "mlm_orig_2")["data"]
    np.testing.assert_allclose(orig[0]["y"], cat.layer_original_prob, atol=1e-6)
    assert list(orig[1]["y"]) == cat.layer_original_rank
    mine = layer_rows[(layer_rows.position == 2) & (layer_rows["rank"] == 1)]
    np.testing.assert_allclose(mine["original_prob"], cat.layer_original_prob, atol=1e-6)
    assert mine["original_rank"].tolist() == cat.layer_original_rank

    at.button(key="mlm_sweep_run").click()
    rerun(at, model_choice="minilm-mlm", text=text)
    sweep = mask_sweep(bundle, text)
    bars = chart_spec(at, "mlm_sweep_fig")["data"][0]
    np.testing.assert_allclose(bars["y"], sweep.prob, atol=1e-6)
    got = downloads.csv("mlm_sweep_csv", index_col=0)
    assert got["position"].tolist() == sweep.positions and got["rank"].tolist() == sweep.rank.tolist()
    assert got["token"].tolist() == [sweep.tokens[i] for i in sweep.positions] == tokens_of(bars["x"])
    np.testing.assert_allclose(got["prob"], sweep.prob, atol=1e-6)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pseudo-log-likelihood"] == f"{sweep.pll:.2f}"
    assert metrics["Per token (mean log p)"] == f"{sweep.pll / len(sweep.positions):.2f}"
    assert downloads.check_html(at) == 6  # per mask: top-k, levels (and the original's levels); the sweep
    assert downloads.keys() == {"mlm_top_csv", "mlm_layer_csv", "mlm_sweep_csv"} | html_keys(at)


def test_compare_page_shows_and_downloads_both_runs(downloads):
    """Mask 'coffee': the second run is the capture of the text with [MASK] typed there; JS per head, KL per token
    and the top-5 table recomputed here from the two captures' weights and logits."""
    from viz.core.capture import capture

    text = "She poured a cup of coffee and read the paper."
    at = open_page("compare", model_choice="minilm-mlm", text=text, cmp_variant="mask", cmp_positions=[6])
    rerun(at, model_choice="minilm-mlm", text=text, cmp_layer=2, cmp_head=9)  # the user's head, once it is open
    bundle = load_model("minilm-mlm")
    base = capture(bundle, text, with_logits=True)
    other = capture(bundle, "She poured a cup of [MASK] and read the paper.", with_logits=True)
    A, B = base.attentions["encoder"], other.attentions["encoder"]
    m = 0.5 * (A + B)
    kl_rows = lambda p, q: (np.where(p > 0, p * np.log(np.clip(p, 1e-30, None) / np.clip(q, 1e-30, None)), 0)).sum(-1)  # noqa: E731
    js = (0.5 * kl_rows(A, m) + 0.5 * kl_rows(B, m)).mean(-1)  # [layer, head]: mean over rows
    grid = chart_spec(at, "cmp_grid")["data"][0]
    np.testing.assert_allclose(grid["z"], js, atol=1e-5)
    got = downloads.csv("cmp_js_csv", index_col=0)
    assert got[["layer", "head"]].to_numpy().tolist() == [[lv, h] for lv in range(6) for h in range(12)]
    np.testing.assert_allclose(got["js"].to_numpy().reshape(6, 12), js, atol=1e-5)
    order = np.argsort(-js.ravel(), kind="stable")[:10]
    top = at.dataframe[0].value
    assert top[["layer", "head"]].to_numpy().tolist() == [[int(i) // 12, int(i) % 12] for i in order]
    pair = chart_spec(at, "cmp_pair")
    assert "L2 H9" in pair["layout"]["title"]["text"]
    for trace, want in zip(pair["data"], (A[2, 9], B[2, 9], B[2, 9] - A[2, 9])):
        np.testing.assert_allclose(trace["z"], want, atol=1e-5)
    rows, cols, diff = downloads.matrix("cmp_diff_csv")
    assert rows == other.tokens == cols and other.tokens[6] == "[MASK]"
    np.testing.assert_allclose(diff, B[2, 9] - A[2, 9], atol=1e-5)
    arrays = downloads.npz("cmp_npz")
    np.testing.assert_allclose(arrays["base"], A, atol=1e-5)
    np.testing.assert_allclose(arrays["other"], B, atol=1e-5)
    np.testing.assert_allclose(arrays["diff"], B - A, atol=1e-5)
    np.testing.assert_allclose(arrays["head_js"], js, atol=1e-5)
    P = np.exp(base.logits - base.logits.max(-1, keepdims=True))
    P /= P.sum(-1, keepdims=True)
    Q = np.exp(other.logits - other.logits.max(-1, keepdims=True))
    Q /= Q.sum(-1, keepdims=True)
    kl = kl_rows(P.astype(np.float64), Q.astype(np.float64))
    keep = ~base.special
    bars = chart_spec(at, "cmp_kl")["data"][0]
    np.testing.assert_allclose(np.asarray(bars["y"], float), kl[keep], rtol=2e-3, atol=1e-4)
    assert {m.label: m.value for m in at.metric}["Mean KL(first ‖ second) over tokens"] == f"{kl[keep].mean():.4f}"
    table = downloads.csv("cmp_topk_csv")
    for run, probs in (("first", P[6]), ("second", Q[6])):
        mine = table[table.run == run]
        best = np.argsort(-probs)[:5]
        assert mine["position"].unique().tolist() == [6]
        assert mine["token"].tolist() == bundle.tokenizer.convert_ids_to_tokens(best.tolist())
        np.testing.assert_allclose(mine["prob"], probs[best], atol=1e-5)
    assert downloads.check_html(at) == 3
    assert downloads.keys() == {"cmp_js_csv", "cmp_npz", "cmp_diff_csv", "cmp_topk_csv"} | html_keys(at)


def eager_forward(bundle, **inputs):
    """A deep copy of the model on transformers' own eager attention (never our attention function)."""
    import copy

    import torch

    model = copy.deepcopy(bundle.model)
    model.set_attn_implementation("eager")
    with torch.inference_mode():
        return model(**inputs, output_attentions=True, output_hidden_states=True, use_cache=False)


def test_encoder_decoder_page_downloads_equal_an_eager_forward(downloads):
    """seq2seq-dates greedy: the steps table, its CSV and JSON, the attention heatmap, the alignment and the NPZ
    against one eager forward of a copy over the decoded sequence (teacher-forced on the page's own output)."""
    import torch

    from viz.tasks.config_summary import describe, table_rows

    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["model_choice"] = "seq2seq-dates"
    at.switch_page("pages/encdec.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    bundle = load_model("seq2seq-dates")
    tok = bundle.tokenizer
    src = tok("3 March 2021", return_tensors="pt")
    steps = downloads.csv("ed_steps_csv", index_col=0)
    shown = at.dataframe[0].value
    assert shown["output"].tolist() == steps["output"].tolist() == ["2021", "-", "03", "-", "03", "</s>"]
    out_ids = tok.convert_tokens_to_ids(steps["output"].tolist())
    dec = [bundle.model.config.decoder_start_token_id] + out_ids[:-1]
    ref = eager_forward(bundle, input_ids=src["input_ids"], attention_mask=src["attention_mask"],
                        decoder_input_ids=torch.tensor([dec]))
    probs = ref.logits[0].double().softmax(-1)
    assert steps["decoder input"].tolist() == tok.convert_ids_to_tokens(dec)
    np.testing.assert_allclose(steps["p(output)"], probs[torch.arange(len(out_ids)), out_ids].numpy(), atol=1e-4)
    assert steps["top-1"].tolist() == tok.convert_ids_to_tokens(probs.argmax(-1).tolist())
    cross = torch.stack([a[0] for a in ref.cross_attentions]).numpy()  # [layer, head, step, source]
    source = tok.convert_ids_to_tokens(src["input_ids"][0].tolist())
    assert steps["most attended source (last layer, mean)"].tolist() == \
        [source[i] for i in cross[-1].mean(0).argmax(-1)]
    assert shown.reset_index().astype(str).to_numpy().tolist() == steps.reset_index().astype(str).to_numpy().tolist()
    js = json.loads(downloads.bytes("ed_steps_json"))
    assert js["output_tokens"] == steps["output"].tolist() and js["source_tokens"] == source
    for t, step in enumerate(js["steps"]):
        np.testing.assert_allclose(step["cross_attention"], cross[-1, :, t].mean(0), atol=1e-5)
        np.testing.assert_allclose(step["prob"], float(probs[t, out_ids[t]]), atol=1e-5)
        best = probs[t].topk(5)
        assert [x["token"] for x in step["top_k"]] == tok.convert_ids_to_tokens(best.indices.tolist())
    bars = chart_spec(at, "ed_step_cross")["data"][0]  # step 0, last layer, mean over heads
    np.testing.assert_allclose(bars["y"], cross[-1, :, 0].mean(0), atol=6e-5)  # drawn rounded to 4 digits
    topk = chart_spec(at, "ed_step_topk")["data"][0]
    assert tokens_of(topk["y"])[::-1] == [x["token"] for x in js["steps"][0]["top_k"]]
    enc = torch.stack([a[0] for a in ref.encoder_attentions]).numpy()
    L = enc.shape[0]
    head = chart_spec(at, "ed_head_fig")["data"][0]  # opens on the encoder's last layer, head 0
    np.testing.assert_allclose(head["z"], enc[L - 1, 0], atol=1e-5)
    rows, cols, values = downloads.matrix("ed_head_csv")
    assert rows == source == cols
    np.testing.assert_allclose(values, enc[L - 1, 0], atol=1e-5)
    align = chart_spec(at, "ed_align_fig")["data"][0]  # the last layer, mean over heads
    np.testing.assert_allclose(align["z"], cross[L - 1].mean(0), atol=1e-5)
    rows, cols, values = downloads.matrix("ed_align_csv")
    assert rows == tok.convert_ids_to_tokens(dec) and cols == source
    np.testing.assert_allclose(values, cross[L - 1].mean(0), atol=1e-5)
    arrays = downloads.npz("ed_capture_npz")
    np.testing.assert_allclose(arrays["encoder_attentions"], enc, atol=1e-5)
    np.testing.assert_allclose(arrays["cross_attentions"], cross, atol=1e-5)
    np.testing.assert_allclose(arrays["decoder_attentions"], torch.stack([a[0] for a in ref.decoder_attentions]).numpy(),
                               atol=1e-5)
    assert list(arrays["tokens"]) == source and list(arrays["target_tokens"]) == tok.convert_ids_to_tokens(dec)
    arch = downloads.csv("ed_arch_csv", index_col=0, keep_default_na=False)
    want = pd.DataFrame(table_rows(describe(bundle.config))).set_index("property")
    assert arch.astype(str).to_numpy().tolist() == want.to_numpy().tolist() == at.dataframe[1].value.to_numpy().tolist()
    assert downloads.check_html(at) == len(at.get("plotly_chart")) == 7
    assert downloads.keys() == {"ed_steps_csv", "ed_steps_json", "ed_head_csv", "ed_align_csv", "ed_capture_npz",
                                "ed_arch_csv"} | html_keys(at)


def path_mass_by_loops(mats, token, top):
    """One token's unit of mass routed down proportionally from level top+1 (the rollout decomposition)."""
    out = np.zeros_like(mats)
    mass = np.eye(mats.shape[-1])[token]
    for lv in range(top, -1, -1):
        for i in range(mats.shape[-1]):
            out[lv, i] = mass[i] * mats[lv, i]
        mass = out[lv].sum(0)
    return out


def test_flow_page_downloads(downloads):
    """MiniLM, following token 3 from the top: links, the flows into it, the rollout heatmap, every array, the
    journey's cosines and the PCA paths, against the capture and numpy here."""
    from viz.analysis.flow import attention_flow, attention_rollout
    from viz.core.capture import capture

    at = open_page("flow", flow_token=3)
    cap = capture(load_model("minilm"), TEXT)
    A, h, tokens = cap.attentions["encoder"], cap.hidden_states["encoder"], cap.tokens
    L, T = A.shape[0], A.shape[-1]
    graph = 0.5 * A.mean(1) + 0.5 * np.eye(T)
    graph /= graph.sum(-1, keepdims=True)
    links = downloads.npz("flow_view_npz")
    assert list(links["tokens"]) == tokens
    np.testing.assert_allclose(links["links"], path_mass_by_loops(graph, 3, L - 1), atol=1e-6)
    rollout = attention_rollout(A)
    into = downloads.csv("flow_into_csv", index_col=0)
    assert list(into.index) == [f"{t} ({i})" for i, t in enumerate(tokens)]
    np.testing.assert_allclose(into["rollout"], rollout[L - 1, 3], atol=1e-6)
    np.testing.assert_allclose(into[f"raw attention of L{L - 1} (head mean)"], A[L - 1].mean(0)[3], atol=1e-6)
    np.testing.assert_allclose(into["max-flow"], attention_flow(A, layer=L - 1, queries=[3], solver="networkx")[0],
                               atol=1e-6)
    bars = chart_spec(at, "flow_into")["data"]
    np.testing.assert_allclose(bars[0]["y"], rollout[L - 1, 3], atol=1e-4)  # drawn rounded to 4 digits
    np.testing.assert_allclose(bars[2]["y"], into["max-flow"], atol=1e-4)
    heat = chart_spec(at, "flow_heat")["data"][0]  # rollout of the last layer
    np.testing.assert_allclose(heat["z"], rollout[L - 1], atol=1e-6)
    np.testing.assert_allclose(downloads.matrix("flow_heat_csv")[2], rollout[L - 1], atol=1e-6)
    arrays = downloads.npz("flow_all_npz")
    np.testing.assert_allclose(arrays["raw"], A, atol=1e-6)
    np.testing.assert_allclose(arrays["raw_mean"], A.mean(1), atol=1e-6)
    np.testing.assert_allclose(arrays["graph"], graph, atol=1e-6)
    np.testing.assert_allclose(arrays["rollout"], rollout, atol=1e-6)
    np.testing.assert_allclose(arrays["hidden"], h, atol=1e-5)
    norms = downloads.npz("flow_norm_npz")
    assert set(norms) == {"raw", "norm", "norm_summed"}
    np.testing.assert_allclose(norms["norm"], arrays["norm"]) and np.testing.assert_allclose(norms["raw"], A, atol=1e-6)
    np.testing.assert_allclose(chart_spec(at, "flow_raw_head")["data"][0]["z"], A[0, 0], atol=1e-6)
    np.testing.assert_allclose(chart_spec(at, "flow_norm_head_fig")["data"][0]["z"], norms["norm"][0, 0], atol=1e-6)
    np.testing.assert_allclose(chart_spec(at, "flow_norm_res")["data"][0]["z"], arrays["norm_res"][0], atol=1e-6)
    unit = h / np.linalg.norm(h, axis=-1, keepdims=True)
    levels = ["emb"] + [f"L{i}" for i in range(L)]
    cons = downloads.csv("flow_cons_csv", index_col=0)
    assert list(cons.columns) == levels[1:]
    np.testing.assert_allclose(cons.to_numpy(), (unit[1:] * unit[:-1]).sum(-1).T, atol=1e-5)
    fin = downloads.csv("flow_fin_csv", index_col=0)
    assert list(fin.columns) == levels
    np.testing.assert_allclose(fin.to_numpy(), (unit * unit[-1]).sum(-1).T, atol=1e-5)
    np.testing.assert_allclose(chart_spec(at, "flow_fin")["data"][0]["z"], (unit * unit[-1]).sum(-1).T, atol=1e-5)
    np.testing.assert_allclose(downloads.matrix("flow_sim_csv")[2], unit[-1] @ unit[-1].T, atol=1e-5)  # level L5
    pca = downloads.npz("flow_pca_npz")
    assert pca["paths"].shape == (L + 1, T, 2) and list(pca["tokens"]) == tokens and 0 < pca["explained"].sum() <= 1
    centred = unit.reshape(-1, unit.shape[-1]) - unit.reshape(-1, unit.shape[-1]).mean(0)
    sv = np.linalg.svd(centred, compute_uv=False)
    np.testing.assert_allclose(pca["explained"], (sv ** 2 / (sv ** 2).sum())[:2], atol=1e-5)
    assert downloads.check_html(at) == len(at.get("plotly_chart")) == 10
    assert downloads.keys() == {"flow_view_npz", "flow_into_csv", "flow_heat_csv", "flow_all_npz", "flow_norm_npz",
                                "flow_cons_csv", "flow_fin_csv", "flow_sim_csv", "flow_pca_npz"} | html_keys(at)
