"""The dashboard's attention figures in a notebook (Jupyter, VS Code, Colab): no server, no Streamlit.

    from viz.notebook import model_view, head_view, aggregate_view, sink_view, capture

    text = "The cat sat on the mat because it was tired."
    model_view("minilm", text)                              # every layer x head (click-free: hover names them)
    head_view("minilm", text, layer=3, head=5, words=True)  # one head, word pieces merged into words
    cap = capture("minilm", text)                           # run the model once, draw many views
    aggregate_view(cap, how="max")                          # max over heads, all layers
    sink_view(cap)                                          # each head's share of attention on the first token

Every view takes a model name (any name the dashboard's model picker takes: `minilm`, `minilm-mlm`, `atlas-lm`,
`seq2seq-dates`, `tiny-llama`, a local folder, a hub id) with a text, or a `Capture`, and returns the Plotly figure
the Attention page draws (`viz.figures.attention`), which a notebook shows inline; `fig.write_html("x.html")`
saves it. The toggles are the page's: `words` (sum over key pieces, mean over query pieces), `hide_special`
(drop [CLS]/[SEP] rows and columns, renormalise), `sink` (set the first token aside, renormalise). `stack` picks
an encoder–decoder's `"encoder"`, `"decoder"` or `"cross"` attention (default: the model's first). Models are
loaded once per process (`load`).
"""

from __future__ import annotations

import warnings

# tqdm (imported by transformers) warns once in a kernel without ipywidgets; this module's output has no bars
warnings.filterwarnings("ignore", message="IProgress not found")

import plotly.graph_objects as go  # noqa: E402

from viz.analysis.words import aggregate, attention_view
from viz.core.capture import Capture
from viz.core.capture import capture as _capture
from viz.core.env import quiet
from viz.core.models import ModelBundle, load_model
from viz.figures.attention import head_heatmap, sink_heatmap
from viz.figures.attention import model_view as _model_view

__all__ = ["load", "capture", "attention", "model_view", "head_view", "aggregate_view", "sink_view"]

STACK_LABELS = {"encoder": "Encoder self-attention", "decoder": "Decoder masked self-attention",
                "cross": "Cross-attention (decoder → encoder)"}


_BUNDLES: dict[str, ModelBundle] = {}  # name -> bundle: what this process loaded or was handed


def load(name: str) -> ModelBundle:
    """The model `name`, loaded once per process (as the dashboard's model picker names it)."""
    if name not in _BUNDLES:
        quiet()  # transformers' loading bars and advisories would fill the cell's output
        _BUNDLES[name] = load_model(name)
    return _BUNDLES[name]


def _bundle(model: str | ModelBundle) -> ModelBundle:
    if isinstance(model, str):
        return load(model)
    _BUNDLES.setdefault(model.name, model)  # its captures' word labels use its tokenizer
    return model


def capture(model: str | ModelBundle, text: str, target: str | None = None) -> Capture:
    """Run `text` (and an encoder–decoder's `target`; None: its own greedy output) through `model`: every layer's
    attention `[layer, head, query, key]` per stack, hidden states, q/k/v (`viz.core.capture.capture`)."""
    return _capture(_bundle(model), text, target)


def _source(source: str | ModelBundle | Capture, text: str | None, target: str | None):
    """-> (capture, tokenizer or None): a Capture is used as it is; a model runs on `text`."""
    if isinstance(source, Capture):  # word labels: its model's tokenizer if loaded here, else '##' pieces joined
        return source, getattr(_BUNDLES.get(source.model_name), "tokenizer", None)
    if text is None:
        raise TypeError("give a text with a model name, e.g. head_view('minilm', 'The cat sat on the mat.'), "
                        "or pass a Capture")
    bundle = _bundle(source)
    return _capture(bundle, text, target), bundle.tokenizer


def attention(source: str | ModelBundle | Capture, text: str | None = None, *, stack: str | None = None,
              words: bool = False, hide_special: bool = False, sink: bool = False, target: str | None = None):
    """(attention `[layer, head, query, key]`, query labels, key labels) after the toggles, as the page shows it."""
    cap, tokenizer = _source(source, text, target)
    stack = _stack(cap, stack)
    return attention_view(cap, stack, words, hide_special, tokenizer, sink)


def _stack(cap: Capture, stack: str | None) -> str:
    stacks = list(cap.attentions)
    if stack is None:
        return stacks[0]
    if stack not in stacks:
        raise ValueError(f"this capture has {', '.join(stacks)} attention, not '{stack}'")
    return stack


def model_view(source: str | ModelBundle | Capture, text: str | None = None, *, stack: str | None = None,
               words: bool = False, hide_special: bool = False, sink: bool = False, target: str | None = None,
               selected: tuple[int, int] | None = None) -> go.Figure:
    """Every layer x head as thumbnails, each scaled to its own maximum; `selected` (layer, head) is framed."""
    cap, tokenizer = _source(source, text, target)
    stack = _stack(cap, stack)
    A, _, _ = attention_view(cap, stack, words, hide_special, tokenizer, sink)
    return _model_view(A, title=f"{STACK_LABELS[stack]} · every layer × head", selected=selected,
                       kv_heads=cap.kv_heads.get(stack), first_share=cap.first_share.get(stack))


def head_view(source: str | ModelBundle | Capture, text: str | None = None, layer: int = 0, head: int = 0, *,
              stack: str | None = None, words: bool = False, hide_special: bool = False, sink: bool = False,
              target: str | None = None) -> go.Figure:
    """One head as a query x key heatmap (rows attend, columns are attended to)."""
    cap, tokenizer = _source(source, text, target)
    stack = _stack(cap, stack)
    A, q_lab, k_lab = attention_view(cap, stack, words, hide_special, tokenizer, sink)
    L, H = A.shape[:2]
    if not (-L <= layer < L and -H <= head < H):
        raise IndexError(f"layer {layer}, head {head}: this model has {L} layers and {H} heads (from 0)")
    layer, head = layer % L, head % H
    return head_heatmap(A[layer, head], q_lab, k_lab, f"{STACK_LABELS[stack]} · L{layer} H{head}")


def aggregate_view(source: str | ModelBundle | Capture, text: str | None = None, how: str = "mean",
                   layer: int | None = None, *, stack: str | None = None, words: bool = False,
                   hide_special: bool = False, sink: bool = False, target: str | None = None) -> go.Figure:
    """The mean (or max) over heads: of every layer (`layer=None`) or of one layer."""
    if how not in ("mean", "max"):
        raise ValueError(f"how='{how}': use 'mean' or 'max'")
    cap, tokenizer = _source(source, text, target)
    stack = _stack(cap, stack)
    A, q_lab, k_lab = attention_view(cap, stack, words, hide_special, tokenizer, sink)
    agg = aggregate(A, how) if layer is None else aggregate(A[layer], how, axis=0)
    scope = "all layers" if layer is None else f"layer {layer % A.shape[0]}"
    return head_heatmap(agg, q_lab, k_lab, f"{how} over heads · {scope}")


def sink_view(source: str | ModelBundle | Capture, text: str | None = None, *, stack: str | None = None,
              target: str | None = None) -> go.Figure:
    """Each head's mean share of attention on the first token (rows after the first): the attention sink."""
    cap, _ = _source(source, text, target)
    return sink_heatmap(cap.first_share[_stack(cap, stack)])
