"""The memory guard: estimate what a capture will hold before running it, and refuse what would not fit.

A capture keeps, per stack, `layers x heads x rows x keys` attention weights (float32 once on the CPU),
per-head q/k/v, hidden states `(layers + 1) x rows x dim` and, where asked, logits `rows x vocab`; while
a recorded layer runs, its full eager weights `heads x rows x keys` exist on the device in the model's
dtype (a few times over: scores, softmax, dropout). 32 layers x 32 heads x 4096^2 in fp32 is 68 GB; the
same with one query row is 8 MB. The budget is `VIZ_CAPTURE_MB`, else a quarter of the memory free now
(RAM for the CPU, the device's free memory for a GPU). A request over it gets `CaptureTooLarge`, whose
message says how to narrow it — never an out-of-memory crash of the server.
"""

from __future__ import annotations

import os
import time

import torch

from viz.core.errors import CaptureTooLarge


_MEMINFO = {"at": -1.0, "bytes": 0}  # /proc/meminfo read at most every MEMINFO_TTL s (one read ~1 ms)
MEMINFO_TTL = 0.5


def available_bytes(device: torch.device) -> int:
    """Memory free now on `device` (RAM for the CPU: MemAvailable from /proc/meminfo, re-read at most every
    MEMINFO_TTL seconds: reading it cost a short capture ~1 ms, 10 % of its forward)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    now = time.monotonic()
    if now - _MEMINFO["at"] < MEMINFO_TTL:
        return _MEMINFO["bytes"]
    free = 8 << 30
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    _MEMINFO.update(at=now, bytes=free)
    return free


def budget_bytes(device: torch.device) -> int:
    mb = os.environ.get("VIZ_CAPTURE_MB", "").strip()
    if mb:
        return int(float(mb) * (1 << 20))
    return available_bytes(device) // 4


def _dims(bundle, stack: str) -> tuple[int, int, int, int]:
    """(heads, kv heads, head_dim, d_model) of one stack, from the config."""
    cfg = bundle.config
    H, KV = bundle.n_heads(stack), bundle.n_kv_heads(stack)
    d_model = next(int(getattr(cfg, n)) for n in ("hidden_size", "d_model", "n_embd", "dim") if getattr(cfg, n, None))
    D = int(getattr(cfg, "head_dim", None) or getattr(cfg, "d_kv", None) or d_model // H)
    return H, KV, D, d_model


def estimate(bundle, lengths: dict[str, int], layers: dict[str, list[int]], rows: dict[str, list[int]], *,
             weights: bool = True, qkv: bool = True, hidden: bool = True, logits: bool = False) -> dict[str, int]:
    """Bytes a capture would hold: {'kept': on the CPU afterwards, 'transient': on the device while it runs}."""
    kept = transient = 0
    item = torch.finfo(bundle.dtype).bits // 8
    for stack in bundle.arch.stacks:
        H, KV, D, d_model = _dims(bundle, stack)
        keys = lengths["encoder" if stack in ("encoder", "cross") else stack]
        L, R = len(layers[stack]), len(rows[stack])
        kept += 4 * L * H * R * keys * weights
        kept += 4 * L * (H * R + 2 * KV * keys) * D * qkv
        transient = max(transient, 3 * item * H * (R if R < lengths[stack] else lengths[stack]) * keys)
        if hidden and stack != "cross":
            kept += 4 * (bundle.stack_layers(stack) + 1) * lengths[stack] * d_model  # all rows before the slice
    if logits:
        vocab = int(getattr(bundle.config, "vocab_size", 0) or 0)
        out_rows = len(rows["encoder" if bundle.kind == "encoder" else "decoder"])
        kept += 4 * out_rows * vocab
    return {"kept": kept, "transient": transient}


def check_budget(bundle, lengths, layers, rows, **what) -> None:
    """Raise CaptureTooLarge when the estimate exceeds the budget of the bundle's device."""
    need = estimate(bundle, lengths, layers, rows, **what)
    total = need["kept"] + need["transient"]
    budget = budget_bytes(bundle.device)
    if total <= budget:
        return
    parts = ", ".join(f"{s}: {len(layers[s])} layers x {bundle.n_heads(s)} heads x {len(rows[s])} rows x "
                      f"{lengths['encoder' if s == 'cross' else s]} keys" for s in bundle.arch.stacks)
    raise CaptureTooLarge(
        f"This capture would hold about {total / 2**20:,.0f} MB ({parts}), over the memory budget of "
        f"{budget / 2**20:,.0f} MB. Narrow it: fewer layers (e.g. --layers 0,-1), only the last query row "
        "(--rows -1), or a shorter text; or raise the budget with VIZ_CAPTURE_MB.")
