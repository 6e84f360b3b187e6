"""Head scores for decoders (viz.tasks.heads, `python -m viz heads`).

The acceptance case is a GPT-2 whose weights are set by hand so that layer 0 head 0 is an exact
previous-token head and layer 1 head 0 an exact induction head (Olsson et al. 2022, fig. 1): the scores must
find exactly those heads, near 1, and leave every other head low.
"""
import json

import numpy as np
import pytest
import torch

from viz.tasks.heads import HeadScoreError, head_scores, pattern_scores, repeated_sequences

V, POS, D, HEADS = 32, 64, 256, 4  # vocab, positions, d_model, heads (head_dim 64 = one dim per position)
T0, P0, R0 = 0, 32, 96  # residual slots: token one-hot, position one-hot, previous token one-hot


def _identity_ln(ln, ones: int, eps: float) -> None:
    """LayerNorm that returns its input for residual vectors holding exactly `ones` ones (all ours do)."""
    m = ones / D
    std = (ones / D - m * m + eps) ** 0.5
    ln.weight.data.fill_(std)
    ln.bias.data.fill_(m)


def build_induction_gpt2(folder, reach: int | None = None, copy: float = 0.0):
    """Save a 2-layer, 4-head GPT-2 with a hand-built induction circuit and a word-level tokenizer to `folder`.

    Layer 0 head 0: query = position i, key = position j + 1 -> attends to i - 1, copies that token into
    the R slot. Layer 1 head 0: query = own token, key = the R slot (the token before the key) -> attends to
    the position right after an earlier occurrence of its own token. Every other head and every MLP is zero.

    reach: queries at positions >= reach of layer 1 head 0 attend to position 0 instead (twice the margin of a
    token match), like a model that learned to copy only within the positions it was trained on. copy: layer 1
    head 0 also writes the token it attends to, times `copy`, into the token slot the unembedding reads, so the
    model predicts the copied token (its loss on a repeat falls).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    cfg = GPT2Config(vocab_size=V, n_positions=POS, n_embd=D, n_layer=2, n_head=HEADS, bos_token_id=0,
                     eos_token_id=0, pad_token_id=2, layer_norm_epsilon=1e-5, tie_word_embeddings=False)
    model = GPT2LMHeadModel(cfg).eval()
    beta = 8.0 * 25  # scores are scaled by 1/sqrt(64): a 25-nat margin, hard attention in practice
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        tr = model.transformer
        tr.wte.weight[torch.arange(V), T0 + torch.arange(V)] = 1.0
        tr.wpe.weight[torch.arange(POS), P0 + torch.arange(POS)] = 1.0
        l0, l1 = tr.h
        _identity_ln(l0.ln_1, 2, cfg.layer_norm_epsilon)
        _identity_ln(l1.ln_1, 3, cfg.layer_norm_epsilon)
        w0 = l0.attn.c_attn.weight  # [D, 3D]: q | k | v, head h at columns h*64..h*64+63 of each
        for p in range(POS):
            w0[P0 + p, p] = beta  # query of position p: dim p
            if p + 1 < POS:
                w0[P0 + p, D + p + 1] = 1.0  # key of position p: dim p + 1
        for t in range(V):
            w0[T0 + t, 2 * D + t] = 1.0  # value: the token
            l0.attn.c_proj.weight[t, R0 + t] = 1.0  # written to the R slot
        w1 = l1.attn.c_attn.weight
        for t in range(V):
            w1[T0 + t, t] = beta  # query: own token
            w1[R0 + t, D + t] = 1.0  # key: the token before the key position
            if copy:
                w1[T0 + t, 2 * D + t] = 1.0  # value: the key's own token (the one after the earlier occurrence)
                l1.attn.c_proj.weight[t, T0 + t] = copy
        for p in range(reach or POS, POS):
            w1[P0 + p, 40] = 2 * beta  # a query this late ...
        w1[P0 + 0, D + 40] = 1.0 if reach else 0.0  # ... matches position 0's key, beating any token match
        for ln in (tr.ln_f, l0.ln_2, l1.ln_2):
            ln.weight.fill_(1.0)
        model.lm_head.weight.copy_(tr.wte.weight)
    model.save_pretrained(folder)
    vocab = {"<bos>": 0, "<unk>": 1, "<pad>": 2} | {f"w{i}": i for i in range(3, V)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", unk_token="<unk>", pad_token="<pad>",
                            eos_token="<bos>").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def induction_dir(tmp_path_factory):
    return build_induction_gpt2(tmp_path_factory.mktemp("models") / "induction-gpt2")


def test_hand_built_induction_head_is_found_by_the_cli(induction_dir, monkeypatch, capsys):
    from viz.cli.main import main

    monkeypatch.setenv("VIZ_MODEL_ROOTS", str(induction_dir.parent))
    assert main(["heads", "--model", str(induction_dir), "--json", "--length", "20", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"layers", "heads", "induction", "previous", "duplicate"} <= set(out)
    assert (out["layers"], out["heads"]) == (2, HEADS)
    ind, prev = np.array(out["induction"]), np.array(out["previous"])
    assert ind.shape == prev.shape == (2, HEADS)
    assert ind[1, 0] > 0.99, ind
    others = np.delete(ind.ravel(), HEADS)  # every head but layer 1 head 0
    assert others.max() < 0.1, ind
    assert prev[0, 0] > 0.99 and np.delete(prev.ravel(), 0).max() < 0.2, prev
    # the induction head does not attend to the earlier occurrence itself
    assert np.array(out["duplicate"])[1, 0] < 0.01


def test_scores_repeat_with_a_seed_and_change_without(induction_dir, monkeypatch):
    from viz.core.models import load_model

    monkeypatch.setenv("VIZ_MODEL_ROOTS", str(induction_dir.parent))
    bundle = load_model(str(induction_dir))
    a = head_scores(bundle, seed=1, length=10, sequences=3, sink_sentences=["w3 w4 w5", "w6 w7"])
    b = head_scores(bundle, seed=1, length=10, sequences=3, sink_sentences=["w3 w4 w5", "w6 w7"])
    assert np.array_equal(a.induction, b.induction) and a.loss_second == b.loss_second
    assert a.best("induction")[:2] == (1, 0) and a.best("previous")[:2] == (0, 0)
    pool = torch.arange(3, V)
    assert not torch.equal(repeated_sequences(pool, 3, 10, 1, [0]), repeated_sequences(pool, 3, 10, 2, [0]))


def test_pattern_scores_on_a_hand_computed_case():
    """[BOS] a b c a b c (T = 7). Rows 4, 5, 6 are the second copy: induction targets 2, 3, 4; duplicate 1, 2, 3;
    previous-token counts rows 1..6."""
    attn = torch.zeros(1, 1, 4, 7, 7)  # [n, layer, head, T, T]
    for i in range(7):
        attn[0, 0, 0, i, max(0, i - 1)] = 1.0  # head 0: previous token (row 0 on itself)
        attn[0, 0, 2, i, 0] = 1.0  # head 2: sink
        attn[0, 0, 1, i, i - 2 if i >= 4 else 0] = 1.0  # head 1: induction in the second copy, else sink
        attn[0, 0, 3, i, i - 3 if i >= 4 else 0] = 1.0  # head 3: duplicate token
    s = pattern_scores(attn, length=3, offset=1)
    assert s["previous"][0].tolist() == pytest.approx([1.0, 1 / 6, 1 / 6, 1 / 6])  # row 1 -> 0 is previous too
    assert s["induction"][0].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert s["duplicate"][0].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_repeated_sequences_are_distinct_tokens_repeated_once():
    ids = repeated_sequences(torch.arange(5, 40), n=4, length=12, seed=0, prefix=[1])
    assert ids.shape == (4, 25)
    assert (ids[:, 0] == 1).all() and torch.equal(ids[:, 1:13], ids[:, 13:])
    assert all(len(set(row[1:13].tolist())) == 12 for row in ids)
    with pytest.raises(HeadScoreError, match="shorter --length"):
        repeated_sequences(torch.arange(5, 10), n=1, length=12, seed=0, prefix=[])


@pytest.mark.parametrize("argv, message", [
    (["--length", "1"], "argument --length: must be at least 2 (got 1)"),
    (["--length", "ten"], "argument --length: must be an integer (got 'ten')"),
    (["--seed", "-1"], "argument --seed: must be at least 0 (got -1)"),
    (["--sequences", "0"], "argument --sequences: must be at least 1 (got 0)"),
    (["--length", "500"], "Use --length 127 or less"),
    (["--lengths", "10,x"], "argument --lengths: must be integers separated by commas (got '10,x')"),
    (["--lengths", "1,10"], "argument --lengths: every length must be at least 2 (got '1,10')"),
])
def test_cli_rejects_bad_numbers_in_one_line(argv, message):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "viz", "heads", "--model", "tiny-llama", *argv],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_encoders_are_refused_with_advice(capsys):
    from viz.cli.main import main

    assert main(["heads", "--model", "tiny-bert"]) == 2
    assert "need a causal decoder" in capsys.readouterr().err


def test_head_atlas_page_shows_the_hand_built_induction_head(induction_dir, monkeypatch):
    """The Head atlas's decoder section, before any corpus run: four score grids and the best induction head's
    pattern; an encoder gets no such section."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VIZ_MODEL_ROOTS", str(induction_dir.parent))
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    at = AppTest.from_file(app, default_timeout=120)
    at.switch_page("pages/atlas.py")
    from viz.app.ui import OTHER

    at.session_state["model_choice"] = OTHER  # "Other…": a folder typed in the sidebar
    at.session_state["model_other"] = str(induction_dir)
    at.session_state["atlas_heads_length"] = 20
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("At 20 random tokens per copy: best induction head L1 H0 (1.00)" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 5  # induction, previous, duplicate, first token, one head's pattern
    at.session_state["atlas_heads_pick"] = (0, 0)  # what a click on a grid cell stores
    at.run()
    assert not at.exception and len(at.get("plotly_chart")) == 5
    at = AppTest.from_file(app, default_timeout=120)
    at.switch_page("pages/atlas.py")
    at.session_state["model_choice"] = "tiny-bert"
    at.run()
    assert not at.exception and not any("best induction head" in c.value for c in at.caption)


@pytest.fixture(scope="module")
def short_copier_dir(tmp_path_factory):
    """An induction head that only works for queries before position 30 and copies: 1 + 2 x 15 tokens (31) leave
    one late row, 1 + 2 x 25 (51) leave 4 of 25 rows."""
    return build_induction_gpt2(tmp_path_factory.mktemp("models") / "short-copier", reach=30, copy=10.0)


def test_a_head_that_copies_only_short_repeats_is_reported_by_the_length_sweep(short_copier_dir, monkeypatch):
    """The issue's case: a studio model with a 0.93 induction head at its training length read 0.01 at the one
    default length (50) and the Head atlas said it does not copy. The default sweep reports its best length."""
    from viz.tasks.heads import DEFAULT_LENGTHS, sweep_lengths
    from viz.core.models import load_model

    monkeypatch.setenv("VIZ_MODEL_ROOTS", str(short_copier_dir.parent))
    bundle = load_model(str(short_copier_dir))
    sink = ["w3 w4 w5"]
    # what the circuit does by hand: row i of the second copy (i = L+1 .. 2L) is an induction row iff i < 30
    for L, want in ((15, 14 / 15), (25, 4 / 25)):
        fixed = head_scores(bundle, seed=2, length=L, sequences=3, sink_sentences=sink)
        assert fixed.lengths == (L,) and fixed.length == L
        assert fixed.induction[1, 0] == pytest.approx(want, abs=0.01)
    late = head_scores(bundle, seed=2, length=25, sequences=3, sink_sentences=sink)
    assert late.loss_second > late.loss_first - 1.0  # at one long length it reads as "does not copy"
    # 64 positions and 29 ordinary tokens: 50 per copy fits neither, so the sweep keeps 10 and 25
    assert DEFAULT_LENGTHS == (10, 25, 50) and sweep_lengths(bundle) == (10, 25)
    res = head_scores(bundle, seed=2, sequences=3, sink_sentences=sink)
    assert res.lengths == (10, 25) and res.length == 10
    assert res.best("induction")[:2] == (1, 0) and res.induction[1, 0] > 0.99
    assert res.induction_length[1, 0] == 10
    assert res.loss_second < res.loss_first - 3.0  # it copies: the repeat is far easier at the reported length
    np.testing.assert_array_equal(res.by_length[25]["induction"], late.induction)  # the same seed, the same scores
    np.testing.assert_array_equal(res.induction, np.maximum(res.by_length[10]["induction"], late.induction))
    js = res.to_json()
    assert js["lengths"] == [10, 25] and js["length"] == 10 and js["induction_length"][1][0] == 10
    assert js["by_length"]["25"]["induction"][1][0] == pytest.approx(4 / 25, abs=0.01)


def test_cli_keeps_length_50_by_default_and_sweeps_on_request(short_copier_dir, monkeypatch, capsys):
    """The contract: without a length flag the scores are the single length 50 they always were (or the longest
    a model with fewer positions takes, where 50 used to be an error); --lengths sweeps; --length picks one."""
    from viz.cli.main import main

    monkeypatch.setenv("VIZ_MODEL_ROOTS", str(short_copier_dir.parent))
    assert main(["heads", "--model", str(short_copier_dir), "--json", "--seed", "2", "--sequences", "2"]) == 0
    plain = json.loads(capsys.readouterr().out)
    # 1 + 2 x 50 > 64 positions: the longest that fits (positions and the small vocabulary allow 29)
    assert 2 <= plain["length"] < 50 and plain["lengths"] == [plain["length"]]
    assert main(["heads", "--model", str(short_copier_dir), "--json", "--length", "50"]) == 2  # asked: still an error
    capsys.readouterr()
    assert main(["heads", "--model", str(short_copier_dir), "--json", "--seed", "2", "--sequences", "2",
                 "--lengths", "10,25,50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lengths"] == [10, 25] and out["induction"][1][0] > 0.99
    assert set(out["by_length"]) == {"10", "25"}
    assert main(["heads", "--model", str(short_copier_dir), "--json", "--seed", "2", "--sequences", "2",
                 "--length", "25"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["lengths"] == [25] and one["length"] == 25 and one["induction"][1][0] == pytest.approx(0.16, abs=0.01)
    assert main(["heads", "--model", str(short_copier_dir), "--json", "--seed", "2", "--sequences", "2",
                 "--lengths", "15,20"]) == 0
    some = json.loads(capsys.readouterr().out)
    assert some["lengths"] == [15, 20] and some["length"] == 15  # 14/15 at 15, 9/20 at 20
    assert some["by_length"]["20"]["induction"][1][0] == pytest.approx(9 / 20, abs=0.01)
