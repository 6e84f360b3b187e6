"""Where a model runs and in what precision: device and dtype names, and the model keys that carry them
('minilm', 'minilm@cuda:bfloat16') through caches, jobs and workers."""

from __future__ import annotations

import torch

from viz.core.errors import ModelLoadError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"auto": None, "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | None = None) -> torch.device:
    """'auto' (or None): CUDA, else Apple MPS, else the CPU. Asking for a device that is absent is an error."""
    device = (device or "auto").strip().lower()
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    kind = device.split(":")[0]
    if kind not in DEVICES:
        raise ModelLoadError(f"Unknown device '{device}': use one of {', '.join(DEVICES)}.")
    if kind == "cuda" and not cuda or kind == "mps" and not mps:
        raise ModelLoadError(f"This machine has no {kind.upper()} device; use --device cpu (or auto).")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto' (or None): bfloat16 on a GPU, float32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    key = (dtype or "auto").strip().lower()
    if key not in DTYPES:
        raise ModelLoadError(f"Unknown dtype '{dtype}': use one of auto, float32, bfloat16, float16.")
    chosen = DTYPES[key]
    if chosen is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    return chosen


def model_key(name: str, device: str = "auto", dtype: str = "auto") -> str:
    """One string for a model and where it runs ('minilm', 'minilm@cpu:bfloat16'): cache keys stay strings."""
    if (device or "auto") == "auto" and (dtype or "auto") == "auto":
        return name
    return f"{name}@{device or 'auto'}:{dtype or 'auto'}"


def split_key(key: str) -> tuple[str, str, str]:
    """`model_key` backwards: (name, device, dtype). A name may itself contain '@' only before a path."""
    name, sep, where = key.rpartition("@")
    if not sep or ":" not in where or "/" in where:
        return key, "auto", "auto"
    device, _, dtype = where.rpartition(":")
    return name, device, dtype
