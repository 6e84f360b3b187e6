"""Masked-LM training: masking statistics, learning, resume determinism, delta round trip, shipped model.

Tiny random BertForMaskedLM (hidden 32, 2 layers, 2 heads) with the real MiniLM tokenizer; nothing online.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from viz.core import delta as D
from viz.core.paths import CORPUS
from viz.train import mlm

SENTENCES = [
    "She poured a cup of tea for her mother.",
    "The cat sat quietly on the warm mat.",
    "Rain fell on the roof all night long.",
    "He read the old book by the fire.",
    "A small boat crossed the calm lake at dawn.",
    "The children played in the park after school.",
    "We walked to the market to buy fresh bread.",
    "The dog barked at the stranger near the gate.",
]


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(D.minilm_dir())


def tiny_model(tok, seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    cfg._attn_implementation = "eager"
    return BertForMaskedLM(cfg)


def test_mask_tokens_80_10_10_and_specials_never_masked(tok):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2000, 29000, (400, 40), generator=g)  # ordinary word pieces
    ids[:, 0] = tok.cls_token_id
    ids[:, 30] = tok.sep_token_id
    ids[:, 31:] = tok.pad_token_id  # padding tail
    masked, labels = mlm.mask_tokens(ids, tok, g, prob=0.15)
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    assert (labels[special] == -100).all() and (masked[special] == ids[special]).all()
    chosen = labels != -100
    assert (labels[chosen] == ids[chosen]).all()
    frac = chosen.sum() / (~special).sum()
    assert abs(frac.item() - 0.15) < 0.01
    n = chosen.sum().item()
    to_mask = (masked[chosen] == tok.mask_token_id).sum().item() / n
    kept = (masked[chosen] == ids[chosen]).sum().item() / n
    rnd = 1 - to_mask - kept
    assert abs(to_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.02 and abs(rnd - 0.1) < 0.02
    # random replacements are never special tokens, and unchosen positions are untouched
    assert not torch.isin(masked[chosen & (masked != tok.mask_token_id)], torch.tensor(tok.all_special_ids)).any()
    assert (masked[~chosen] == ids[~chosen]).all()


def test_mask_tokens_always_masks_one(tok):
    ids = torch.tensor([[tok.cls_token_id, 2023, tok.sep_token_id, 0]])
    _, labels = mlm.mask_tokens(ids, tok, torch.Generator().manual_seed(1), prob=0.0)
    assert (labels != -100).sum() == 1 and labels[0, 1] == 2023


def test_loss_falls_and_eval_is_deterministic(tok):
    model = tiny_model(tok)
    losses = []
    mlm.train_mlm(model, tok, SENTENCES, None, steps=30, batch_size=8, lr_head=1e-2, lr_encoder=1e-2,
                  unfreeze_layers=None, seed=0, on_progress=lambda p: losses.append(p["loss"]), bf16=False)
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    a = mlm.evaluate_mlm(model, tok, SENTENCES, seed=3)
    b = mlm.evaluate_mlm(model, tok, SENTENCES, seed=3)
    assert a == b and a["n"] > 0 and 0 <= a["top1"] <= a["top5"] <= 1


def test_resume_matches_uninterrupted(tok, tmp_path):
    kw = dict(steps=12, batch_size=4, lr_head=1e-3, lr_encoder=1e-3, unfreeze_layers=1, seed=5, bf16=False)
    full = tiny_model(tok)
    mlm.train_mlm(full, tok, SENTENCES, None, out_dir=str(tmp_path / "a"), **kw)

    part = tiny_model(tok)
    state = mlm.train_mlm(part, tok, SENTENCES, None, out_dir=str(tmp_path / "b"),
                          should_stop=lambda: True, **kw)  # stops (and checkpoints) after one step
    assert state["step"] == 1
    resumed = tiny_model(tok, seed=99)  # different init: everything must come from the checkpoint
    state = mlm.train_mlm(resumed, tok, SENTENCES, None, out_dir=str(tmp_path / "b"), **kw)
    assert state["step"] == 12
    for (k, v), w in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=0, atol=1e-6, msg=k)


def test_fit_minutes_sizes_the_schedule_and_a_resume_keeps_it(tok, tmp_path):
    """fit_minutes: the warm-up measures the step rate, then `steps` becomes what fits in the budget; the fitted
    length is checkpointed, so resuming with another budget (or `steps`) neither refits nor changes it."""
    kw = dict(batch_size=4, lr_head=1e-3, lr_encoder=1e-3, unfreeze_layers=1, seed=0, bf16=False, warmup=3,
              out_dir=str(tmp_path / "run"))
    seen = []
    state = mlm.train_mlm(tiny_model(tok), tok, SENTENCES, None, steps=10**9, fit_minutes=0.005,
                          on_progress=lambda p: seen.append(p["steps"]), **kw)
    assert state["fitted"] and state["step"] == state["steps"] >= 4
    assert seen[-1] == state["steps"] and len(seen) == state["steps"]  # the loop ran exactly the fitted length
    again = mlm.train_mlm(tiny_model(tok), tok, SENTENCES, None, steps=10**9, fit_minutes=5, **kw)
    assert again["steps"] == state["steps"] and again["step"] == state["step"]


def test_cli_steps_zero_needs_minutes(capsys):
    import argparse

    parser = argparse.ArgumentParser()
    mlm.add_arguments(parser)
    assert mlm.main(parser.parse_args(["--steps", "0"])) == 2
    assert "--minutes" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cli_cuda_without_a_gpu_says_so(capsys):
    import argparse

    parser = argparse.ArgumentParser()
    mlm.add_arguments(parser)
    assert mlm.main(parser.parse_args(["--device", "cuda"])) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_build_minilm_mlm_dropout_is_for_training_only():
    model, _ = D.build_minilm_mlm(dropout=0.1)
    assert model.config.hidden_dropout_prob == 0.1 == model.config.attention_probs_dropout_prob
    assert not model.training  # built in eval mode: pages and evaluation never see dropout


def test_delta_round_trip(tmp_path):
    model, _ = D.build_minilm_mlm()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # pretend training changed the head and the top layer
        for n, p in model.named_parameters():
            if n.startswith("cls.") or ".layer.5." in n:
                p.add_(0.01 * torch.randn(p.shape, generator=g))
    path = str(tmp_path / "delta.safetensors")
    saved = D.save_delta(model, D.minilm_dir(), path)
    assert saved and all(k.startswith("cls.") or ".layer.5." in k for k in saved)
    assert os.path.getsize(path) < 5e6
    fresh = D.apply_delta(D.build_minilm_mlm()[0], path)
    assert fresh.cls.predictions.decoder.weight is fresh.bert.embeddings.word_embeddings.weight
    for (k, v), w in zip(model.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=1e-3, atol=1e-3, msg=k)  # fp16 storage


def test_shipped_minilm_mlm_predicts_drinks():
    model, tok = D.load_minilm_mlm()
    assert not model.training and model.config._attn_implementation == "eager"
    enc = tok("She poured a cup of [MASK].", return_tensors="pt")
    with torch.inference_mode():
        logits = model(**enc).logits  # [1, T, V]
    pos = (enc["input_ids"][0] == tok.mask_token_id).nonzero().item()
    top5 = tok.convert_ids_to_tokens(logits[0, pos].topk(5).indices.tolist())
    assert {"tea", "coffee", "water", "milk", "wine"} & set(top5), top5


def test_cli_init_warm_starts_from_a_delta(tmp_path):
    """`train mlm --init DELTA` starts from that delta: with a zero learning rate it writes the same tensors back."""
    import argparse

    from safetensors.torch import load_file

    corpus = tmp_path / "train.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    parser = argparse.ArgumentParser()
    mlm.add_arguments(parser)
    args = parser.parse_args(["--train", str(corpus), "--test", str(corpus), "--steps", "1", "--batch-size", "2",
                              "--lr-head", "0", "--lr-encoder", "0", "--unfreeze", "5", "--eval-n", "2",
                              "--out", str(tmp_path / "run"), "--init", D.DEFAULT_DELTA])
    assert mlm.main(args) == 0
    shipped, written = load_file(D.DEFAULT_DELTA), load_file(str(tmp_path / "run" / "delta.safetensors"))
    assert set(written) == set(shipped)
    for k, v in shipped.items():
        assert torch.equal(written[k], v), k


def test_shipped_minilm_mlm_meets_its_held_out_target():
    """The issue's bar, on the whole held-out split at the fixed masking the model card reports (~10 s)."""
    model, tok = D.load_minilm_mlm()
    test = mlm.read_sentences(str(CORPUS / "test.txt"))
    ev = mlm.evaluate_mlm(model, tok, test, mlm.EVAL_SEED)
    assert ev["n"] > 10_000
    assert ev["top1"] >= 0.35 and ev["top5"] >= 0.55, ev
