"""Figures drawn alone in Chromium (layout.draw_figure: plotly.js, no server) and measured as drawn: the visual
defects of figures whose pages need a long job to reach them (a training run, a 512-token flow)."""

from pathlib import Path

import numpy as np

from layout import draw_figure, measure, problems

ROOT = Path(__file__).resolve().parents[1]



def repeat_probe_tokens() -> list[str]:
    """The decoder studio's own probe: 40 repeated random words behind <s> (long labels: 'american (27)')."""
    from viz.train import studio_decoder as D

    tok = D.repeat_tokenizer()
    return tok.convert_ids_to_tokens(tok(D.repeat_probe(tok))["input_ids"])


def test_studio_head_titles_clear_the_labels_of_the_row_above(browser_page):
    """Subplot titles ('L1 H0') sat on the rotated key labels of the row above, and each head's query labels ran
    over the heatmap to its left; at the page's full width and at a narrow one."""
    from viz.figures.studio import probe_grid

    toks = repeat_probe_tokens()
    attn = np.random.default_rng(0).random((2, 4, len(toks), len(toks))).astype(np.float32)
    for width in (1300, 900):
        draw_figure(browser_page, probe_grid(attn, toks, "Causal self-attention: “used said this…”"), width=width)
        charts = measure(browser_page)
        assert len(charts[0]["annotations"]) == 8 and not problems(charts), (width, problems(charts))


def test_the_phase_change_note_sits_beside_its_line(browser_page):
    """'induction ≥ 0.5 at step 150' ended on its own red line; early in the run it would leave the chart."""
    from viz.figures.studio import context_curves, score_curves

    steps = np.arange(0, 301, 25)
    for phase in (150, 25, 275):
        ind = np.clip((steps - phase + 50) / 100, 0.02, 0.97)[:, None, None] * np.ones((1, 2, 4))
        figs = [score_curves(steps, {"induction": ind, "previous": ind / 2, "duplicate": ind / 3},
                             {"induction": "induction", "previous": "previous", "duplicate": "duplicate"},
                             phase_step=phase),
                context_curves(steps, 3 - 2 * ind[:, 0, 0], ind[:, 0, 0], phase_step=phase)]
        for fig in figs:
            draw_figure(browser_page, fig, width=600)
            charts = measure(browser_page)
            assert charts[0]["lines"] and any(f"at step {phase}" in a["text"] for a in charts[0]["annotations"])
            assert not problems(charts), (phase, problems(charts))


def test_a_first_held_out_point_is_drawn_with_its_value(browser_page):
    """One snapshot: the chart looked empty beside a metric that showed the value."""
    from viz.figures.studio import accuracy_curve

    draw_figure(browser_page, accuracy_curve([{"step": 25, "eval_top1": 0.413}], steps=300), width=450)
    assert browser_page.locator(".scatterlayer .point").count() == 1
    assert browser_page.locator(".scatterlayer .textpoint text").all_text_contents() == ["41.3%"]
    assert not problems(measure(browser_page))


# ----------------------------------------------------------------------------- Layer flow on MiniLM
LONG = ("The old lighthouse keeper, who had lived alone on the rocky island for nearly forty years, watched the storm "
        "roll in from the west while the fishing boats hurried back to the harbour before the waves grew too high, and "
        "the gulls screamed above the cold grey water near the cliffs.")  # 59 words, 73 tokens on MiniLM


def _layer_flow(load, text: str):
    from viz.core.capture import capture
    from viz.tasks.flowdata import layer_flow

    bundle = load("minilm")
    return layer_flow(bundle, capture(bundle, text), "encoder")


def test_the_followed_token_has_its_row_label(browser_page, load):
    """Past 60 tokens the rows are labelled every n-th: a followed token between two labels had none. Its label
    is drawn level with its ring."""
    from viz.analysis.flow import path_mass
    from viz.figures.flow import flow_view

    words = (ROOT / "data" / "sample_sentences.txt").read_text().split()
    lf = _layer_flow(load, " ".join(words[:60]))  # 60 words of the sample sentences: 81 tokens
    T, L = len(lf.query_tokens), lf.graph.shape[0]
    assert T > 60
    picked = next(i for i in range(5, T, 2) if lf.query_tokens[i].isalpha())  # an odd row: between two labels
    draw_figure(browser_page, flow_view(path_mass(lf.graph, picked, L - 1), lf.query_tokens, 0.05, 3, picked, L),
                width=1000)
    charts = measure(browser_page)
    ring = browser_page.locator(".scatterlayer .trace").last.locator(".point").bounding_box()
    ring_y = ring["y"] + ring["height"] / 2
    rows = [t for a in charts[0]["axes"] if "ytick" in a["key"] for t in a["ticks"]]
    at_ring = [t["text"] for t in rows if abs(sum(p[1] for p in t["corners"]) / 4 - ring_y) < 3]
    assert at_ring and at_ring[0].startswith(lf.query_tokens[picked]), (lf.query_tokens[picked], at_ring)
    assert not problems(charts), problems(charts)


def test_the_flow_view_of_512_tokens_is_not_a_solid_block(browser_page, load):
    """At 512 tokens every link drawn at full width (9,000 of them) with 9 px nodes on 2.5 px rows painted the
    view solid blue: the drawn plot area must keep most of its pixels white."""
    from layout import ink
    from viz.figures.flow import flow_view

    words = (ROOT / "data" / "sample_sentences.txt").read_text().split()
    lf = _layer_flow(load, " ".join(words[:420]))
    assert len(lf.query_tokens) == 512
    for mats in (lf.graph, lf.raw_mean):
        draw_figure(browser_page, flow_view(mats, lf.query_tokens, 0.05, 3), width=1000)
        charts = measure(browser_page)
        painted = ink(browser_page, charts[0]["plots"][0])
        assert painted < 0.5, painted
        assert not problems(charts), problems(charts)


def test_pca_labels_do_not_overlap(browser_page, load):
    """Each token's text at the end of its path: at 73 tokens they piled on each other (228 overlapping pairs);
    also at 512. Drawn at the half-page width the page gives the chart."""
    from viz.analysis.journey import pca_paths
    from viz.figures.flow import pca_paths_figure

    words = (ROOT / "data" / "sample_sentences.txt").read_text().split()
    for text in (LONG, " ".join(words[:420])):
        lf = _layer_flow(load, text)
        paths, ratio = pca_paths(lf.hidden)
        draw_figure(browser_page, pca_paths_figure(paths, lf.query_tokens, ratio, "Each token's path"), width=540)
        charts = measure(browser_page)
        assert len(charts[0]["point_texts"]) >= 15 and not problems(charts), problems(charts)
