"""Benchmark (not a test): what step-through generation costs over plain `model.generate`, in one run.

A random Llama-shaped decoder (8 layers, d_model 512, 8 query heads over 4 kv heads, the MiniLM
vocabulary of 30,522) continues a 256-token prompt by 16 tokens, greedily:

    generate        `model.generate` (SDPA, KV cache, nothing recorded): the baseline
    steps           `generate_lm(lens=False)`: KV cache, each step's query row recorded in every layer
    steps + lens    `generate_lm()`: plus the logit lens of every layer at every step
    no cache        what the KV cache saves: each step a full forward over the whole sequence, recording
                    every layer's full [T, T] attention (the teacher-forced way of the encoder–decoder page)

and the bytes kept per step (one query row per layer and head, against full [T, T] matrices).
Ratios, not absolute times, are the result: timings on a shared 2-core machine are noisy.
Run: .venv/bin/python bench/bench_generate.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from viz.core.env import quiet  # noqa: E402
from viz.core.arch import DECODER, arch_for  # noqa: E402
from viz.core.capture import recording  # noqa: E402
from viz.tasks.generate_lm import generate_lm, prompt_ids  # noqa: E402
from viz.core.models import ModelBundle, _load_tiny  # noqa: E402

PROMPT_TOKENS, NEW, REPEATS = 256, 16, 3


def bundle() -> ModelBundle:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=30522, hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                      num_key_value_heads=4, intermediate_size=1408, max_position_embeddings=1024,
                      bos_token_id=101, eos_token_id=102, pad_token_id=0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    _, tok = _load_tiny("llama")
    return ModelBundle("bench-llama", model, tok, arch_for("llama"))


def best(fn) -> float:
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    quiet()
    torch.set_num_threads(1)
    b = bundle()
    words = ("the model reads every word and attends to the others in turn " * 60).split()
    text = " ".join(words[:PROMPT_TOKENS])
    ids = prompt_ids(b, text)[:PROMPT_TOKENS]
    text = b.tokenizer.decode(ids[1:])
    ids = prompt_ids(b, text)
    seq = torch.tensor([ids])

    def plain():
        with torch.inference_mode():
            b.model.generate(input_ids=seq, attention_mask=torch.ones_like(seq), max_new_tokens=NEW, do_sample=False,
                             min_new_tokens=NEW)

    def no_cache():
        s = seq
        with torch.inference_mode():
            for _ in range(NEW):
                with recording(b, qkv=False):
                    out = b.model(input_ids=s, use_cache=False)
                s = torch.cat([s, out.logits[:, -1:].argmax(-1)], 1)

    gen = generate_lm(b, text, max_new_tokens=NEW)
    assert len(gen.steps) == NEW
    base = best(plain)
    rows = {"generate": base,
            "steps": best(lambda: generate_lm(b, text, max_new_tokens=NEW, lens=False)),
            "steps + lens": best(lambda: generate_lm(b, text, max_new_tokens=NEW)),
            "no cache": best(no_cache)}
    L, H, T = b.n_layers, b.n_heads(DECODER), len(ids) + NEW
    print(f"bench-llama: {L} layers x {H} heads, d_model 512, prompt {len(ids)} tokens, {NEW} new tokens, "
          f"torch threads 1, median of {REPEATS}")
    for name, sec in rows.items():
        print(f"  {name:14s} {sec:7.2f} s   {sec / base:5.2f}x generate")
    print(f"  kept per step: one row {L * H * T * 4 / 1e3:.0f} kB; full [T, T] matrices {L * H * T * T * 4 / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
