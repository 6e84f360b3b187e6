"""viz.analysis.words.attention_view: the Attention page's word / special-token toggles on a capture."""

import numpy as np

from viz.analysis.words import attention_view
from viz.core.capture import capture


def test_toggles(load):
    bundle = load("tiny-bert")
    cap = capture(bundle, "antidisestablishmentarianism results")  # [CLS] anti ##dis ... ##ism results [SEP]
    n = len(cap.tokens)
    assert n == 11
    a, q, k = attention_view(cap, "encoder")
    assert a is cap.attentions["encoder"] and q == k == cap.tokens  # no toggles: the capture's own array
    a, q, k = attention_view(cap, "encoder", words=True, tokenizer=bundle.tokenizer)
    assert q == k == ["[CLS]", "antidisestablishmentarianism", "results", "[SEP]"] and a.shape[2:] == (4, 4)
    assert np.allclose(a.sum(-1), 1, atol=1e-5)
    a, q, k = attention_view(cap, "encoder", hide=True)
    assert a.shape[2:] == (n - 2, n - 2) and "[CLS]" not in q and np.allclose(a.sum(-1), 1, atol=1e-5)
    a, q, k = attention_view(cap, "encoder", words=True, hide=True, tokenizer=bundle.tokenizer)
    assert q == k == ["antidisestablishmentarianism", "results"] and a.shape[2:] == (2, 2)
