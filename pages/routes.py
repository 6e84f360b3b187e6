"""Routes page: which heads and blocks carry information to a token (Ferrando & Voita 2024), and what each writes."""

from functools import partial

import pandas as pd
import streamlit as st

from viz.core.tokens import readable, readable_token
from viz.app import cache, routes_cache, ui
from viz.causal.writes import WritesUnavailable
from viz.core.errors import CaptureError
from viz.figures.attention import head_heatmap
from viz.figures.routes import KINDS, SITES, STACKS, head_bars, route_graph, token_bars

STACK_LABELS = {"encoder": "Encoder", "decoder": "Decoder (its route goes on into the encoder)"}
QUICK_TOKENS = 64  # up to this many tokens the whole table is built when its download is clicked
PICK = ("routes_pick_what", "routes_pick_stack", "routes_pick_layer", "routes_pick_token", "routes_pick_c",
        "routes_pick_kind")

ui.through_app()
st.title("Routes")
st.caption("Each token's residual stream after every sublayer is a sum of parts: the stream it came in with and, "
           "for every head and earlier token, what that head moved from that token (α · v · W_O), or the "
           "feed-forward's output. A part's share is how much closer it brings the sum than nothing "
           "(max(ε, ‖y‖₁ − ‖y − part‖₁), normalised): Ferrando & Voita 2024, as in llm-transparency-tool. "
           "The route keeps the edges over the threshold, followed back from the chosen token.")
name, text, target, bundle = ui.page_input("routes")
cap = ui.capture_or_stop(name, text, target)
try:
    stacks = routes_cache.stacks(name, text, target)
except CaptureError as e:
    ui.stop(str(e), "warning", "✍️")
stack = st.radio("Stack", stacks, index=len(stacks) - 1, format_func=STACK_LABELS.get, horizontal=True,
                 key="routes_stack") if len(stacks) > 1 else stacks[0]
tokens, L, H = cap.axis_tokens(stack)[0], bundle.stack_layers(stack), cap.attentions[stack].shape[1]
T = len(tokens)
shown = readable(list(tokens))  # byte-level BPE's Ġ as ▁ (viz/core/tokens.py); raw in the exports
special = (cap.target_special if stack == "decoder" and cap.target_special is not None else cap.special)
default = T - 1 if stack == "decoder" else max((i for i in range(T) if not special[i]), default=T - 1)
if st.session_state.get("routes_for", (name, text, target, stack)) != (name, text, target, stack):
    for k in PICK + ("routes_head", "routes_head_for"):  # new tokens: forget the old picks
        st.session_state.pop(k, None)
    st.session_state.routes_token = default  # set, not dropped: the browser's selectbox shows it
elif not 0 <= st.session_state.get("routes_token", -1) < T:
    st.session_state.routes_token = default
st.session_state.routes_for = (name, text, target, stack)
if [st.session_state.get(k) for k in PICK[:3]] == [0, STACKS.index(stack), L] \
        and st.session_state.get("routes_pick_c") == SITES.index("in"):
    st.session_state.routes_token = int(st.session_state.routes_pick_token)  # a click on a top node
c1, c2 = st.columns([2, 1])
token = c1.selectbox("Route to token (or click a token's top node)", list(range(T)),
                     format_func=lambda i: f"{shown[i]} ({i})", key="routes_token")
threshold = c2.slider("Threshold τ", 0.0, 0.5, 0.04, 0.01, key="routes_threshold",
                      help="Edges whose share is over τ are kept (llm-transparency-tool's default: 0.04).")
r = routes_cache.get_route(name, text, target, stack, int(token), float(threshold))
done = sum(sum(v) for v in r["decomposed"].values())
total = sum(n * len(r["tokens"][s]) for s, n in r["n_layers"].items() if s in r["decomposed"])
st.caption(f"{bundle.name} · {stack} · {L} layers × {H} heads · {T} tokens · {len(r['edges'])} edges over "
           f"τ = {threshold:.2f} · computed backwards from the chosen token: {done} of {total} token-layers "
           "decomposed. Click an edge's marker for its heads, a node for what it writes.")
picked = [int(st.session_state.get(k, -1)) for k in PICK]  # a click's customdata (ui.pick), checked before use
if not (picked[0] in (0, 1) and 0 <= picked[1] < len(STACKS) and STACKS[picked[1]] in stacks
        and 0 <= picked[2] <= bundle.stack_layers(STACKS[picked[1]]) and 0 <= picked[5] < len(KINDS)
        and 0 <= picked[3] < len(cap.axis_tokens(STACKS[picked[1]])[0]) and 0 <= picked[4]):
    picked = [-1] * len(PICK)
sel_node = (STACKS[picked[1]], picked[2], picked[3], SITES[picked[4]]) if picked[0] == 0 and picked[4] < len(SITES) \
    else None
ui.plot(route_graph(r["edges"], {s: readable(list(t)) for s, t in r["tokens"].items()}, r["n_layers"], stack, r["token"],
                    title=f"Route to {shown[r['token']]!r} ({r['token']}), τ = {threshold:.2f}", selected=sel_node),
        key="routes_graph", stem=f"route-{stack}-{r['token']}", on_select=ui.pick("routes_graph", *PICK),
        selection_mode="points")
edges_df = pd.DataFrame([{"from_stack": e.get("from_stack", e["stack"]), "from_layer": e["from"][0],
                          "from_token": e["from"][1], "from_site": e["from_site"], "to_stack": e["stack"],
                          "to_layer": e["to"][0], "to_token": e["to"][1], "to_site": e["to_site"], "kind": e["kind"],
                          "weight": e["weight"], **{f"H{h}": v for h, v in enumerate(e.get("heads", []))}}
                         for e in r["edges"]])
d1, d2 = st.columns(2)
with d1:
    ui.table_download(edges_df, key="routes_edges_csv", stem=f"route-edges-{stack}-{r['token']}",
                      label="Route edges (CSV)")
with d2:  # a long input's full table takes a while: computed on request, layer by layer, with progress
    ready = routes_cache.layers_ready(name, text, target, stack, L)
    if T > QUICK_TOKENS and ready < L and st.button(f"Compute every contribution ({L - ready} layers to go)",
                                                   key="routes_table_go", help="Any other click stops it; "
                                                   "the layers computed so far are kept."):
        bar = st.progress(ready / L, text="Every token's contributions, layer by layer…")
        for layer in range(L):
            routes_cache.get_layer_table(name, text, target, stack, layer, spinner=None)
            bar.progress((layer + 1) / L, text=f"Layer {layer + 1} of {L}")
        ready = L
    if T <= QUICK_TOKENS or ready == L:
        ui.npz_download(partial(routes_cache.table_arrays, name, text, target, stack), key="routes_table_npz",
                        stem=f"contributions-{stack}", label="Every contribution (NPZ, [layer, token, key, head])")


def edge_panel(estack: str, layer: int, dst: int, src: int, kind: str) -> None:
    """Which heads carried the edge; the chosen head's attention map beside its contribution map."""
    table = routes_cache.get_layer_table(name, text, target, estack, layer)
    shares = table[kind][dst, src]
    attn_stack = "cross" if kind == "cross" else estack
    rows, keys = cap.axis_tokens(attn_stack)
    st.subheader(f"{estack} L{layer} {kind}: {keys[src]!r} ({src}) → {rows[dst]!r} ({dst})")
    if st.session_state.get("routes_head_for") != (estack, layer, dst, src, kind):  # a new edge: its top head
        st.session_state.routes_head = int(shares.argmax())
    st.session_state.routes_head_for = (estack, layer, dst, src, kind)
    a, b = st.columns([2, 1])
    with a:
        ui.plot(head_bars(shares, f"Which heads carried it (share {shares.sum():.3f}); click a bar to open it"),
                key="routes_heads_fig", stem=f"edge-heads-L{layer}-{src}-{dst}",
                on_select=ui.pick("routes_heads_fig", "routes_head"), selection_mode="points")
    with b:
        head = st.number_input("Head", 0, len(shares) - 1, key="routes_head")
        if st.button(f"Open L{layer} H{head} on the Attention page →", key="routes_open"):
            ui.open_attention(attn_stack, layer, int(head))
        ui.table_download(pd.DataFrame({"share": shares}, index=[f"H{h}" for h in range(len(shares))]),
                          key="routes_heads_csv", stem=f"edge-heads-L{layer}-{src}-{dst}")
    m1, m2 = st.columns(2)
    alpha = cap.attentions[attn_stack][layer, head]
    contrib = table[kind][:, :, head]
    for col, mat, what, value in ((m1, alpha, "looks at (attention α)", "α"),
                                  (m2, contrib, "takes from (contribution share)", "share")):
        with col:
            ui.plot(head_heatmap(mat, rows, keys, f"L{layer} H{head} {what}", value=value),
                    key=f"routes_map_{value}", stem=f"{'attention' if value == 'α' else 'contribution'}-L{layer}-H{head}")
            ui.table_download(pd.DataFrame(mat, index=[f"{t} ({i})" for i, t in enumerate(rows)],
                                           columns=[f"{t} ({i})" for i, t in enumerate(keys)]),
                              key=f"routes_map_{value}_csv", stem=f"map-{value}-L{layer}-H{head}")


def node_panel(node: tuple) -> None:
    """What the clicked node writes (or, for a stream node, reads as) through the model's own output head."""
    nstack, layer, tok, site = node
    where = {"in": f"the stream after {'emb' if layer == 0 else f'L{layer - 1}'}", "attn": f"L{layer}'s attention",
             "cross": f"L{layer}'s cross-attention", "ffn": f"L{layer}'s feed-forward"}[site]
    st.subheader(f"{where} at {readable(list(cap.axis_tokens(nstack)[0]))[tok]!r} ({tok})")
    try:
        w = routes_cache.get_writes(name, text, target, nstack, (layer, tok, site))
    except WritesUnavailable as e:
        st.info(str(e), icon="ℹ️")
        return
    verb = "reads as" if site == "in" else "promotes and suppresses"
    st.caption(f"Read through the {w.readout}. The model predicts {readable_token(w.predicted[0])!r} at this token.")
    a, b = st.columns(2)
    with a:
        ui.plot(token_bars([(readable_token(t), v) for t, v in w.promoted], [(readable_token(t), v) for t, v in w.suppressed], f"What it {verb}",
                           "its logits" if site == "in" else "Δ logit, had it not written"),
                key="routes_writes_fig", stem=f"writes-{site}-L{layer}-{tok}")
        ui.table_download(pd.DataFrame(w.promoted + w.suppressed, columns=["token", "value"]),
                          key="routes_writes_csv", stem=f"writes-{site}-L{layer}-{tok}")
    with b:
        if w.head_dla is not None:
            ui.plot(head_bars(w.head_dla, f"Each head's direct logit attribution to {readable_token(w.predicted[0])!r}", "Δ logit"),
                    key="routes_dla_fig", stem=f"head-dla-L{layer}-{tok}")
            ui.table_download(pd.DataFrame({"dla": w.head_dla}, index=[f"H{h}" for h in range(len(w.head_dla))]),
                              key="routes_dla_csv", stem=f"head-dla-L{layer}-{tok}")
        if w.neurons:
            df = pd.DataFrame([{"neuron": n.index, "activation": round(n.activation, 4), "share": round(n.contribution, 4),
                                "‖a·W_out‖": round(n.norm, 4), "promotes": ", ".join(t for t, _ in n.promoted[:5])}
                               for n in w.neurons])
            st.caption("Top neurons by their share of the feed-forward's result (a_n · W_out[n] as one more part)")
            st.dataframe(df, hide_index=True)
            ui.table_download(df, key="routes_neurons_csv", stem=f"neurons-L{layer}-{tok}")


if picked[0] == 1 and KINDS[picked[5]] in ("attention", "cross") and picked[2] < bundle.stack_layers(STACKS[picked[1]]) \
        and picked[4] < len(cap.axis_tokens("cross" if KINDS[picked[5]] == "cross" else STACKS[picked[1]])[1]):
    edge_panel(STACKS[picked[1]], int(picked[2]), int(picked[3]), int(picked[4]), KINDS[picked[5]])
elif sel_node is not None and (sel_node[1] < bundle.stack_layers(sel_node[0]) or sel_node[3] == "in"):
    node_panel(sel_node)
else:
    st.info("Click an edge's marker to see which heads carried it, or a node to see what it writes.", icon="👆")
