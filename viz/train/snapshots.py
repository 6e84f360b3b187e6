"""Snapshots of a studio run's heads: the attention of one probe sentence for every head and per-head statistics
over a probe corpus (the Head atlas's definitions), taken every `snapshot_every` steps, and their arrays on disk
(training/snapshots.npz; shapes in viz.train.studio's docstring)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from viz.train import mlm
from viz.train.studio_setup import SCALARS, SCORES, STATS

def head_stats(attn: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor, cls_id: int, sep_id: int) -> dict:
    """Per-head statistics of a padded batch, with the Head atlas's definitions (viz.analysis.head_stats,
    Clark et al. 2019 §3): attn [B, L, H, T, T], mask [B, T] bool, ids [B, T] -> {stat: [L, H] numpy}.
    Rows of [CLS]/[SEP] are not counted; prev/next count only rows whose neighbour is a real token;
    a head's value is the mean over all counted rows (token-weighted)."""
    from viz.analysis.head_stats import row_stats, row_weights

    is_cls, is_sep = ids == cls_id, ids == sep_id
    groups = torch.stack([is_cls, is_sep, torch.zeros_like(mask)], -1)  # punctuation is not tracked here
    per_row = row_stats(attn, mask, groups)  # {stat: [B, L, H, T]}
    weights = row_weights(mask, mask & ~(is_cls | is_sep))  # {stat: [B, T]}
    out = {}
    for s in STATS:
        w = weights[s][:, None, None, :]  # [B, 1, 1, T]
        out[s] = ((per_row[s] * w).sum((0, 3)) / w.sum((0, 3)).clamp_min(1)).numpy()  # [L, H]
    return out


def special_ids(tokenizer) -> tuple[int, int]:
    """(start, end) ids whose share the statistics report as cls / sep: [CLS]/[SEP] for WordPiece, <s>/</s> for
    the word-level seq2seq vocabularies (whose sources carry only </s>, so their cls share is 0)."""
    if tokenizer.cls_token_id is not None:
        return tokenizer.cls_token_id, tokenizer.sep_token_id
    return tokenizer.bos_token_id, tokenizer.eos_token_id


def target_ids(tokenizer, task: str, target: str) -> list[int]:
    """The decoder's labels for `target`: WordPiece ids without the leading [CLS] (denoising: the decoder
    starts from [CLS]); word-level ids ending in </s> (synthetic tasks)."""
    if task == "denoise":
        return mlm.encode(tokenizer, [target])[0][1:]
    return tokenizer(text_target=[target])["input_ids"][0]


@torch.inference_mode()
def take_snapshot_encdec(model, tokenizer, task: str, probe: str, probe_target: str,
                         probe_corpus: list[str]) -> dict:
    """An encoder–decoder's heads now -> dict(probe_attn [L, H, T, T] (encoder self-attention), probe_cross
    [L, H, U, T] (teacher-forced on the probe's target; row u = the decoder position whose input is
    decoder_inputs[u]), <stat> [L, H] over the probe corpus (encoder))."""
    was_training = model.training
    model.eval()
    try:
        src = tokenizer([probe], truncation=True, max_length=mlm.MAX_LEN, return_tensors="pt")
        labels = torch.tensor([target_ids(tokenizer, task, probe_target)[: mlm.MAX_LEN]])
        dec_in = torch.cat([torch.tensor([[model.config.decoder_start_token_id]]), labels[:, :-1]], 1)
        out = model(**src, decoder_input_ids=dec_in, output_attentions=True)
        probe_attn = torch.stack([a[0] for a in out.encoder_attentions]).float().numpy()  # [L, H, T, T]
        probe_cross = torch.stack([a[0] for a in out.cross_attentions]).float().numpy()  # [L, H, U, T]
        enc = tokenizer(probe_corpus or [probe], truncation=True, max_length=mlm.MAX_LEN)["input_ids"]
        ids, mask = mlm.collate(enc, tokenizer.pad_token_id)
        attn = torch.stack(list(model.get_encoder()(input_ids=ids, attention_mask=mask,
                                                    output_attentions=True).attentions), dim=1)  # [B, L, H, T, T]
        stats = head_stats(attn, mask.bool(), ids, *special_ids(tokenizer))
    finally:
        model.train(was_training)
    return dict(probe_attn=probe_attn, probe_cross=probe_cross, **stats)


@torch.inference_mode()
def take_snapshot(model, tokenizer, probe: str, probe_corpus: list[str]) -> dict:
    """The model's heads now -> dict(probe_attn [L, H, T, T] float32, <stat> [L, H]). Leaves train/eval mode
    as it found it (eval inside: no dropout in what we record)."""
    was_training = model.training
    model.eval()
    try:
        enc = tokenizer([probe], truncation=True, max_length=mlm.MAX_LEN, return_tensors="pt")
        out = model.base_model(**enc, output_attentions=True)
        probe_attn = torch.stack([a[0] for a in out.attentions]).float().numpy()  # [L, H, T, T]
        ids, mask = mlm.collate(mlm.encode(tokenizer, probe_corpus or [probe]), tokenizer.pad_token_id)
        out = model.base_model(input_ids=ids, attention_mask=mask, output_attentions=True)
        attn = torch.stack(list(out.attentions), dim=1)  # [B, L, H, T, T]
        stats = head_stats(attn, mask.bool(), ids, tokenizer.cls_token_id, tokenizer.sep_token_id)
    finally:
        model.train(was_training)
    return dict(probe_attn=probe_attn, **stats)


def snapshot_arrays(snaps: list[dict]) -> dict[str, np.ndarray]:
    """Snapshots -> arrays: steps [S], eval_top1 [S] (NaN where none), probe_attn [S, L, H, T, T], <stat> [S, L, H],
    probe_cross [S, L, H, U, T] for an encoder–decoder; a decoder's <score> [S, L, H] and icl, eval_loss,
    first_half_loss [S] instead of the statistics."""
    out = {"steps": np.array([s["step"] for s in snaps]),
           "eval_top1": np.array([np.nan if s["eval_top1"] is None else s["eval_top1"] for s in snaps]),
           "probe_attn": np.stack([s["probe_attn"] for s in snaps]).astype(np.float32)}
    if "probe_cross" in snaps[0]:
        out["probe_cross"] = np.stack([s["probe_cross"] for s in snaps]).astype(np.float32)
    for stat in STATS + SCORES:
        if stat in snaps[0]:
            out[stat] = np.stack([s[stat] for s in snaps])
    for key in SCALARS:
        if key in snaps[0]:
            out[key] = np.array([s[key] for s in snaps], dtype=np.float64)
    return out


def load_snapshots(path: str | Path) -> list[dict]:
    if not Path(path).exists():
        return []
    z = np.load(path)
    extra = [k for k in ("probe_cross",) + STATS + SCORES + SCALARS if k in z.files]
    return [dict(step=int(z["steps"][i]), eval_top1=None if np.isnan(z["eval_top1"][i]) else float(z["eval_top1"][i]),
                 probe_attn=z["probe_attn"][i], **{s: z[s][i] if z[s].ndim > 1 else float(z[s][i]) for s in extra})
            for i in range(len(z["steps"]))]


def head_keys(arrays: dict) -> tuple[str, ...]:
    """The per-head [S, L, H] series a run's snapshots hold: encoder statistics, or decoder scores."""
    return tuple(k for k in SCORES + STATS if k in arrays)
