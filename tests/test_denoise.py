"""BART text infilling (viz.train.denoise) and the shared encoder–decoder loop's resume (viz.train.seq2seq)."""
import os
import random

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from transformers import AutoTokenizer

from viz.train import denoise, seq2seq
from viz.core.delta import minilm_dir

MASK = 103


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(minilm_dir())


def _unmask(out: list[int], body: list[int]) -> tuple[list[int], int]:
    """Kept tokens of an infilled body (in order) and its number of masks."""
    return [t for t in out if t != MASK], sum(t == MASK for t in out)


def test_infill_hides_about_30_percent_in_spans_one_mask_each():
    rng = random.Random(0)
    hidden = total = spans = 0
    for _ in range(400):
        body = [rng.randrange(2000, 29000) for _ in range(rng.randint(5, 40))]
        out = denoise.infill([101] + body + [102], MASK, rng)
        assert out[0] == 101 and out[-1] == 102  # [CLS] / [SEP] kept
        kept, masks = _unmask(out[1:-1], body)
        it = iter(body)
        assert all(t in it for t in kept)  # what is left is the original, in order
        hidden += len(body) - len(kept)
        total += len(body)
        spans += masks
    assert 0.27 < hidden / total < 0.31
    assert hidden / spans > 2.0  # spans, not single tokens (Poisson(3) lengths, merged where they touch)


def test_infill_is_deterministic_and_handles_tiny_sentences():
    ids = [101] + list(range(2000, 2020)) + [102]
    assert denoise.infill(ids, MASK, random.Random(5)) == denoise.infill(ids, MASK, random.Random(5))
    assert denoise.infill([101, 102], MASK, random.Random(0)) == [101, 102]  # nothing to hide
    one = denoise.infill([101, 2000, 102], MASK, random.Random(0))
    assert one[0] == 101 and one[-1] == 102 and MASK in one


def test_make_batch_shapes_and_labels(tok):
    enc = [tok("the cat sat on the mat .")["input_ids"], tok("rain fell all night")["input_ids"]]
    b = denoise.make_batch(enc, tok, seed=0)
    assert b["input_ids"].shape[0] == 2 and b["attention_mask"].shape == b["input_ids"].shape
    assert (b["input_ids"] == tok.mask_token_id).any(1).all()  # every sentence corrupted
    assert b["labels"][0].tolist() == enc[0][1:]  # the original without [CLS]: the decoder starts from [CLS]
    assert b["labels"][1, len(enc[1]) - 1:].eq(-100).all()  # padding ignored


def test_denoiser_trains_one_step(tok):
    model = denoise.build_model(tok, d_model=32, layers=1, heads=2)
    assert model.config.decoder_start_token_id == tok.cls_token_id
    make = denoise.batch_maker([tok(s)["input_ids"] for s in ["a b c d e", "the cat sat", "one two three"] * 4],
                               tok, batch_size=4, seed=0)
    assert torch.equal(make(3)["input_ids"], make(3)["input_ids"])  # a pure function of the step
    state = seq2seq.fit_seq2seq(model, make, steps=2, lr=1e-3, warmup=1)
    assert state["step"] == 2


def test_fit_seq2seq_resume_matches_uninterrupted(tmp_path):
    tok = seq2seq.build_tokenizer(seq2seq.get_task("dates")["vocab"]())
    make_ex = seq2seq.get_task("dates")["make_examples"]
    make = lambda k: seq2seq.encode(tok, make_ex(8, k))  # noqa: E731

    def fresh(seed):
        return seq2seq.build_model(len(tok), d_model=32, layers=1, heads=2, seed=seed)

    kw = dict(steps=10, lr=3e-3, warmup=2, evaluate_fn=lambda m: 0.0, eval_every=4)
    full = fresh(0)
    seq2seq.fit_seq2seq(full, make, state_dir=tmp_path / "a", **kw)
    part = fresh(0)
    calls = []
    state = seq2seq.fit_seq2seq(part, make, state_dir=tmp_path / "b", should_stop=lambda: len(calls) > 2 or
                                calls.append(1), **kw)
    assert state["step"] == 4
    resumed = fresh(99)  # a different init: everything must come from the checkpoint
    state = seq2seq.fit_seq2seq(resumed, make, state_dir=tmp_path / "b", **kw)
    assert state["step"] == 10 and [c["step"] for c in state["curve"]] == [4, 8, 10]
    for (k, v), w in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=0, atol=1e-6, msg=k)
