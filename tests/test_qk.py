"""Queries and keys in one space (viz.analysis.qk, viz.atlas.qk): the normalisation changes no attention row, the
exported vectors reproduce the captured attention, PCA agrees with scikit-learn's, t-SNE reports progress and stops."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from viz.analysis.qk import ProjectionCancelled, normalise, pca, tsne
from viz.atlas.qk import CLASSES, gather_qk, head_points, overview
from viz.core.capture import capture

SENTENCES = ["The cat sat on the mat because it was tired.", "Unbelievably, the committee postponed it again!",
             "Is this the way to the station?"]


def softmax_rows(q: np.ndarray, k: np.ndarray, scaling: float, causal: bool) -> np.ndarray:
    s = (q.astype(np.float64) @ k.astype(np.float64).T) * scaling
    if causal:
        s = np.where(np.tril(np.ones_like(s, dtype=bool)), s, -np.inf)
    s = s - s.max(1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("name,layer", [("minilm", 2), ("tiny-llama", 1)])
def test_normalisation_keeps_every_row_and_the_vectors_reproduce_the_captured_attention(load, name, layer):
    bundle = load(name)
    causal = bundle.kind == "decoder"
    data = gather_qk(bundle, SENTENCES, [layer], batch_size=2)
    assert data.n_sentences == 3 and not data.cancelled
    scaling = data.scaling[0]
    for head in range(data.n_heads):
        pts = head_points(data, layer, head)
        q, k = data.head(layer, head)
        n = len(q)
        nq, nk = pts.norm.q, pts.norm.k
        # what the normalisation promises: key centroid on the query centroid, equal mean norms
        np.testing.assert_allclose(nk.mean(0), nq.mean(0), atol=1e-4 * np.abs(nq).max())
        assert np.linalg.norm(nq, axis=1).mean() == pytest.approx(np.linalg.norm(nk, axis=1).mean(), rel=1e-5)
        for s, text in enumerate(SENTENCES):
            rows = data.sentence == s
            before = softmax_rows(q[rows], k[rows], scaling, causal)
            after = softmax_rows(nq[rows], nk[rows], scaling, causal)
            assert np.abs(after - before).max() <= 1e-6
            captured = capture(bundle, text).attentions[data.stack][layer, head]  # one sentence, no padding
            assert np.abs(after - captured).max() <= 1e-5
        assert pts.coords.shape == (2 * n, 2) and pts.kind.tolist() == [0] * n + [1] * n


def test_pca_agrees_with_scikit_learn():
    x = np.random.default_rng(0).normal(size=(200, 8)) * np.arange(1, 9)
    got, explained = pca(x)
    ref = PCA(n_components=2).fit(x)
    want = ref.transform(x)
    np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-4)
    for i in range(2):  # same axes up to sign
        assert abs(np.corrcoef(got[:, i], want[:, i])[0, 1]) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(explained, ref.explained_variance_ratio_, rtol=1e-6)


def test_normalise_by_hand():
    q = np.array([[1.0, 0.0], [3.0, 1.0], [2.0, -1.0]])
    k = np.array([[0.0, 2.0], [0.0, 6.0], [1.0, 4.0]])
    n = normalise(q, k)
    a = n.scale
    np.testing.assert_allclose(n.q, q * a, rtol=1e-6)
    np.testing.assert_allclose(n.k, k / a + n.offset, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(n.k.mean(0), n.q.mean(0), atol=1e-6)  # centroids together
    assert np.linalg.norm(n.q, axis=1).mean() == pytest.approx(np.linalg.norm(n.k, axis=1).mean(), rel=1e-6)
    np.testing.assert_allclose(n.q @ n.k.T - q @ k.T, (q @ (a * n.offset))[:, None] * np.ones((1, 3)), atol=1e-5)


def test_tsne_reports_progress_and_can_be_stopped():
    x = np.random.default_rng(1).normal(size=(60, 4)).astype(np.float32)
    seen = []
    out = tsne(x, max_iter=250, progress=lambda i, n: seen.append((i, n)))
    assert out.shape == (60, 2) and np.isfinite(out).all()
    assert seen and seen[-1] == (250, 250) and seen == sorted(seen)
    with pytest.raises(ProjectionCancelled):
        tsne(x, max_iter=250, should_stop=lambda: True)
    from sklearn.manifold import TSNE  # outside a tsne() call the wrapped descent behaves as scikit-learn's own
    ref = TSNE(n_components=2, perplexity=19.666666666666668, init="pca", random_state=0, max_iter=250).fit_transform(x)
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_token_classes_and_positions(load):
    bundle = load("minilm")
    data = gather_qk(bundle, ["Unbelievably, the cat."], [0])
    got = [(t, CLASSES[c]) for t, c in zip(data.tokens, data.token_class)]
    assert got == [("[CLS]", "special"), ("un", "word"), ("##bel", "word piece"), ("##ie", "word piece"),
                   ("##va", "word piece"), ("##bly", "word piece"), (",", "punctuation"), ("the", "word"),
                   ("cat", "word"), (".", "punctuation"), ("[SEP]", "special")]
    assert data.position.tolist() == list(range(11))


def test_overview_is_every_heads_pca_on_one_sample(load):
    bundle = load("tiny-llama")
    data = gather_qk(bundle, SENTENCES, [0, 1])
    coords, kind = overview(data, max_points=10)
    assert coords.shape == (2, 4, 20, 2) and kind.tolist() == [0] * 10 + [1] * 10
    pick = np.sort(np.random.default_rng(0).choice(len(data.tokens), size=10, replace=False))
    full = head_points(data, 1, 3).coords
    N = len(data.tokens)
    np.testing.assert_allclose(coords[1, 3], np.concatenate([full[:N][pick], full[N:][pick]]), atol=1e-5)


# ----------------------------------------------------------------------------- the CLI
def run_cli(*args):
    import subprocess
    import sys

    from conftest import ROOT

    return subprocess.run([sys.executable, "-m", "viz", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name,layer,head", [("minilm", 1, 5), ("tiny-llama", 1, 3)])
def test_cli_vectors_reproduce_the_captured_attention(load, tmp_path, name, layer, head):
    import pandas as pd

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    out = tmp_path / "points.csv"
    r = run_cli("qk", "--model", name, "--layer", str(layer), "--head", str(head), "--corpus", str(corpus),
                "--vectors", "--out", str(out))
    assert r.returncode == 0, r.stderr
    scaling = float(r.stderr.split("scaling ")[1].split(",")[0])
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns[:6]) == ["kind", "sentence", "position", "token", "x", "y"]
    dims = [c for c in df.columns if c.startswith("d")]
    bundle = load(name)
    for s, text in enumerate(SENTENCES):
        cap = capture(bundle, text)
        q = df[(df.kind == "query") & (df.sentence == s)].sort_values("position")
        k = df[(df.kind == "key") & (df.sentence == s)].sort_values("position")
        assert q.token.tolist() == k.token.tolist() == cap.tokens
        got = softmax_rows(q[dims].to_numpy(), k[dims].to_numpy(), scaling, bundle.kind == "decoder")
        assert np.abs(got - cap.attentions[next(iter(cap.attentions))][layer, head]).max() <= 1e-5


def test_cli_qk_help_and_errors(tmp_path):
    r = run_cli("qk", "--help")
    for key in ("kind", "sentence", "position", "token", "x, y", "d0", "scaling", "softmax"):
        assert key in r.stdout
    r = run_cli("qk", "--model", "tiny-bert", "--layer", "7", "--head", "0", "--out", str(tmp_path / "p.csv"))
    assert r.returncode == 2 and "has 2 layers" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("qk", "--model", "tiny-bert", "--layer", "0", "--head", "0", "--out", str(tmp_path / "no" / "p.csv"))
    assert r.returncode == 2 and "does not exist" in r.stderr
