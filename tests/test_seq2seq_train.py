"""Seq2seq tasks, tokenizer, trainer and the shipped encoder–decoder checkpoints (fast, offline)."""
import datetime as dt
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `viz` under plain `pytest` too

import pytest  # noqa: E402
import torch  # noqa: E402

from viz.train import seq2seq_tasks as T  # noqa: E402
from viz.train.seq2seq import encode, evaluate, load_seq2seq, train_seq2seq  # noqa: E402

torch.set_num_threads(1)
MODELS = Path(__file__).resolve().parents[1] / "models"


# --------------------------------------------------------------------------- tasks
@pytest.mark.parametrize("task", sorted(T.TASKS))
def test_generators_are_deterministic_and_split(task):
    make = T.get_task(task)["make_examples"]
    assert make(40, 3) == make(40, 3)
    assert make(40, 3) != make(40, 4)
    train = {s for s, _, _ in make(300, 1)}
    test = {s for s, _, _ in make(300, 1, split="test")}
    assert not train & test  # held-out examples are never trained on


def test_date_alignments_by_hand():
    d = dt.date(2021, 3, 3)
    assert T._date_example(d, 0) == ("3 March 2021", "2021 - 03 - 03", [2, None, 1, None, 0])
    assert T._date_example(d, 1) == ("03/03/2021", "2021 - 03 - 03", [4, None, 2, None, 0])
    assert T._date_example(d, 2) == ("March 3, 2021", "2021 - 03 - 03", [3, None, 0, None, 1])
    src, tgt, al = T._date_example(dt.date(1999, 12, 31), 1)  # DD/MM/YYYY
    assert (src, tgt) == ("31/12/1999", "1999 - 12 - 31")
    assert [T.words(src)[j] for j in al if j is not None] == ["1999", "12", "31"]


def test_date_alignments_point_at_the_right_words():
    months = [m.lower() for m in T.MONTHS]
    for src, tgt, al in T.make_dates(200, 0):
        sw, tw = T.words(src), T.words(tgt)
        assert len(al) == len(tw) == 5 and al[1] is al[3] is None
        assert sw[al[0]] == tw[0]  # year copied
        month = sw[al[2]]
        assert (months.index(month) + 1 if month in months else int(month)) == int(tw[2])
        assert int(sw[al[4]]) == int(tw[4])


def test_reverse_alignments_and_unknown_words():
    vocab = set(T.reverse_vocab())
    assert len(vocab) == 1000
    assert T.make_reverse(1, 0)[0][2] == list(range(len(T.words(T.make_reverse(1, 0)[0][0]))))[::-1]
    n_words = n_unk = 0
    for src, tgt, al in T.make_reverse(300, 5):
        sw, tw = T.words(src), T.words(tgt)
        assert 3 <= len(sw) <= 12 and tw == sw[::-1]
        assert all(tw[i] == sw[j] for i, j in enumerate(al))
        n_words += len(sw)
        n_unk += sum(w not in vocab for w in sw)
    assert 0.02 < n_unk / n_words < 0.09  # ~5% unknown words


# --------------------------------------------------------------------------- tokenizer
def test_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    tok = T.build_tokenizer(T.dates_vocab())
    tok.save_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    texts = ["3 March 2021", "03/03/2021", "March 3, 2021", "May 9, 1900 foo"]
    assert tok(texts)["input_ids"] == tok2(texts)["input_ids"]
    ids = tok2("March 3, 2021 foo")["input_ids"]
    assert len(ids) == len(T.words("March 3, 2021 foo")) + 1  # one token per word, then </s>
    assert ids[-2:] == [T.UNK_ID, T.EOS_ID]
    assert (tok2.pad_token_id, tok2.bos_token_id, tok2.eos_token_id) == (0, 1, 2)
    assert tok2.decode(tok2("2021 - 03 - 03")["input_ids"], skip_special_tokens=True) == \
        "2021 - 03 - 03"


# --------------------------------------------------------------------------- training
def _tiny_run(steps=40, **kw):
    losses = []
    model, tok, info = train_seq2seq(
        "dates", steps=steps, seed=1, out_dir=None, d_model=32, layers=1, heads=2, batch_size=16,
        lr=3e-3, warmup=5, eval_n=0, progress_every=1,
        on_progress=lambda p: losses.append(p["loss"]), **kw)
    return losses, model, info


def test_tiny_training_lowers_loss():
    losses, model, info = _tiny_run()
    assert len(losses) == 40 and info["steps_done"] == 40
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_training_is_deterministic():
    assert _tiny_run(steps=6)[0] == _tiny_run(steps=6)[0]  # same seed -> same losses


def test_should_stop_ends_early():
    calls = []
    losses, _, info = _tiny_run(should_stop=lambda: calls.append(1) or len(calls) >= 3)
    assert info["steps_done"] == 3 and len(losses) == 3


# --------------------------------------------------------------------------- shipped checkpoints
def _load(name):
    path = MODELS / name
    if not (path / "model.safetensors").exists():
        pytest.fail(f"{path} is missing: train it with `python -m viz.train.seq2seq --task ...`")
    return load_seq2seq(path)


def _generate(model, tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        return model.generate(**enc).tolist()


def test_shipped_dates_checkpoint():
    model, tok, info = _load("seq2seq-dates")
    assert info["task"] == "dates" and model.dtype == torch.float32
    assert model.config._attn_implementation == "eager"
    texts = ["3 March 2021", "03/03/2021", "March 3, 2021", "31/12/1999"]
    out = tok.batch_decode(_generate(model, tok, texts), skip_special_tokens=True)
    assert out == ["2021 - 03 - 03"] * 3 + ["1999 - 12 - 31"]
    held_out = T.make_dates(4, 99, split="test")
    out = tok.batch_decode(_generate(model, tok, [s for s, _, _ in held_out]),
                           skip_special_tokens=True)
    assert out == [t for _, t, _ in held_out]


def test_shipped_reverse_checkpoint_with_unknown_word():
    model, tok, info = _load("seq2seq-reverse")
    assert info["task"] == "reverse"
    texts = ["the old house near the river", "the qzxv house", "zzkrt was born in the city"]
    rows = _generate(model, tok, texts)
    for text, row in zip(texts, rows):
        ref = tok(text_target=" ".join(text.split()[::-1]))["input_ids"]  # unknown -> <unk>
        assert [t for t in row[1:] if t != tok.pad_token_id] == ref, text
    assert tok.decode(rows[0], skip_special_tokens=True) == "river the near house old the"


@pytest.mark.parametrize("name", ["seq2seq-dates", "seq2seq-reverse"])
def test_shipped_checkpoint_metrics(name):
    model, tok, info = _load(name)
    m = evaluate(model, tok, info["task"], n=100, seed=31)
    assert m["exact_match"] >= 0.98
    assert m["alignment"] >= 0.8 > 2 * m["uniform"]
    assert len(m["per_layer"]) == model.config.decoder_layers
    assert len(m["per_head"][0]) == model.config.decoder_attention_heads


def test_encode_shapes():
    tok = T.build_tokenizer(T.reverse_vocab())
    b = encode(tok, T.make_reverse(3, 0))
    assert b["input_ids"].shape == b["attention_mask"].shape
    for ids, row, (src, tgt, _) in zip(b["input_ids"].tolist(), b["labels"].tolist(), T.make_reverse(3, 0)):
        assert ids.index(T.EOS_ID) == len(T.words(src))  # word i == token i, then </s>
        assert [t for t in row if t != -100] == tok(text_target=tgt)["input_ids"]


def test_cli_main_saves_fp16_checkpoint_that_reloads_float32(tmp_path, capsys):
    import argparse

    from safetensors import safe_open
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from viz.train.seq2seq import add_arguments, main

    out = tmp_path / "ckpt"
    args = add_arguments(argparse.ArgumentParser()).parse_args(
        ["--task", "dates", "--steps", "3", "--out", str(out), "--d-model", "32", "--layers", "1",
         "--heads", "2", "--eval-n", "20"])
    assert main(args) == 0
    assert "held-out exact match" in capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "task.json",
            "tokenizer.json", "tokenizer_config.json"} <= names
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    model = AutoModelForSeq2SeqLM.from_pretrained(out, attn_implementation="eager")
    assert model.dtype == torch.float32  # config.json records float32
    tok = AutoTokenizer.from_pretrained(out)
    assert model.generate(**tok(["3 March 2021"], return_tensors="pt"))[0, 0] == T.BOS_ID
