"""Heads matched across models (viz.analysis.match, viz.atlas.match): similarity = 1 - mean JSD (bits) of attention
rows, checked against scipy's Jensen-Shannon distance row by row, the assignment against brute force, and the whole
matching on models whose right answer is known (a model against itself, a copy with its heads permuted)."""

from __future__ import annotations

import copy
import itertools
import re

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from viz.analysis.match import assign, follow_heads, head_similarity
from viz.atlas.match import MatchError, match_models
from viz.core.capture import capture
from viz.core.models import ModelBundle

SENTENCES = ["The cat sat on the mat because it was tired.", "Unbelievably, the committee postponed it again!",
             "Trains leave every ten minutes, except on Sundays."]


def reference_similarity(rows_a: list[np.ndarray], rows_b: list[np.ndarray]) -> np.ndarray:
    """rows_x: per sentence [heads, q, k] -> [NA, NB] 1 - mean over every row of JSD (scipy, base 2), by loops."""
    NA, NB = rows_a[0].shape[0], rows_b[0].shape[0]
    out = np.zeros((NA, NB))
    n = sum(a.shape[1] for a in rows_a)
    for i in range(NA):
        for j in range(NB):
            total = 0.0
            for a, b in zip(rows_a, rows_b):
                for r in range(a.shape[1]):
                    total += jensenshannon(a[i, r].astype(np.float64), b[j, r].astype(np.float64), base=2) ** 2
            out[i, j] = 1 - total / n
    return out


def test_similarity_is_one_minus_mean_jsd_in_bits():
    rng = np.random.default_rng(0)
    a = rng.dirichlet(np.ones(5) * 0.3, size=(3, 4))  # [heads, rows, keys]
    b = rng.dirichlet(np.ones(5) * 0.3, size=(2, 4))
    a[0, 1] = [1, 0, 0, 0, 0]  # a one-hot row (zeros: 0 log 0 = 0) and a causal-looking row
    b[1, 2] = [0.5, 0.5, 0, 0, 0]
    got = head_similarity(torch.tensor(a.reshape(3, -1), dtype=torch.float32),
                          torch.tensor(b.reshape(2, -1), dtype=torch.float32), rows=4)
    np.testing.assert_allclose(got, reference_similarity([a], [b]), atol=1e-6)
    # disjoint supports: JSD = 1 bit, similarity 0; identical rows: similarity 1
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(head_similarity(p, p.flip(1), rows=1), [[0, 1], [1, 0]], atol=1e-6)


def brute_force(sim: np.ndarray) -> float:
    """The best summed similarity over every one-to-one map from the smaller side into the larger."""
    NA, NB = sim.shape
    if NA <= NB:
        return max(sum(sim[i, j] for i, j in enumerate(p)) for p in itertools.permutations(range(NB), NA))
    return max(sum(sim[i, j] for j, i in enumerate(p)) for p in itertools.permutations(range(NA), NB))


def test_assignment_maximises_the_summed_similarity():
    rng = np.random.default_rng(1)
    for shape in ((5, 5), (4, 6), (6, 3)):
        sim = rng.random(shape)
        pairs = assign(sim)
        assert len(pairs) == min(shape)
        assert sum(p.similarity for p in pairs) == pytest.approx(brute_force(sim))
        assert len({p.a for p in pairs}) == len({p.b for p in pairs}) == len(pairs)
        assert [p.a for p in pairs] == sorted(p.a for p in pairs)


def test_minilm_against_itself_pairs_every_head_with_itself(load):
    m = load("minilm")
    for level in ("tokens", "words"):
        res = match_models(m, m, SENTENCES, level=level)
        assert res.level == level and res.n_sentences == 3
        np.testing.assert_allclose(np.diag(res.similarity), 1.0, atol=1e-6)
        assert [(p.a, p.b) for p in res.pairs] == [(i, i) for i in range(72)]
        assert all(p.similarity == pytest.approx(1.0, abs=1e-6) for p in res.pairs)


def permuted_copy(bundle: ModelBundle, perms: list[list[int]], kv_perms: list[list[int]] | None = None):
    """A copy whose heads of layer l are reordered by perms[l] (new head n = old head perms[l][n]): q/k/v rows and the
    output projection's columns move together, so the function is unchanged. GQA: kv_perms[l] reorders the kv heads
    (a query head's new group must hold its old kv head)."""
    model = copy.deepcopy(bundle.model)
    cfg = model.config
    H = cfg.num_attention_heads
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // H

    def rows(lin, order):
        idx = torch.cat([torch.arange(o * d, (o + 1) * d) for o in order])
        lin.weight.data = lin.weight.data[idx].clone()
        if lin.bias is not None:
            lin.bias.data = lin.bias.data[idx].clone()
        return idx

    for layer, order in enumerate(perms):
        if cfg.model_type == "bert":
            att = model.encoder.layer[layer].attention
            for lin in (att.self.query, att.self.key, att.self.value):
                idx = rows(lin, order)
            att.output.dense.weight.data = att.output.dense.weight.data[:, idx].clone()
        else:  # llama
            att = model.model.layers[layer].self_attn
            idx = rows(att.q_proj, order)
            rows(att.k_proj, kv_perms[layer])
            rows(att.v_proj, kv_perms[layer])
            att.o_proj.weight.data = att.o_proj.weight.data[:, idx].clone()
    return ModelBundle(name=bundle.name + "-permuted", model=model, tokenizer=bundle.tokenizer, arch=bundle.arch)


def test_a_copy_with_permuted_heads_is_matched_back_to_the_permutation(load):
    m = load("minilm")
    rng = np.random.default_rng(2)
    perms = [rng.permutation(12).tolist() for _ in range(6)]
    twin = permuted_copy(m, perms)
    text = "The keys to the cabinet are on the table."
    same = capture(m, text).attentions["encoder"]
    moved = capture(twin, text).attentions["encoder"]
    np.testing.assert_allclose(moved, np.stack([same[l][perms[l]] for l in range(6)]), atol=1e-5)  # same function
    res = match_models(m, twin, SENTENCES)
    # head n of the copy is head perms[l][n] of the original: A's head perms[l][n] must be paired with B's head n
    want = sorted((l * 12 + perms[l][n], l * 12 + n) for l in range(6) for n in range(12))
    assert [(p.a, p.b) for p in res.pairs] == want
    assert min(p.similarity for p in res.pairs) > 1 - 1e-5


def test_a_gqa_rope_model_with_permuted_heads_is_matched_back(load):
    m = load("atlas-lm")  # Llama layout: RoPE, 8 query heads over 4 key/value heads
    kv = [[2, 0, 3, 1], [1, 0, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]]
    perms = [[2 * k + s for k in kvp for s in ((1, 0) if (i + k) % 2 else (0, 1))] for i, kvp in enumerate(kv)]
    twin = permuted_copy(m, perms, kv)
    res = match_models(m, twin, SENTENCES)
    want = sorted((l * 8 + perms[l][n], l * 8 + n) for l in range(4) for n in range(8))
    assert res.level == "tokens" and [(p.a, p.b) for p in res.pairs] == want


def test_corpus_similarity_equals_a_per_sentence_reference(load):
    """Batched, padded, packed (the job) = one capture per sentence and scipy's JSD row by row."""
    a, b = load("minilm"), load("minilm-mlm")
    res = match_models(a, b, SENTENCES, batch_size=2)
    def rows(bundle, s):
        A = capture(bundle, s).attentions["encoder"]
        return A.reshape(-1, *A.shape[2:])

    ra, rb = [rows(a, s) for s in SENTENCES], [rows(b, s) for s in SENTENCES]
    sub = [0, 13, 40, 71]  # the reference loops are slow in Python: a few heads of each
    want = reference_similarity([x[sub] for x in ra], [x[sub] for x in rb])
    np.testing.assert_allclose(res.similarity[np.ix_(sub, sub)], want, atol=1e-5)
    assert res.n_rows == sum(x.shape[1] for x in ra)


def words_reference(cap, sentence: str, n_words: int) -> np.ndarray:
    """Word-level rows by explicit loops: each non-special token -> the whitespace word holding its first character
    (found by scanning the text), special keys dropped and rows renormalised, key pieces summed, query pieces
    averaged."""
    A = cap.attentions[next(iter(cap.attentions))]
    A = A.reshape(-1, *A.shape[2:])
    tok = cap._tokenizer
    enc = tok(sentence, return_offsets_mapping=True)
    bounds = [(m.start(), m.end()) for m in re.finditer(r"\S+", sentence)]
    owner = []
    for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
        w = -1
        if i not in set(tok.all_special_ids) - {tok.unk_token_id}:
            for c in range(s, e):
                if not sentence[c].isspace():
                    w = next(k for k, (ws, we) in enumerate(bounds) if ws <= c < we)
                    break
        owner.append(w if w < n_words else -1)
    out = np.zeros((A.shape[0], n_words, n_words))
    for h in range(A.shape[0]):
        for wq in range(n_words):
            qs = [t for t, w in enumerate(owner) if w == wq]
            for t in qs:
                kept = sum(A[h, t, k] for k, w in enumerate(owner) if w >= 0)
                for k, w in enumerate(owner):
                    if w >= 0:
                        out[h, wq, w] += A[h, t, k] / kept / len(qs)
    return out


def test_word_level_across_tokenizers_equals_explicit_loops(load):
    a, b = load("atlas-lm"), load("tiny-llama")  # a byte-level BPE with a BOS, and WordPiece with [CLS]/[SEP]
    sents = SENTENCES[:2]
    res = match_models(a, b, sents)
    assert res.level == "words" and res.similarity.shape == (32, 8)
    rows_a, rows_b = [], []
    for s in sents:
        ca, cb = capture(a, s), capture(b, s)
        ca._tokenizer, cb._tokenizer = a.tokenizer, b.tokenizer
        rows_a.append(words_reference(ca, s, len(s.split())))
        rows_b.append(words_reference(cb, s, len(s.split())))
    np.testing.assert_allclose(res.similarity, reference_similarity(rows_a, rows_b), atol=1e-5)
    assert res.n_rows == sum(len(s.split()) for s in sents)
    with pytest.raises(MatchError, match="different tokens"):
        match_models(a, b, sents, level="tokens")


def test_a_run_can_be_cancelled_and_says_so(load):
    a = load("minilm")
    calls = []
    res = match_models(a, a, SENTENCES * 4, batch_size=2, should_stop=lambda: len(calls) > 0,
                       progress=lambda d, t: calls.append((d, t)))
    assert res.cancelled and res.n_sentences == 2 and calls == [(2, 12)]


def test_studio_heads_followed_back_through_snapshots():
    rng = np.random.default_rng(3)
    final = rng.dirichlet(np.ones(6) * 0.2, size=(2, 3, 6))  # [L, H, T, T]
    perm = [4, 0, 5, 1, 3, 2]  # step 0's head n is final head perm[n]
    early = final.reshape(6, 6, 6)[perm].reshape(2, 3, 6, 6)
    lin = follow_heads(np.stack([early, final]).astype(np.float32), np.array([0, 100]))
    assert lin.matched[1].tolist() == list(range(6))
    assert lin.matched[0].tolist() == [perm.index(n) for n in range(6)]  # final head n was step-0 head perm^-1(n)
    np.testing.assert_allclose(lin.similarity, 1.0, atol=1e-6)


# ----------------------------------------------------------------------------- the CLI
def run_cli(*args):
    import subprocess
    import sys

    from conftest import ROOT

    return subprocess.run([sys.executable, "-m", "viz", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_cli_match_json_is_the_library_result(load, tmp_path):
    import json

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(SENTENCES + ["An extra line that --sentences leaves out."]) + "\n")
    r = run_cli("match", "--model", "minilm", "--model-b", "minilm-mlm", "--corpus", str(corpus), "--sentences", "3",
                "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    res = match_models(load("minilm"), load("minilm-mlm"), SENTENCES)
    assert got["a"] == {"model": "minilm", "layers": 6, "heads": 12} and got["b"]["model"] == "minilm-mlm"
    assert got["level"] == "tokens" and got["sentences"] == 3 and got["rows"] == res.n_rows
    np.testing.assert_allclose(got["similarity"], res.similarity, atol=2e-6)  # rows: A heads, row-major by layer
    assert [(tuple(p["a"]), tuple(p["b"])) for p in got["pairs"]] == \
        [((p.a // 12, p.a % 12), (p.b // 12, p.b % 12)) for p in res.pairs]


def test_cli_match_help_and_errors(tmp_path):
    r = run_cli("match", "--help")
    for key in ("similarity", "pairs", "level", "row-major by layer then head", "Hungarian"):
        assert key in r.stdout
    r = run_cli("match", "--model", "atlas-lm", "--model-b", "minilm", "--text", "Hello there.", "--level", "tokens")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "word level" in r.stderr
    r = run_cli("match", "--model-b", "minilm", "--corpus", str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
