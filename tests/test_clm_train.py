"""Causal-LM training (`python -m viz train clm`): packing, the deterministic stream, resume == uninterrupted,
the n-gram baselines on a hand-computed case, the CLI end to end on a small corpus."""
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from viz.train import clm
from viz.train.clm_eval import evaluate_clm, ngram_baselines

SENTENCES = ["The cat sat on the mat.", "A dog barked at the moon.", "Functions return values.",
             "In the beginning was the word.", "Never put off till tomorrow what you can do today."] * 20


def test_pack_lays_whole_sentences_end_to_end_and_cuts_the_last():
    enc = [[0, 1, 2], [0, 3], [0, 4, 5, 6], [0, 7]]
    # window 4: [0 1 2] + the first token of [0 3] (cut, not repeated); [0 4 5 6] fills the next exactly;
    # [0 7] alone does not fill a window: dropped
    assert clm.pack(enc, [0, 1, 2, 3], window=4).tolist() == [[0, 1, 2, 0], [0, 4, 5, 6]]
    assert clm.pack(enc, [2, 0, 1, 3], window=5).tolist() == [[0, 4, 5, 6, 0]]
    assert clm.pack([[0] + list(range(1, 20))], [0], window=8).tolist() == [list(range(0, 8))]  # long: cut


def test_tokenizer_begins_every_text_with_the_separator_and_round_trips(tmp_path):
    tok = clm.build_tokenizer(SENTENCES, vocab_size=300)
    ids = tok("The cat sat.")["input_ids"]
    assert ids[0] == tok.bos_token_id == tok.eos_token_id and tok.convert_ids_to_tokens(ids[0]) == clm.SEP
    assert tok.decode(ids, skip_special_tokens=True) == "The cat sat."
    assert clm.encode_sentences(tok, ["The cat sat."]) == [ids]
    tok.save_pretrained(tmp_path)
    again = clm.load_tokenizer(tmp_path)
    assert again("The cat sat.")["input_ids"] == ids and again.pad_token_id == tok.pad_token_id


def test_pack_with_repeats_copies_sentences_of_the_same_window():
    enc = [[0, 100 + i, 200 + i] for i in range(60)]
    w = clm.pack(enc, list(range(60)), window=12, repeat_frac=0.5, seed=1)
    assert torch.equal(w, clm.pack(enc, list(range(60)), window=12, repeat_frac=0.5, seed=1))
    repeats = 0
    for row in w.tolist():
        sents = [tuple(row[k:k + 3]) for k in range(0, 12, 3)]  # every sentence here is 3 tokens
        repeats += len(sents) - len(set(sents))  # a copy sits in the window of its original
    assert repeats > 5
    plain = clm.pack(enc, list(range(60)), window=12)
    assert all(len(set(tuple(r[k:k + 3]) for k in range(0, 12, 3))) == 4 for r in plain.tolist())


def _segments(row):
    """A packed window -> its pieces, each beginning at a separator (0)."""
    out = []
    for t in row:
        if t == 0:
            out.append([])
        out[-1].append(t)
    return out


def test_pack_with_a_copy_mix_inserts_span_copies_and_random_repeats():
    from viz.train.copying import RANDOM_LENGTHS, SPAN_LENGTHS, CopyMix

    enc = [[0] + [1000 + 10 * i + k for k in range(5 + i % 9)] for i in range(300)]  # sentences: ids >= 1000
    mix = CopyMix(span_frac=0.3, random_frac=0.2, pool_lo=2, pool_hi=90, sep=0)
    counts = {}
    w = clm.pack(enc, list(range(300)), window=128, seed=5, mix=mix, counts=counts)
    assert torch.equal(w, clm.pack(enc, list(range(300)), window=128, seed=5, mix=mix))
    kinds = {"sentence": 0, "span_copy": 0, "random_repeat": 0}
    for row in w.tolist():
        segs = _segments(row)
        for j, seg in enumerate(segs[:-1]):  # the last piece of a window may be cut
            body = seg[1:]
            if all(t >= 1000 for t in body) and body == enc[(body[0] - 1000) // 10][1:]:
                kinds["sentence"] += 1
            elif all(t >= 1000 for t in body):  # a span copy: cut from a sentence earlier in this window
                assert SPAN_LENGTHS[0] <= len(body) <= SPAN_LENGTHS[1] or body == enc[(body[0] - 1000) // 10][1:]
                earlier = [x[1:] for x in segs[:j]]
                assert any(body == e[k:k + len(body)] for e in earlier for k in range(len(e))), (body, earlier)
                kinds["span_copy"] += 1
            else:  # a random repeat: L distinct pool ids, then the same L again
                L = len(body) // 2
                assert len(body) == 2 * L and body[:L] == body[L:] and RANDOM_LENGTHS[0] <= L <= RANDOM_LENGTHS[1]
                assert len(set(body[:L])) == L and all(2 <= t < 90 for t in body)
                kinds["random_repeat"] += 1
    assert min(kinds.values()) > 10, kinds
    # the counts cover every token placed (windows plus the unfinished last one) and name each kind
    assert set(counts) == {"sentence", "span_copy", "random_repeat"}
    assert w.numel() <= sum(counts.values()) < w.numel() + 128
    # an inactive mix changes nothing: the plain packing and the sentence repeats draw the same numbers
    assert torch.equal(clm.pack(enc, list(range(300)), 128, 0.3, 7, mix=CopyMix(pool_hi=90)),
                       clm.pack(enc, list(range(300)), 128, 0.3, 7))
    with pytest.raises(ValueError, match="too small"):
        CopyMix(random_frac=0.1, pool_lo=2, pool_hi=40)


def test_copy_probes_on_a_model_that_copies_perfectly_and_one_that_cannot():
    """copy_probe / text_repeat_losses against losses computed here by hand from the logits."""
    import torch.nn.functional as F

    from viz.train import copying

    model = clm.build_decoder(64, d_model=32, layers=1, heads=2, kv_heads=1, seed=0).eval()
    halves = [[5, 9, 7, 11, 30], [40, 41, 42, 43]]
    got = copying.text_repeat_losses(model, halves, bos=0)
    for h, (a, b) in zip(halves, got):
        ids = torch.tensor([[0] + h + h])
        with torch.no_grad():
            nll = F.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:], reduction="none")
        n = len(h)  # targets 2..n of each copy: ids positions 2..n and n+2..2n
        assert a == pytest.approx(float(nll[1:n].mean()), abs=1e-5)
        assert b == pytest.approx(float(nll[n + 1:2 * n].mean()), abs=1e-5)
    probe = copying.copy_probe(model, torch.arange(2, 64), 0, lengths=(5, 9), sequences=2)
    assert set(probe["induction_by_length"]) == {5, 9}
    assert probe["induction"] == max(probe["induction_by_length"].values()) < 0.5  # random weights copy nothing
    assert abs(probe["copy_loss_first"] - probe["copy_loss_second"]) < 0.5
    # test_heads' hand-built GPT-2 whose layer 1 head 0 is an exact induction head that copies
    from test_heads import build_induction_gpt2
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as d:
        copier = AutoModelForCausalLM.from_pretrained(build_induction_gpt2(Path(d), copy=10.0),
                                                      attn_implementation="eager").eval()
    probe = copying.copy_probe(copier, torch.arange(3, 32), 0, lengths=(5, 9), sequences=2)
    assert probe["induction"] > 0.99 and min(probe["induction_by_length"].values()) > 0.99
    assert probe["copy_loss_second"] < 0.01 < 2.0 < probe["copy_loss_first"]
    assert copying.passages([[0, 1, 2], [0, 3, 4, 5], [0, 6]], min_tokens=4, count=5) == [[1, 2, 0, 3, 4, 5]]


def test_stream_is_a_pure_function_of_seed_and_step():
    enc = [[0] + [i % 50 + 2] * (3 + i % 7) for i in range(400)]
    a, b = clm.Windows(enc, 4, seed=3, window=16), clm.Windows(enc, 4, seed=3, window=16)
    late = a.per_epoch + 2  # the second epoch: a fresh shuffle
    assert torch.equal(a.batch(late), b.batch(late)) and torch.equal(a.batch(1), b.batch(1))
    assert not torch.equal(a.batch(1), a.batch(a.per_epoch + 1))
    assert not torch.equal(a.batch(0), clm.Windows(enc, 4, seed=4, window=16).batch(0))
    with pytest.raises(ValueError, match="fewer than"):
        clm.Windows(enc[:3], 4, seed=0, window=16)


def test_decoder_is_a_llama_with_grouped_kv_heads():
    m = clm.build_decoder(300, d_model=64, layers=2, heads=4, kv_heads=2)
    c = m.config
    assert (c.model_type, c.num_key_value_heads, c.intermediate_size, c.tie_word_embeddings) == ("llama", 2, 192, True)
    assert m.get_input_embeddings().weight is m.get_output_embeddings().weight
    with pytest.raises(ValueError, match="key/value groups"):
        clm.build_decoder(300, d_model=64, heads=4, kv_heads=3)


def _run(tmp_path, steps, stop_after=None, resume=True):
    tok = clm.build_tokenizer(SENTENCES, vocab_size=300)
    stream = clm.Windows(clm.encode_sentences(tok, SENTENCES), 4, seed=0, window=32)
    model = clm.build_decoder(len(tok), d_model=32, layers=1, heads=2, kv_heads=1, seed=0)
    done = []
    state = clm.train_clm(model, stream.batch, steps=steps, lr=3e-3, warmup=2, out_dir=str(tmp_path),
                          resume=resume, bf16=False,
                          should_stop=(lambda: len(done) >= stop_after) if stop_after else None,
                          on_progress=done.append)
    return model, state


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    whole, s1 = _run(tmp_path / "a", steps=8)
    _, cut = _run(tmp_path / "b", steps=8, stop_after=3)
    assert cut["step"] == 4  # should_stop is polled after the step: 4 steps ran
    resumed, s2 = _run(tmp_path / "b", steps=8)
    assert s2["step"] == 8 and s1["step"] == 8
    for p, q in zip(whole.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_ngram_baselines_hand_computed():
    # training stream 0 5 6 0 5 6 0 5 7 5 (V = 8); one test window 0 5 6: targets 5 (after 0) and 6 (after 5)
    train = [[0, 5, 6], [0, 5, 6], [0, 5, 7], [5]]
    res = ngram_baselines(train, torch.tensor([[0, 5, 6]]), 8, lambdas=(0.5,))
    p_uni = {5: 5 / 18, 6: 3 / 18}  # add-one: counts 0:3 5:4 6:2 7:1 over n + V = 10 + 8
    assert res["unigram"]["loss"] == pytest.approx(-(math.log(p_uni[5]) + math.log(p_uni[6])) / 2)
    assert res["unigram"]["top1"] == pytest.approx(0.5)  # always "5"
    # pairs (0,5)x3 (5,6)x2 (6,0)x2 (5,7) (7,5): p(5|0) = 1, p(6|5) = 2/3; lam 0.5 with the unigram
    p5, p6 = 0.5 * 1 + 0.5 * p_uni[5], 0.5 * 2 / 3 + 0.5 * p_uni[6]
    assert res["bigram"]["loss"] == pytest.approx(-(math.log(p5) + math.log(p6)) / 2)
    assert res["bigram"]["top1"] == pytest.approx(1.0) and res["bigram"]["n"] == 2
    assert res["bigram"]["ppl"] == pytest.approx(math.exp(res["bigram"]["loss"]))


def test_evaluate_counts_every_position(tmp_path):
    model, _ = _run(tmp_path, steps=2)
    windows = torch.randint(2, 100, (3, 16))
    ev = evaluate_clm(model, windows, batch_size=2, bf16=False)
    assert ev["n"] == 3 * 15 and ev["ppl"] == pytest.approx(math.exp(ev["loss"]))
    assert 0 <= ev["top1"] <= ev["top5"] <= 1


def test_cli_trains_saves_and_reports(tmp_path):
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    train.write_text("\n".join(SENTENCES * 3))
    test.write_text("\n".join(SENTENCES[:40]))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "viz", "train", "clm", "--train", str(train), "--test", str(test), "--steps", "12",
           "--batch-size", "4", "--window", "32", "--vocab-size", "300", "--d-model", "32", "--layers", "1",
           "--heads", "2", "--kv-heads", "1", "--eval-every", "6", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "held-out ppl" in r.stderr and "bigram ppl" in r.stderr
    import json

    info = json.loads((out / "model" / "training.json").read_text())
    assert [c["step"] for c in info["curve"]] == [6, 12] and info["steps_done"] == 12
    assert {"unigram", "bigram"} <= set(info["baselines"]) and info["heldout"]["n"] > 0
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(out / "model")
    assert m.config.num_key_value_heads == 1 and m.dtype == torch.float32
    # a warm start from that model, on windows where sentences repeat: its weights and tokenizer, a fresh schedule
    cmd2 = cmd[:cmd.index("--steps")] + ["--steps", "4", "--batch-size", "4", "--window", "32", "--eval-every", "4",
                                         "--init", str(out / "model"), "--repeat-frac", "0.3", "--out",
                                         str(tmp_path / "run2")]
    r = subprocess.run(cmd2, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    info2 = json.loads((tmp_path / "run2" / "model" / "training.json").read_text())
    assert info2["recipe"]["init"] == str(out / "model") and info2["recipe"]["repeat_frac"] == 0.3
    assert info2["steps_done"] == 4 and info2["recipe"]["params"] == info["recipe"]["params"]


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "--batch-size: must be at least 1 (got 0)"),
    (["--steps", "-3"], "--steps: must be at least 0 (got -3)"),
    (["--lr", "abc"], "--lr: must be a number (got 'abc')"),
    (["--steps", "0"], "--steps 0 fits the schedule to --minutes"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--train", "/nonexistent.txt"], "no such file"),
    (["--repeat-frac", "1.5"], "--repeat-frac: must be below 1 (got 1.5)"),
    (["--span-frac", "-0.1"], "--span-frac: must be at least 0 (got -0.1)"),
    (["--random-frac", "2"], "--random-frac: must be below 1 (got 2)"),
    (["--init", "/nonexistent"], "not a saved model folder"),
])
def test_cli_refuses_bad_options_in_one_line(argv, message):
    r = subprocess.run([sys.executable, "-m", "viz", "train", "clm", *argv], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-500:]
