"""Benchmark (not a test): capture on a Llama-3.2-1B-shaped decoder, against transformers alone.

Shape: d_model 2048, 32 query heads over 8 key/value heads (head_dim 64), FFN 8192, RoPE, RMSNorm,
SwiGLU, tied embeddings — Llama-3.2-1B's layer — with 4 layers and a 32k vocabulary to fit a 2-core,
24 GB machine; random weights. 512 tokens. Three pairs, interleaved in one run (median of REPEATS):

1. capture of one layer and the last row (`layers=[0], rows=[-1]`)  vs  a plain SDPA forward;
2. full capture (every layer x head x token^2, q/k/v, hidden states, as numpy)  vs  transformers'
   eager forward with `output_attentions=True, output_hidden_states=True`;
3. peak RSS of (1) vs the plain forward, each in a fresh child process (VmHWM reset after loading
   through /proc/self/clear_refs, so only the forward's own peak above the weights counts toward it,
   on top of what the process held).

Every forward computes the last position's logits only (`logits_to_keep=1`) on both sides.
Ratios, not absolute times, are the result. On a GPU (`--device cuda`, bf16) the shape can grow:
`--layers-total 32 --tokens 4096 --capture-layers 0,15,31` is an 8B-like depth at 4k tokens.

Run: .venv/bin/python bench/bench_bigmodel.py [--repeats 5] [--threads 2] [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from viz.core.env import quiet  # noqa: E402


def build(args):
    """A random Llama-3.2-1B-shaped bundle (seeded) and the input ids of `args.tokens` tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from viz.core.arch import arch_for
    from viz.core.models import ModelBundle, minilm_dir, resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    cfg = LlamaConfig(hidden_size=args.d_model, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                      intermediate_size=args.ffn, num_hidden_layers=args.layers_total, vocab_size=32000,
                      max_position_embeddings=max(2048, args.tokens + 8), tie_word_embeddings=True,
                      rope_theta=500000.0)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    from transformers import AutoTokenizer

    bundle = ModelBundle("llama-1b-shaped", model, AutoTokenizer.from_pretrained(minilm_dir()), arch_for("llama"))
    words = ("the model reads every word and attends to the others in turn " * 400).split()
    text = " ".join(words)
    ids = bundle.tokenizer(text, truncation=True, max_length=args.tokens)["input_ids"]
    text = bundle.tokenizer.decode(ids[1:-1])
    return bundle, text


def plain_sdpa(bundle, ids):
    bundle.model.set_attn_implementation("sdpa")
    try:
        with torch.inference_mode():
            return bundle.model(input_ids=ids, use_cache=False, logits_to_keep=1)
    finally:
        bundle.model.set_attn_implementation("atlas")


def plain_eager(bundle, ids):
    bundle.model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = bundle.model(input_ids=ids, use_cache=False, logits_to_keep=1, output_attentions=True,
                               output_hidden_states=True)
            return [a.float().cpu().numpy() for a in out.attentions]  # what a user of eager would keep
    finally:
        bundle.model.set_attn_implementation("atlas")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, *a) -> float:
    t = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t


def vm(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def child(args) -> None:
    """One forward of one kind in this fresh process; prints {'rss_before', 'peak'} in bytes."""
    from viz.core.capture import capture

    bundle, text = build(args)
    ids = bundle.tokenizer(text, return_tensors="pt")["input_ids"].to(bundle.device)
    import gc

    gc.collect()
    before = vm("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM: the peak from here on is the forward's
    if args.child == "plain":
        plain_sdpa(bundle, ids)
    else:
        capture(bundle, text, layers=[0], rows=[-1])
    print(json.dumps({"rss_before": before, "peak": vm("VmHWM:")}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--d-model", type=int, default=2048)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--ffn", type=int, default=8192)
    p.add_argument("--layers-total", type=int, default=4)
    p.add_argument("--capture-layers", default="0", help="layers of the selective capture (comma-separated)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--skip-full", action="store_true", help="no full capture (too big on long inputs)")
    p.add_argument("--child", choices=["plain", "one"], help=argparse.SUPPRESS)
    args = p.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args)

    from viz.core.capture import capture

    bundle, text = build(args)
    dev = bundle.device
    ids = bundle.tokenizer(text, return_tensors="pt")["input_ids"].to(dev)
    layers = [int(x) for x in args.capture_layers.split(",")]
    T = ids.shape[1]
    print(f"Llama-shaped decoder: {args.layers_total} layers, d_model {args.d_model}, {args.heads} heads over "
          f"{args.kv_heads} kv heads, FFN {args.ffn}, vocab 32000; {T} tokens; {dev} {bundle.dtype}; "
          f"{torch.get_num_threads()} torch threads; median of {args.repeats}, interleaved")

    def one():
        capture(bundle, text, layers=layers, rows=[-1])
        sync(dev)

    def full():
        capture(bundle, text)
        sync(dev)

    def base():
        plain_sdpa(bundle, ids)
        sync(dev)

    def eager():
        plain_eager(bundle, ids)
        sync(dev)

    pairs = [("capture layers %s, last row" % args.capture_layers, one, "plain SDPA forward", base)]
    if not args.skip_full:
        pairs.append(("full capture", full, "eager + output_attentions", eager))
    for fn in (one, base) + (() if args.skip_full else (full, eager)):
        fn()  # warm-up
    times = {name: [] for pair in pairs for name in (pair[0], pair[2])}
    for _ in range(args.repeats):
        for ours, f_ours, theirs, f_theirs in pairs:
            times[theirs].append(timed(f_theirs))
            times[ours].append(timed(f_ours))
    results = {}
    for ours, _, theirs, _ in pairs:
        a, b = statistics.median(times[ours]), statistics.median(times[theirs])
        results[ours] = b and a / b
        print(f"  {ours:<34} {a * 1e3:9.0f} ms   {theirs:<26} {b * 1e3:9.0f} ms   ratio {a / b:.3f}x")
    if dev.type == "cpu":
        rss = {}
        for kind in ("plain", "one"):
            out = subprocess.run([sys.executable, __file__, "--child", kind] + sys.argv[1:], check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rss[kind] = json.loads(out)
        ratio = rss["one"]["peak"] / rss["plain"]["peak"]
        print(f"  peak RSS: capture one layer, last row {rss['one']['peak'] / 2**20:,.0f} MB, plain SDPA forward "
              f"{rss['plain']['peak'] / 2**20:,.0f} MB (weights and imports {rss['plain']['rss_before'] / 2**20:,.0f}"
              f" MB before either): ratio {ratio:.3f}x")
    elif dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base()
        p_base = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        one()
        p_one = torch.cuda.max_memory_allocated()
        print(f"  peak GPU memory: capture {p_one / 2**30:.2f} GiB, plain SDPA {p_base / 2**30:.2f} GiB: "
              f"ratio {p_one / p_base:.3f}x")


if __name__ == "__main__":
    main()
