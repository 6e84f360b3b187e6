"""The corpus job on tiny random models and MiniLM: padding and batching never change the numbers."""

import numpy as np
import pytest

from viz.analysis.head_stats import STATS
from viz.atlas.chunks import run_atlas
from viz.atlas.core import AtlasCancelled, TokenClasses, frame, is_punct_token
from viz.core.capture import capture, hook_count

SENTENCES = ["The cat sat on the mat, purring.", "Hi!", "Unbelievably, the tokenizer splits antidisestablishmentarianism.",
             "Yes; no: maybe?", "We walked along the river and the water was cold.", "Is this the way?"]


@pytest.fixture(scope="module")
def minilm(load):
    return load("minilm")  # conftest's session-wide bundle cache


def test_batching_and_padding_do_not_change_statistics(minilm):
    one = run_atlas(minilm, SENTENCES, batch_size=1, words=True)
    many = run_atlas(minilm, SENTENCES, batch_size=4, chunk=3, words=True)
    for s in STATS:
        assert np.allclose(one.stats[s], many.stats[s], atol=1e-5), s
        assert np.allclose(one.word_stats[s], many.word_stats[s], atol=1e-5), s
    assert one.n_tokens == many.n_tokens and one.n_sentences == len(SENTENCES)


def test_matches_single_sentence_capture(minilm):
    """The streamed statistic of one sentence == the same statistic computed by hand from capture()."""
    text = SENTENCES[0]
    res = run_atlas(minilm, [text])
    cap = capture(minilm, text)
    A = cap.attentions["encoder"]  # [L, H, T, T]
    rows = ~cap.special
    prev = np.mean([A[:, :, i, i - 1] for i in np.where(rows)[0]], axis=0)
    ent = np.mean([-(A[:, :, i] * np.log(np.clip(A[:, :, i], 1e-12, None))).sum(-1) for i in np.where(rows)[0]],
                  axis=0)
    assert np.allclose(res.stats["prev"], prev, atol=1e-5)
    assert np.allclose(res.stats["entropy"], ent, atol=1e-4)
    assert res.roles()[0, 2] == "previous-token"  # MiniLM layer 0 head 2 looks at the previous token


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-t5", "tiny-gpt2", "tiny-bart"])
def test_families(name, load):
    b = load(name)
    res = run_atlas(b, SENTENCES, batch_size=4, words=True)
    df = frame(res)
    assert list(df.columns[:2 + len(STATS)]) == ["layer", "head", *STATS] and len(df) == res.n_layers * res.n_heads
    assert df[list(STATS)].notna().all().all()
    shares = df[["cls", "sep", "punct", "self", "prev", "next", "first"]]
    assert ((shares >= -1e-6) & (shares <= 1 + 1e-6)).all().all()
    if b.kind == "decoder":
        assert np.allclose(res.stats["next"], 0, atol=1e-6)  # causal: never attends ahead


def test_cancel_progress_and_truncation(minilm):
    seen = []
    res = run_atlas(minilm, SENTENCES, batch_size=2, progress=lambda d, t: seen.append((d, t)),
                    should_stop=lambda: len(seen) >= 1)
    assert res.cancelled and res.n_sentences == 2 and seen == [(2, 6)]
    with pytest.raises(AtlasCancelled):
        run_atlas(minilm, SENTENCES, should_stop=lambda: True, cancel_raises=True)
    res = run_atlas(minilm, SENTENCES, max_tokens=8)
    assert res.n_truncated == 3 and res.max_tokens == 8


def test_token_classes(minilm):
    tc = TokenClasses(minilm.tokenizer)
    ids = minilm.tokenizer(["Hi, [UNK] there!"], return_tensors="pt")["input_ids"]
    toks = minilm.tokenizer.convert_ids_to_tokens(ids[0])
    c = tc.classes(ids)[0]
    assert toks[0] == "[CLS]" and c[0].tolist() == [True, False, False, True]
    assert toks[-1] == "[SEP]" and c[-1].tolist() == [False, True, False, True]
    assert c[toks.index(","), 2] and c[toks.index("!"), 2]
    assert not c[toks.index("[UNK]"), 3]  # unknown words are words
    assert is_punct_token("##.") and is_punct_token("Ġ«") and not is_punct_token("a.") and not is_punct_token("##")


def test_no_hook_left_active(minilm):
    before = hook_count(minilm.model)
    run_atlas(minilm, SENTENCES[:2])
    assert hook_count(minilm.model) == before


def test_word_level_matches_merge_pieces(minilm):
    """Word statistics == the token->word merge of viz.analysis.words on capture(), computed by hand."""
    from viz.analysis.words import merge_pieces
    from viz.atlas.core import is_punct_token

    text = "Unbelievably, the tokenizer splits antidisestablishmentarianism!"
    res = run_atlas(minilm, [text], words=True)
    cap = capture(minilm, text)
    spans = cap.word_spans
    assert any(e - s > 1 for s, e in spans)  # some word is split
    W = merge_pieces(cap.attentions["encoder"], spans, spans)  # [L, H, word, word]
    special = np.array([cap.special[s] for s, _ in spans])
    punct = np.array([all(is_punct_token(t) for t in cap.tokens[s:e]) and not cap.special[s] for s, e in spans])
    rows = np.where(~special)[0]
    prev = np.mean([W[:, :, i, i - 1] for i in rows], axis=0)
    pun = np.mean([W[:, :, i][..., punct].sum(-1) for i in rows], axis=0)
    dist = np.mean([(W[:, :, i] * np.abs(np.arange(len(spans)) - i)).sum(-1) for i in rows], axis=0)
    assert np.allclose(res.word_stats["prev"], prev, atol=1e-5)
    assert np.allclose(res.word_stats["punct"], pun, atol=1e-5)
    assert np.allclose(res.word_stats["distance"], dist, atol=1e-4)


def test_batches_bounded_by_attention_cells(minilm):
    from viz.atlas.core import iter_batches

    long = " ".join(["word"] * 100) + "."
    batches = list(iter_batches(minilm, SENTENCES + [long] * 5, batch_size=32, max_cells=4 * 64 * 64))
    assert sum(len(b.ids) for b in batches) == len(SENTENCES) + 5
    assert all(len(b.ids) == 1 or b.ids.numel() * b.ids.shape[1] <= 4 * 64 * 64 for b in batches)
    assert max(len(b.ids) for b in batches) == len(SENTENCES)  # short ones still share one batch
