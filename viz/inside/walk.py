"""Inside one layer: a query token's walk through one attention head and through the whole layer, with the
model's real numbers, recomposed exactly (Vaswani et al. 2017, §3.2: Attention(Q, K, V) = softmax(QKᵀ/√d_k)V;
§3.2.2: heads concatenated and projected; §3.1: every sublayer wrapped in a residual add and a norm).

What is captured (`capture(..., layers=[L], rows=[token], details=True)`) is exactly what the model's
attention function received: q, k and v after RoPE, the additive mask (padding, causal look-ahead, sliding
window), T5's position bias, the scaling and Gemma 2's soft-cap. From those alone:

    raw_scores[i] = q · k_i · scaling                       [key]
    scores[i]     = softcap(raw_scores[i]) + bias[i]        [key]   (softcap: c·tanh(s/c); bias: T5)
    weights       = softmax(scores + mask)                  [key]   (mask: 0 or -inf)
    head_output   = Σ_i weights[i] · v_i                    [head_dim]
    contribution  = head_output @ W_O[head]                 [d_model]  (this head's rows of the output projection)

and the layer (`viz.inside.recipes`): concat of heads -> output projection -> residual add -> norms -> feed-forward
-> residual add -> norms, each through the model's own modules, compared with the model's next hidden state:
`recomposition_error` = max |ours - model| (<= 1e-4 in float32 for every family in the table).
Independently, `projected_scores` recomputes the scores from the projection weights, W_q·x and W_k·x (with
the family's own RoPE), on the layer input.

Shapes: H heads, KV key/value heads, K keys, d head_dim, D d_model. Everything leaves as numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from viz.core.arch import CROSS, DECODER, ENCODER
from viz.core.capture import Capture, CaptureError, capture
from viz.core.models import ModelBundle
from viz.inside.recipes import NoRecipe, layer_module, recipe_for
from viz.inside.recompose import LayerWalk, proj_parts, projected_scores, row_scores, row_weights, walk_layer

STACK_NAMES = {ENCODER: "encoder self-attention", DECODER: "decoder (masked) self-attention",
               CROSS: "cross-attention (decoder queries, encoder keys/values)"}


@dataclass
class InsideRun:
    """One capture for (stack, layer, token) and everything computed from it for every head."""

    cap: Capture
    stack: str
    layer: int
    token: int
    weights: np.ndarray  # [H, K] recomputed from q, k, mask, bias
    contributions: np.ndarray | None  # [H, D] each head's output through the output projection (no bias)
    out_bias: np.ndarray | None  # [D] the output projection's bias (zeros where it has none)
    layer_walk: LayerWalk | None
    layer_note: str = ""  # why there is no layer walk
    projected: np.ndarray | None = None  # [H, K] scores from W_q·x and W_k·x (+ RoPE), before the mask
    projection_note: str = ""

    @property
    def tokens(self) -> tuple[list[str], list[str]]:
        return self.cap.axis_tokens(self.stack)


@dataclass
class HeadWalk:
    """One head, one query token: every number of softmax(q·kᵀ·scaling + bias + mask)·V."""

    stack: str
    layer: int
    head: int
    token: int
    kv_head: int
    query_token: str
    tokens: list[str]  # key tokens
    query: np.ndarray  # [d]
    keys: np.ndarray  # [K, d]
    values: np.ndarray  # [K, d]
    raw_scores: np.ndarray  # [K] q·k·scaling
    scores: np.ndarray  # [K] soft-capped, plus the position bias
    bias: np.ndarray | None  # [K] (T5)
    mask: np.ndarray  # [K] 0 / -inf
    weights: np.ndarray  # [K]
    captured: np.ndarray  # [K] the model's own attention row
    head_output: np.ndarray  # [d]
    contribution: np.ndarray | None  # [D]
    scaling: float
    softcap: float | None
    projected: np.ndarray | None = None  # [K] scores recomputed from the projection weights

    @property
    def products(self) -> np.ndarray:
        """[K, d] q ⊙ k_i, element by element (what bertviz's neuron view shows); rows sum to q·k_i."""
        return self.query[None, :] * self.keys

    @property
    def weighted_values(self) -> np.ndarray:
        """[K, d] weights[i] · v_i; they sum to head_output."""
        return self.weights[:, None] * self.values

    @property
    def weight_error(self) -> float:
        return float(np.abs(self.weights - self.captured).max())

    @property
    def projection_error(self) -> float | None:
        if self.projected is None:
            return None
        ok = np.isfinite(self.mask)
        return float(np.abs(self.projected - self.raw_scores)[ok].max()) if ok.any() else 0.0


# ----------------------------------------------------------------------------- the entry points
def selection(bundle: ModelBundle, stack: str, layer: int, token: int) -> tuple[dict, dict]:
    """capture()'s per-stack (layers, rows) for one layer and one query token of `stack`: a decoder layer
    holds both its self- and its cross-attention; the encoder keeps every row (the cross keys' source)."""
    if stack not in bundle.arch.stacks:
        raise CaptureError(f"This {bundle.kind} model has no {STACK_NAMES.get(stack, stack)}; "
                           f"pick one of: {', '.join(bundle.arch.stacks)}.")
    inside_decoder = stack in (DECODER, CROSS)
    layers, rows = {}, {}
    for s in bundle.arch.stacks:
        mine = (s in (DECODER, CROSS)) == inside_decoder
        layers[s] = [layer] if mine else []
        rows[s] = [token] if mine else None
    return layers, rows


def inside(bundle: ModelBundle, text: str, target: str | None = None, *, stack: str | None = None,
           layer: int = 0, token: int = -1) -> InsideRun:
    """Capture layer `layer` at query position `token` (negative: from the end) and walk it: weights of every
    head, each head's contribution, the whole layer recomposed, the scores from the projection weights.
    `stack`: encoder | decoder | cross (default: the model's first). Raises CaptureError."""
    stack = stack or bundle.arch.stacks[0]
    layers, rows = selection(bundle, stack, layer, token)
    cap = capture(bundle, text, target, layers=layers, rows=rows, details=True)
    layer, token = cap.layers[stack][0], cap.rows[stack][0]
    run = InsideRun(cap, stack, layer, token, row_weights(cap, stack), None, None, None)
    # The layer walk, the contributions and the projection check are extras over the head walk: a family whose
    # modules differ from its recipe (a variant nobody tested) gets a note on the page, never a traceback.
    try:
        walk = run.layer_walk = walk_layer(bundle, cap, stack, layer, token)
    except Exception as e:  # noqa: BLE001
        walk, run.layer_note = None, _why(e, "layer walk")
    try:
        proj = _output_projection(bundle, stack, layer)
        heads = np.einsum("hk,hkd->hd", run.weights, cap.head_values(stack)[0]).astype(np.float32)
        run.contributions, run.out_bias = proj_parts(proj, heads, bundle.model)
    except Exception as e:  # noqa: BLE001
        run.layer_note = run.layer_note or _why(e, "heads' contributions")
    try:
        run.projected = projected_scores(bundle, cap, stack, layer, token, walk)
    except Exception as e:  # noqa: BLE001
        run.projection_note = _why(e, "check from the projection weights")
    return run


def _why(e: Exception, what: str) -> str:
    if isinstance(e, NoRecipe):
        return str(e)
    return (f"The {what} is not available for this model ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
            "its layer differs from the recipe of its family in viz/inside/recipes.py. The head walk above is exact.")


def _output_projection(bundle: ModelBundle, stack: str, layer: int):
    """The module projecting the concatenated heads: from the recipe, else from arch.py's site."""
    from viz.core.weights import _modules

    try:
        recipe = recipe_for(bundle.config, stack)
        sub = next(s for s in recipe.sublayers if s.attn is not None and s.attn.stack == stack)
        hidden = DECODER if stack == CROSS else stack
        mod, _ = layer_module(bundle.model, recipe, layer, bundle.stack_layers(hidden))
        return mod.get_submodule(sub.attn.out)
    except NoRecipe:
        site = bundle.arch.sites.get(stack)
        if site is None:
            raise
        return _modules(bundle, site.output, bundle.stack_layers(stack))[layer]


def head_walk(run: InsideRun, head: int) -> HeadWalk:
    """One head of a run (cheap: numpy slices of what the run holds)."""
    cap, stack = run.cap, run.stack
    H = run.weights.shape[0]
    if not 0 <= head < H:
        raise CaptureError(f"There is no head {head}: this layer has {H} heads (0 to {H - 1}).")
    raw, scores = row_scores(cap, stack)
    q_tok, k_tok = cap.axis_tokens(stack)
    softcap = float(cap.softcap[stack][0])
    w = run.weights[head]
    values = cap.head_values(stack)[0, head]
    return HeadWalk(
        stack=stack, layer=run.layer, head=head, token=run.token, kv_head=int(cap.kv_heads[stack][head]),
        query_token=q_tok[run.token], tokens=list(k_tok), query=cap.queries[stack][0, head, 0],
        keys=cap.head_keys(stack)[0, head], values=values, raw_scores=raw[head], scores=scores[head],
        bias=cap.score_bias[stack][0, head, 0] if stack in cap.score_bias else None,
        mask=cap.masks[stack][0, 0], weights=w, captured=cap.attentions[stack][0, head, 0],
        head_output=(w[:, None] * values.astype(np.float64)).sum(0),
        contribution=None if run.contributions is None else run.contributions[head],
        scaling=float(cap.scaling[stack][0]), softcap=None if np.isnan(softcap) else softcap,
        projected=None if run.projected is None else run.projected[head])


KEY_MODES = ("all", "highest weights", "around the query")


def pick_keys(weights: np.ndarray, center: int | None = None, mode: str = "highest weights",
              limit: int = 24, masked: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """Which keys a figure shows (indices, in display order) and a sentence saying so. A 60-token input is
    legible as 24 rows: `highest weights` sorts the keys the query may attend to by weight (largest first;
    `masked` keys, bool [key], e.g. a decoder's look-ahead, are left out: an early token listed 22 masked zeros
    in 24 rows); `around the query` keeps the `limit` positions nearest `center` (the query's own position;
    None: the most attended key), in order; `all` keeps everything, in order."""
    K = len(weights)
    if mode == "all" or K <= limit and (masked is None or mode != "highest weights" or not masked.any()):
        return np.arange(K), f"All {K} keys, in order."
    if mode == "around the query":
        what = "the query" if center is not None else "the most attended key"
        center = int(np.argmax(weights)) if center is None else center
        start = int(np.clip(center - limit // 2, 0, K - limit))
        idx = np.arange(start, start + limit)
        return idx, (f"Keys {start}–{start + limit - 1} of {K} (the {limit} nearest {what}), in order; "
                     f"together {weights[idx].sum():.0%} of this head's attention.")
    allowed = np.arange(K) if masked is None else np.flatnonzero(~np.asarray(masked, dtype=bool))
    idx = allowed[np.argsort(-weights[allowed], kind="stable")][:limit]
    hidden = K - len(allowed)
    return idx, (f"The {len(idx)} keys of {K} with the highest weight, largest first; together "
                 f"{weights[idx].sum():.0%} of this head's attention."
                 + (f" {hidden} masked keys (weight 0) are not listed." if hidden else ""))


def _floats(a) -> list:
    """JSON lists of floats; -inf (a masked key) becomes null."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a), a, np.nan).astype(object).tolist() if a.ndim else float(a)


def to_json(run: InsideRun, walk: HeadWalk) -> dict:
    """The CLI contract (`python -m viz inside --help` documents every key)."""
    def clean(x):
        if isinstance(x, list):
            return [clean(v) for v in x]
        return None if isinstance(x, float) and np.isnan(x) else x

    lw = run.layer_walk
    out = {
        "model": run.cap.model_name, "stack": run.stack, "layer": run.layer, "head": walk.head, "token": walk.token,
        "query_token": walk.query_token, "tokens": walk.tokens, "kv_head": walk.kv_head,
        "query": walk.query, "keys": walk.keys, "values": walk.values, "raw_scores": walk.raw_scores,
        "bias": walk.bias, "scores": walk.scores, "mask": walk.mask, "weights": walk.weights,
        "head_output": walk.head_output, "contribution": walk.contribution,
        "scaling": walk.scaling, "softcap": walk.softcap, "weight_error": walk.weight_error,
        "projected_scores": walk.projected, "projection_error": walk.projection_error,
        "recomposition_error": None if lw is None else lw.recomposition_error,
        "layer_steps": None if lw is None else [{"label": s.label, "kind": s.kind, "sublayer": s.sublayer,
                                                 "norm": s.norm} for s in lw.steps],
        "layer_output": None if lw is None else lw.output, "model_hidden_state": None if lw is None else lw.model_output,
        "final_modules": None if lw is None else list(lw.final),
        "note": run.layer_note or None,
    }
    return {k: (clean(_floats(v)) if isinstance(v, np.ndarray) else v) for k, v in out.items()}


def to_arrays(run: InsideRun, walk: HeadWalk) -> dict[str, np.ndarray]:
    """Every vector the view shows, for an NPZ download (keys as in `to_json`, plus the per-step vectors)."""
    out = {"tokens": np.array(walk.tokens), "query_token": np.array(walk.query_token), "query": walk.query,
           "keys": walk.keys, "values": walk.values, "products": walk.products, "raw_scores": walk.raw_scores,
           "scores": walk.scores, "mask": walk.mask, "weights": walk.weights, "model_weights": walk.captured,
           "weighted_values": walk.weighted_values, "head_output": walk.head_output,
           "position": np.array([run.layer, walk.head, walk.token])}
    optional = {"bias": walk.bias, "contribution": walk.contribution, "head_contributions": run.contributions,
                "projected_scores": walk.projected}
    out.update({k: v for k, v in optional.items() if v is not None})
    lw = run.layer_walk
    if lw is not None:
        out.update(step_labels=np.array([s.label for s in lw.steps]), step_kinds=np.array([s.kind for s in lw.steps]),
                   step_vectors=np.stack([s.vector for s in lw.steps]), layer_output=lw.output,
                   model_hidden_state=lw.model_output, recomposition_error=np.array(lw.recomposition_error))
    return out
