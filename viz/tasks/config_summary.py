"""The architecture panel: an encoder–decoder's layout read from its config (pure functions, no streamlit).

Vaswani et al. 2017 ("Attention is all you need", §3.1): N encoder layers of
[multi-head self-attention, position-wise feed-forward], each sublayer wrapped as
LayerNorm(x + Sublayer(x)) ("post-LN"); N decoder layers add encoder–decoder attention
between the two and mask their self-attention so position i sees only positions <= i.
Later families moved the norm inside the residual branch, x + Sublayer(Norm(x)) ("pre-LN"),
and changed the norm (T5: RMSNorm without bias) and the positions (learned, relative bias).

Family facts that configs do not state live in `LAYOUTS`, keyed by `config.model_type`;
a config that does state them (`normalize_before`) wins.
"""

from __future__ import annotations

from viz.core.arch import CROSS, DECODER, ENCODER, arch_for

LAYOUTS: dict[str, dict[str, str]] = {
    # norm: where LayerNorm sits; positions: how order enters the model
    "bart": dict(norm="post", norm_type="LayerNorm", positions="learned absolute (offset 2)"),
    "mbart": dict(norm="pre", norm_type="LayerNorm", positions="learned absolute (offset 2)"),
    "marian": dict(norm="post", norm_type="LayerNorm", positions="sinusoidal (fixed, as in Vaswani et al.)"),
    "pegasus": dict(norm="pre", norm_type="LayerNorm", positions="sinusoidal (fixed)"),
    "t5": dict(norm="pre", norm_type="RMSNorm (T5LayerNorm: no mean, no bias)",
               positions="relative position bias (bucketed, added to attention scores)"),
    "mt5": dict(norm="pre", norm_type="RMSNorm (T5LayerNorm: no mean, no bias)",
                positions="relative position bias (bucketed, added to attention scores)"),
}

VIEW_LABELS = {ENCODER: "Encoder self-attention", DECODER: "Decoder masked self-attention",
               CROSS: "Cross-attention (decoder → encoder)"}

# (stack, sublayer, attention view it feeds or None); the order inside one layer
SUBLAYERS: list[tuple[str, str, str | None]] = [
    ("encoder", "Multi-head self-attention", ENCODER),
    ("encoder", "Position-wise feed-forward", None),
    ("decoder", "Masked multi-head self-attention", DECODER),
    ("decoder", "Encoder–decoder (cross) attention", CROSS),
    ("decoder", "Position-wise feed-forward", None),
]


def _first(cfg, *names, default=None):
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


def describe(config) -> dict:
    """An encoder–decoder config -> its layout as a flat dict (numbers and short strings).

    Keys: family, encoder_layers, decoder_layers, d_model, encoder_heads, decoder_heads, head_dim,
    encoder_ffn, decoder_ffn, norm ('pre' | 'post'), norm_type, residual, activation, positions,
    vocab_size, max_positions, tied_embeddings, scaled_embeddings.
    """
    mt = config.model_type
    arch_for(mt)  # unsupported families fail here with the list of supported ones
    if not getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"'{mt}' is not an encoder–decoder model; the architecture panel describes those only.")
    layout = dict(LAYOUTS.get(mt, dict(norm="post", norm_type="LayerNorm", positions="unknown")))
    if getattr(config, "normalize_before", None) is not None:
        layout["norm"] = "pre" if config.normalize_before else "post"
    d_model = int(_first(config, "d_model", "hidden_size"))
    enc_layers = int(_first(config, "encoder_layers", "num_layers"))
    dec_layers = int(_first(config, "decoder_layers", "num_decoder_layers", "num_layers"))
    enc_heads = int(_first(config, "encoder_attention_heads", "num_heads"))
    dec_heads = int(_first(config, "decoder_attention_heads", "num_heads"))
    head_dim = int(_first(config, "d_kv", default=d_model // enc_heads))
    activation = _first(config, "feed_forward_proj", "activation_function", default="?")
    return dict(
        family=mt, encoder_layers=enc_layers, decoder_layers=dec_layers, d_model=d_model,
        encoder_heads=enc_heads, decoder_heads=dec_heads, head_dim=head_dim,
        encoder_ffn=int(_first(config, "encoder_ffn_dim", "d_ff")),
        decoder_ffn=int(_first(config, "decoder_ffn_dim", "d_ff")),
        norm=layout["norm"], norm_type=layout["norm_type"],
        residual="x + Sublayer(Norm(x))" if layout["norm"] == "pre" else "Norm(x + Sublayer(x))",
        activation=str(activation), positions=layout["positions"],
        vocab_size=int(config.vocab_size),
        max_positions=_first(config, "max_position_embeddings", default="unbounded (relative)"),
        tied_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
        scaled_embeddings=bool(getattr(config, "scale_embedding", False)),
    )


ROW_NAMES = {
    "family": "Family (config.model_type)", "encoder_layers": "Encoder layers (N)",
    "decoder_layers": "Decoder layers (N)", "d_model": "d_model (residual width)",
    "encoder_heads": "Encoder heads (h)", "decoder_heads": "Decoder heads (h)", "head_dim": "Head size (d_k)",
    "encoder_ffn": "Encoder feed-forward width (d_ff)", "decoder_ffn": "Decoder feed-forward width (d_ff)",
    "norm": "LayerNorm placement", "norm_type": "Norm", "residual": "Each sublayer computes",
    "activation": "Feed-forward activation", "positions": "Position encoding", "vocab_size": "Vocabulary",
    "max_positions": "Max positions", "tied_embeddings": "Output layer tied to embeddings",
    "scaled_embeddings": "Embeddings scaled by √d_model",
}
ORIGINAL = dict(encoder_layers=6, decoder_layers=6, d_model=512, encoder_heads=8, decoder_heads=8, head_dim=64,
                encoder_ffn=2048, decoder_ffn=2048, norm="post", norm_type="LayerNorm",
                residual="Norm(x + Sublayer(x))", activation="relu", positions="sinusoidal (fixed)",
                vocab_size=37000, tied_embeddings=True, scaled_embeddings=True)


def table_rows(desc: dict) -> list[dict]:
    """Rows for a table: property, this model, the original Transformer (base) for comparison."""
    return [{"property": ROW_NAMES.get(k, k), "this model": str(v), "Transformer base (2017)": str(ORIGINAL.get(k, "—"))}
            for k, v in desc.items()]


def _readable(regex: str) -> str:
    return regex.replace(r"\d+", "{i}").replace("\\.", ".")


def sublayer_rows(arch, model=None) -> list[dict]:
    """Which sublayer each attention view comes from, with the module that produces it.

    With `model`, the first real module name (layer 0) is shown; otherwise the pattern from arch.py.
    """
    names = [n for n, _ in model.named_modules()] if model is not None else []
    rows = []
    for stack, sub, view in SUBLAYERS:
        module = "—"
        if view is not None and view in arch.sites:
            site = arch.sites[view]
            module = next((n for n in names if site.matches(n)), _readable(site.module))
        rows.append({"stack": stack, "sublayer": sub, "attention view": VIEW_LABELS.get(view, "—"), "module": module})
    return rows
