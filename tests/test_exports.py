"""Figure exports: the camera button's format and the two HTML downloads."""

import plotly.graph_objects as go
import pytest

from viz.app.exports import camera_config, figure_html, html_kinds, plotlyjs_bytes


def test_camera_saves_the_chosen_format():
    assert camera_config("svg", "f")["toImageButtonOptions"] == {"format": "svg", "filename": "f", "scale": 1}
    assert camera_config("png", "f")["toImageButtonOptions"]["scale"] == 2
    assert camera_config("gif", "f")["toImageButtonOptions"]["format"] == "png"  # anything else: PNG


def test_small_html_leaves_plotly_js_out_and_both_pages_save_svg():
    fig = go.Figure(go.Heatmap(z=[[0.1, 0.9], [0.5, 0.5]]))
    small, offline = figure_html(fig, "head", "small"), figure_html(fig, "head", "offline")
    assert len(small.encode()) < 50_000 and "cdn.plot.ly" in small  # each download embedded ~4.8 MB of plotly.js
    assert len(offline.encode()) > plotlyjs_bytes() and "cdn.plot.ly/plotly" not in offline
    for page in (small, offline):
        assert "format: 'svg'" in page and "format: 'png'" in page  # a camera button for each
    labels = [label for _, label, _ in html_kinds()]
    assert f"+{plotlyjs_bytes() / 1e6:.1f} MB" in labels[1] and "internet" in labels[0]  # honest labels
    with pytest.raises(ValueError, match="unknown HTML kind"):
        figure_html(fig, "head", "zip")


def test_what_streamlit_sends_is_the_figure_s_own_dict():
    """ui.plot hands st.plotly_chart `shipped(fig)`: its to_dict() must be fig.to_dict() (numpy arrays as base64,
    template and all), and building it must leave the figure as it was."""
    import numpy as np

    from viz.app.exports import shipped
    from viz.figures.attention import head_heatmap, model_view

    rng = np.random.default_rng(1)
    A = rng.random((2, 3, 5, 5)).astype(np.float32)
    validated = go.Figure(go.Heatmap(z=A[0, 0]), layout=dict(title="t", xaxis=dict(title="x")))
    for fig in (head_heatmap(A[0, 0], list("abcde"), list("abcde"), "t"), model_view(A, selected=(0, 1)), validated):
        before = fig.to_dict()
        assert shipped(fig).to_dict() == before
        arrays = [t.z if t.type == "heatmap" else t.customdata for t in fig.data if t.type != "image"]
        assert arrays and all(isinstance(a, np.ndarray) for a in arrays)  # the figure's own arrays untouched
