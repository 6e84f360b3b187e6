"""Step-through generation for decoder-only models (viz.tasks.generate_lm) and `python -m viz generate` on decoders.

References are independent of our attention function where it matters: token sequences come from
`model.generate`, attention rows from a deep copy switched to transformers' own eager attention
(`output_attentions=True`), beam scores from that copy's log-probabilities.
"""

import copy
import json
from contextlib import contextmanager
import subprocess
import sys

import numpy as np
import pytest
import torch

import viz.tasks.generate_lm as glm
from conftest import ROOT
from viz.core.capture import CaptureError
from viz.tasks.encdec import generate
from viz.tasks.generate_lm import decoder_names, generate_lm, prompt_ids
from viz.core.models import DECODER_FAMILIES, builtin_names
from viz.core.recorder import RECORDER

DECODERS = [f"tiny-{f}" for f in ("gpt2", *DECODER_FAMILIES)]
SHIPPED = ["atlas-lm"]  # the shipped decoder joins every parametrisation below (a missing folder fails)
PROMPT = "The cat sat on the mat because it was tired and the dog"  # > 8 tokens: past Mistral's window


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def reference_generate(bundle, ids, **kw):
    with torch.inference_mode():
        seq = torch.tensor([ids], device=bundle.device)
        return bundle.model.generate(input_ids=seq, attention_mask=torch.ones_like(seq), **kw)


def eager_copy(bundle):
    model = copy.deepcopy(bundle.model)
    model.set_attn_implementation("eager")
    return model


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"] + SHIPPED + [d for d in DECODERS if d not in
                                                                          ("tiny-llama", "tiny-gpt2")])
def test_greedy_steps_equal_model_generate(load, name):
    bundle = load(name)
    gen = generate_lm(bundle, PROMPT, "greedy", max_new_tokens=10)
    ref = reference_generate(bundle, gen.prompt_ids, max_new_tokens=10, do_sample=False, num_beams=1)
    assert [s.token_id for s in gen.steps] == ref[0, len(gen.prompt_ids):].tolist()
    assert gen.ids == ref[0].tolist()
    assert not any(s.forced for s in gen.steps)  # no generation rule in these configs: argmax every time


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"] + SHIPPED)
def test_sampling_is_reproducible_and_equals_model_generate(load, name):
    bundle = load(name)
    kw = dict(max_new_tokens=10, temperature=0.8, top_p=0.9)
    a = generate_lm(bundle, PROMPT, "sample", seed=7, **kw)
    b = generate_lm(bundle, PROMPT, "sample", seed=7, **kw)
    c = generate_lm(bundle, PROMPT, "sample", seed=8, **kw)
    ids = lambda g: [s.token_id for s in g.steps]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)
    state = torch.random.get_rng_state()
    torch.manual_seed(7)
    ref = reference_generate(bundle, a.prompt_ids, do_sample=True, **kw)
    torch.random.set_rng_state(state)
    assert ids(a) == ref[0, len(a.prompt_ids):].tolist()
    assert a.settings["seed"] == 7 and "Temperature(temperature=0.8)" in a.settings["rules"]


def test_sampling_leaves_the_global_rng_alone(load):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    generate_lm(load("tiny-llama"), PROMPT, "sample", seed=1, max_new_tokens=4, lens=False)
    assert torch.equal(torch.rand(3), before)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"] + SHIPPED)
def test_beams_equal_model_generate_and_their_scores_the_models_log_probs(load, name):
    bundle = load(name)
    gen = generate_lm(bundle, PROMPT, "beam", num_beams=3, max_new_tokens=6)
    ref = reference_generate(bundle, gen.prompt_ids, max_new_tokens=6, num_beams=3, num_return_sequences=3,
                             do_sample=False)
    n = len(gen.prompt_ids)
    assert [b.ids for b in gen.beams] == [r[n:n + len(b.ids)] for r, b in zip(ref.tolist(), gen.beams)]
    assert [s.token_id for s in gen.steps] == gen.beams[0].ids
    model = eager_copy(bundle)  # the test's own log-probabilities
    for b in gen.beams:
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([gen.prompt_ids + b.ids]), use_cache=False).logits[0].float()
        logp = torch.log_softmax(logits[n - 1:-1], -1)[torch.arange(len(b.ids)), b.ids].sum().item()
        assert b.log_prob == pytest.approx(logp, abs=1e-4)
        assert len(b.token_logprobs) == len(b.ids)
        assert b.score == pytest.approx(logp / len(b.ids) ** gen.settings["length_penalty"], abs=1e-4)
    assert [b.score for b in gen.beams] == sorted((b.score for b in gen.beams), reverse=True)
    assert [s.logprob for s in gen.steps] == pytest.approx(gen.beams[0].token_logprobs, abs=1e-4)
    other = generate_lm(bundle, PROMPT, "beam", num_beams=3, max_new_tokens=6, beam=2)
    assert [s.token_id for s in other.steps] == gen.beams[2].ids and other.settings["beam"] == 2


@pytest.mark.parametrize("name", DECODERS + SHIPPED)
def test_cached_steps_record_the_rows_of_one_full_forward(load, name):
    """With the KV cache each step's query length is 1 (sliding-window layers keep only their window):
    every step's row must still be that row of transformers' eager attention over the whole sequence."""
    bundle = load(name)
    gen = generate_lm(bundle, PROMPT, "greedy", max_new_tokens=6, lens=False)
    with torch.inference_mode():
        out = eager_copy(bundle)(input_ids=torch.tensor([gen.ids]), output_attentions=True, use_cache=False)
    full = torch.stack([a[0] for a in out.attentions]).float().numpy()  # [layer, head, query, key]
    for s in gen.steps:
        q = s.position - 1  # the last context token's query predicted this step's token
        assert s.attention.shape == full.shape[:2] + (s.position,)
        np.testing.assert_allclose(s.attention, full[:, :, q, : q + 1], atol=1e-5)
        np.testing.assert_allclose(s.attention.sum(-1), 1.0, atol=1e-5)


def test_each_forward_records_one_query_row(load, monkeypatch):
    """The prompt's forward keeps only its last row, the cached steps their single row: never T x T."""
    seen = []
    real = glm.recording

    @contextmanager
    def spy(bundle, **plan):
        with real(bundle, **plan) as rec:
            yield rec
        seen.append(rec)

    monkeypatch.setattr(glm, "recording", spy)
    bundle = load("tiny-llama")
    gen = generate_lm(bundle, PROMPT, "greedy", max_new_tokens=4)
    assert len(seen) == len(gen.steps) == 4
    for i, rec in enumerate(seen):
        attn = rec.data[("decoder", "attn")]
        assert len(attn) == bundle.n_layers and not rec.qkv
        assert [tuple(a.shape) for a in attn] == [(1, 4, 1, len(gen.prompt_ids) + i)] * bundle.n_layers
    assert RECORDER.get() is None


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-gemma2"] + SHIPPED)
def test_step_lens_ends_at_the_models_own_distribution(load, name):
    bundle = load(name)
    gen = generate_lm(bundle, PROMPT, "greedy", max_new_tokens=5, top_k=4)
    assert gen.lens_gap is not None and gen.lens_gap <= 1e-4
    L = bundle.n_layers
    for s in gen.steps:
        assert s.lens_rank.shape == s.lens_prob.shape == (L + 1,) and len(s.lens_top) == L + 1
        assert s.lens_rank[-1] == 1  # greedy: the model's own top token
        assert [t for t, _ in s.lens_top[-1]] == [t for t, _ in s.top_k]
        assert [p for _, p in s.lens_top[-1]] == pytest.approx([p for _, p in s.top_k], rel=1e-4)
        assert s.lens_prob[-1] == pytest.approx(s.prob, rel=1e-4)
        assert all(len(row) == 4 for row in s.lens_top)


def test_prompt_drops_a_trailing_separator_but_keeps_the_start(load):
    import dataclasses

    bundle = dataclasses.replace(load("tiny-llama"), tokenizer=load("minilm").tokenizer)  # BERT's: [CLS] ... [SEP]
    ids = prompt_ids(bundle, "the cat")
    assert bundle.tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "the", "cat"]
    tiny = load("tiny-llama")  # its own tokenizer reads a text as a decoder does: <s> text
    assert tiny.tokenizer.convert_ids_to_tokens(prompt_ids(tiny, "the cat")) == ["<s>", "the", "cat"]


def test_bad_input_messages(load):
    with pytest.raises(CaptureError, match="prompt is empty"):
        generate_lm(load("tiny-llama"), "  ")
    with pytest.raises(CaptureError, match="not a decoder-only"):
        generate_lm(load("tiny-bart"), PROMPT)
    with pytest.raises(CaptureError, match="leaves no room to generate"):
        generate_lm(load("tiny-llama"), "word " * 300)
    with pytest.raises(CaptureError, match="2 to 8 beams"):
        generate_lm(load("tiny-llama"), PROMPT, "beam", num_beams=9)
    gen = generate_lm(load("tiny-gpt2"), "word " * 120, max_new_tokens=50)  # clamped to the position table
    assert len(gen.ids) <= load("tiny-gpt2").max_tokens


def test_json_contract(load):
    gen = generate_lm(load("tiny-llama"), PROMPT, "greedy", max_new_tokens=3, top_k=2)
    out = gen.to_json()
    assert {"model", "method", "source_tokens", "output_tokens", "finished", "steps", "settings"} <= set(out)
    assert out["source_tokens"] == gen.prompt_tokens and out["output_tokens"] == gen.output_tokens
    for i, step in enumerate(out["steps"]):
        assert {"token", "prob", "forced", "top_k", "attention", "lens_rank"} <= set(step)
        assert len(step["attention"]) == len(gen.prompt_ids) + i and abs(sum(step["attention"]) - 1) < 1e-4
        assert len(step["top_k"]) == 2 and len(step["lens_rank"]) == 3
    json.dumps(out)


def test_decoder_names():
    names = decoder_names(builtin_names())
    assert {"tiny-llama", "tiny-gpt2", "tiny-mistral"} <= set(names)
    assert not {"minilm", "tiny-bert", "tiny-bart", "tiny-t5"} & set(names)
    assert set(SHIPPED) <= set(names)


# ----------------------------------------------------------------------------- CLI
def run(*args):
    return subprocess.run([sys.executable, "-m", "viz", "generate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_cli_decoder_json_equals_the_library(load):
    r = run("--model", "tiny-llama", "--text", PROMPT, "--max-new-tokens", "4", "--top-k", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    ref = generate_lm(load("tiny-llama"), PROMPT, max_new_tokens=4, top_k=3)
    assert out == json.loads(json.dumps(ref.to_json()))
    assert len(out["steps"][0]["attention"]) == len(out["source_tokens"])


def test_cli_sampling_and_beam(load):
    r = run("--model", "tiny-gpt2", "--text", PROMPT, "--method", "sample", "--seed", "3", "--temperature", "0.7",
            "--top-p", "0.95", "--max-new-tokens", "5", "--json")
    assert r.returncode == 0, r.stderr
    ref = generate_lm(load("tiny-gpt2"), PROMPT, "sample", seed=3, temperature=0.7, top_p=0.95, max_new_tokens=5)
    assert json.loads(r.stdout)["output_tokens"] == ref.output_tokens
    r = run("--model", "tiny-gpt2", "--text", PROMPT, "--method", "beam", "--num-beams", "3", "--max-new-tokens", "4",
            "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and len(out["beams"]) == 3 and out["output_tokens"] == out["beams"][0]["tokens"]
    assert {"tokens", "score", "log_prob", "token_logprobs", "finished"} == set(out["beams"][0])
    r = run("--model", "tiny-gpt2", "--text", PROMPT, "--max-new-tokens", "2")  # the text form
    assert r.returncode == 0 and r.stdout.startswith("prompt:") and "lens rank by layer" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["--temperature", "0"], "argument --temperature: must be above 0 (got 0)"),
    (["--temperature", "x"], "argument --temperature: must be a number (got 'x')"),
    (["--top-p", "1.5"], "argument --top-p: must be at most 1 (got 1.5)"),
    (["--top-p", "0"], "argument --top-p: must be above 0 (got 0)"),
    (["--seed", "-1"], "argument --seed: must be at least 0 (got -1)"),
    (["--method", "nucleus"], "argument --method: invalid choice"),
    (["--max-new-tokens", "0"], "argument --max-new-tokens: must be at least 1 (got 0)"),  # viz.cli.common, as
    (["--num-beams", "two"], "argument --num-beams: must be an integer (got 'two')"),  # for every subcommand
    (["--temperature", "0.5"], "--temperature only applies to --method sample"),
    (["--method", "beam", "--num-beams", "1"], "beam search needs --num-beams 2 or more"),
    (["--method", "greedy", "--num-beams", "3"], "--num-beams 3 needs --method beam"),
])
def test_cli_flags_are_validated_in_one_line(args, message, capsys):
    """In-process (a subprocess per case would cost ~10 s of imports each); the flags are refused before
    any model loads. `test_cli_errors_on_models_that_do_not_fit` runs the real command."""
    from viz.cli.main import main

    try:
        rc = main(["generate", "--model", "tiny-llama", "--text", PROMPT, *args])
    except SystemExit as e:  # argparse's own refusal: usage line + one error line, exit status 2
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert "Traceback" not in err and len([x for x in err.splitlines() if "error" in x]) == 1


def test_cli_bad_flag_in_a_real_process():
    r = run("--model", "tiny-llama", "--text", PROMPT, "--top-p", "2")
    assert r.returncode == 2 and "argument --top-p: must be at most 1 (got 2)" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_errors_on_models_that_do_not_fit():
    r = run("--model", "tiny-bart", "--text", "a b c", "--method", "sample")
    assert r.returncode == 2 and "decoder-only" in r.stderr and "Traceback" not in r.stderr
    r = run("--model", "minilm", "--text", "hello")
    assert r.returncode == 2 and "Attention page" in r.stderr and "decoder" in r.stderr


def test_cli_encoder_decoder_output_is_unchanged(load):
    """The encoder–decoder contract, byte for byte: what `generate(...).to_json()` printed before decoders."""
    for extra, method, beams in (([], "greedy", 1), (["--num-beams", "3"], "beam", 3)):
        r = run("--model", "tiny-bart", "--text", "a b c", "--max-new-tokens", "4", "--top-k", "3", "--json", *extra)
        assert r.returncode == 0, r.stderr
        ref = generate(load("tiny-bart"), "a b c", method, num_beams=beams, max_new_tokens=4, top_k=3)
        assert r.stdout == json.dumps(ref.to_json()) + "\n"


def test_beam_table_shows_where_each_beam_departs(load):
    tok = load("tiny-llama").tokenizer
    beams = [glm.Beam(["the", "cat", "sat"], [1996, 4937, 2938], [-1.0, -1.0, -1.0], -1.0, False),
             glm.Beam(["the", "cat", "ran"], [1996, 4937, 2743], [-1.0, -1.0, -2.5], -1.5, True)]
    gen = glm.LMGeneration("m", "beam", ["[CLS]"], [101], [], False, {}, beams=beams)
    rows = glm.beam_table(gen, tok)
    assert [r["ending"] for r in rows] == ["…sat", "…ran"] and rows[1]["text"] == "the cat ran"
    assert rows[1]["ended"] and rows[0]["score"] == -1.0 and rows[1]["log p"] == -4.5


LONG = ("The old lighthouse keeper climbed the stairs every evening to light the lamp. Ships passing the rocky "
        "coast relied on its beam to find the harbour. One stormy night the lamp failed, and he carried a lantern "
        "to the top of the tower, waving it until dawn so that no sailor would be lost on the rocks below")


def test_generation_can_go_on_past_end_of_text(load):
    """atlas-lm read a 60-word prompt and gave '.' then <|endoftext|>: its training packs sentences behind that
    token, so past it comes the next sentence. Reference: greedy argmax of a full forward per step, no cache."""
    import torch

    bundle = load("atlas-lm")
    stopped = generate_lm(bundle, LONG, "greedy", max_new_tokens=12, lens=False)
    gone_on = generate_lm(bundle, LONG, "greedy", max_new_tokens=12, lens=False, stop_at_eos=False)
    eos = bundle.config.eos_token_id
    assert [s.token_id for s in stopped.steps] == [s.token_id for s in gone_on.steps][: len(stopped.steps)]
    assert stopped.finished and stopped.steps[-1].token_id == eos and len(stopped.steps) < 12  # the defect
    assert len(gone_on.steps) == 12 and not gone_on.finished and eos in [s.token_id for s in gone_on.steps]
    ids = prompt_ids(bundle, LONG)
    with torch.inference_mode():
        for s in gone_on.steps:
            logits = bundle.model(input_ids=torch.tensor([ids])).logits[0, -1]
            assert s.token_id == int(logits.argmax())
            ids.append(s.token_id)
