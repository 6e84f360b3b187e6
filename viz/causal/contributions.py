"""How much of a residual-stream vector each of its parts accounts for: the proximity contributions of
Ferrando & Voita 2024 ("Information Flow Routes: Automatically Interpreting Language Models at Scale", §3;
Ferrando et al. 2022, "Measuring the Mixing of Contextual Information in the Transformer", ALTI), the
definition Meta's llm-transparency-tool draws its graphs with.

A sublayer's result is a sum  y = Σ_k z_k (+ a bias that is no part). Part z_k's contribution is

    c_k = max(ε, ‖y‖₁ − ‖y − z_k‖₁) / Σ_m max(ε, ‖y‖₁ − ‖y − z_m‖₁),   ε = 1e-5

(how much closer to y the part gets than nothing at all, never negative), so the parts of every y sum to 1.
For an attention sublayer the parts are, for every head h and key token j, α_ij^h · v_j^h W_O^h (the head's rows of
the output projection; `f[h, j] = v_j^h W_O^h`), plus the residual that entered the sublayer.

Cost. The work is the L1 distances: rows × heads × keys × d numbers per layer. They are computed without ever
holding the parts: `z − y` comes out of one fused multiply-add (`torch.addcmul`) over a chunk of rows, the
distance out of one reduction in the cancellation-free form of `closeness` (its linear term is one matmul),
the chunk sized so the temporary stays under `chunk_mb`. A key that no row of the chunk attends to (the causal
mask: every later token) has α = 0 exactly, so its part is 0 and its contribution is ε exactly: it is never
computed.

Shapes (torch in, torch out; R rows = query tokens, K keys, H heads, D d_model):
    y, resid   [R, D]       the whole and the residual part
    alpha      [H, R, K]    attention weights of those rows
    f          [H, K, D]    each head's transformed values v·W_O^h
    gain       [R, D]       optional per-row elementwise factor on the attention parts (a norm after the sublayer)
    returns    heads [R, K, H], residual [R]
"""

from __future__ import annotations

import torch

EPS = 1e-5
CHUNK_MB = 64  # bound on the temporary [rows, heads, keys, d] block of one chunk


def closeness(y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """‖y‖₁ − ‖y − z‖₁ over the last axis (broadcasting), without its cancellation: per element, with s = sign(y)
    (+1 at 0), |y| − |y − z| = s·z − 2·relu(s·(z − y)). Differences of two L1 norms of size ‖y‖₁ lose the
    small parts to float32 rounding (thousands of near-zero parts then bias the normaliser); this form is exact
    for a part that does not overshoot y in a coordinate."""
    s = torch.where(y >= 0, 1.0, -1.0)
    return (s * z).sum(-1) - 2.0 * (s * (z - y)).clamp_(min=0).sum(-1)


def contributions(y: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """Normalised contributions of `parts [P, ..., D]` to `y [..., D]` -> [P, ...] (sums to 1 over P).
    The plain form, for few parts (a feed-forward and its residual, a few thousand neurons)."""
    raw = closeness(y, parts).clamp_(min=EPS)
    return raw / raw.sum(0, keepdim=True)


def ffn_contributions(y: torch.Tensor, resid: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(feed-forward [R], residual [R]) shares of y = resid + out."""
    c = contributions(y, torch.stack([out, resid]))
    return c[0], c[1]


def _rows_per_chunk(H: int, K: int, D: int, chunk_mb: float) -> int:
    return max(1, int(chunk_mb * 2**20 // (4 * max(1, H * K * D))))


def attention_contributions(y: torch.Tensor, resid: torch.Tensor, alpha: torch.Tensor, f: torch.Tensor,
                            gain: torch.Tensor | None = None, chunk_mb: float = CHUNK_MB,
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(heads [R, K, H], residual [R]) normalised shares of every (head, key) part and of the residual in y.

    part[i, h, j] = alpha[h, i, j] · f[h, j] (· gain[i] when given). Keys no row of a chunk attends to are
    skipped: their parts are zero, their raw contribution ε exactly."""
    H, R, K = alpha.shape
    D = f.shape[-1]
    y, resid, alpha, f = y.float(), resid.float(), alpha.float(), f.float()
    sign = torch.where(y >= 0, 1.0, -1.0)  # [R, D]
    raw = torch.full((R, K, H), EPS, dtype=torch.float32)
    step = _rows_per_chunk(H, K, D, chunk_mb)
    buf = torch.empty(min(step, R) * H * K * D)  # one temporary, reused by every chunk (no page faults)
    for r0 in range(0, R, step):
        r1 = min(R, r0 + step)
        a = alpha[:, r0:r1]  # [H, c, K]
        keys = torch.nonzero((a != 0).any(0).any(0)).flatten()
        if keys.numel() == 0:
            continue
        k0, k1 = int(keys[0]), int(keys[-1]) + 1  # a contiguous span: one slice instead of a gather
        a = a[:, :, k0:k1].permute(1, 0, 2)  # [c, H, k]
        s = sign[r0:r1]
        fk = f[None, :, k0:k1]  # [1, H, k, D]
        if gain is not None:
            fk = fk * gain[r0:r1, None, None, :]  # [c, H, k, D]
            lin = torch.einsum("chkd,cd->chk", fk, s)
        else:
            lin = torch.einsum("hkd,cd->chk", fk[0], s)  # Σ_e s_e f_e: one matmul
        w = buf[:(r1 - r0) * H * (k1 - k0) * D].view(r1 - r0, H, k1 - k0, D)
        torch.addcmul(-y[r0:r1, None, None, :], a.unsqueeze(-1), fk, out=w)  # z − y
        over = w.mul_(s[:, None, None, :]).clamp_(min=0).sum(-1)  # Σ_e relu(s·(z − y))
        raw[r0:r1, k0:k1] = (a * lin - 2.0 * over).clamp_(min=EPS).permute(0, 2, 1)
    res = closeness(y, resid).clamp_(min=EPS)  # [R]
    total = raw.sum((1, 2)) + res
    return raw.div_(total[:, None, None]), res / total

