"""Tokens as a reader reads them (viz.core.tokens.readable) on the axes; the raw token kept in hovers and exports."""

import numpy as np
import pytest

from viz.core.tokens import readable
from viz.figures.axes import LONG_AXIS, token_axis, token_labels


@pytest.fixture(scope="module")
def bpe():
    """atlas-lm's byte-level BPE (GPT-2's byte alphabet)."""
    from transformers import AutoTokenizer

    from viz.core.models import REPO_ROOT

    return AutoTokenizer.from_pretrained(REPO_ROOT / "models" / "atlas-lm")


def test_byte_level_tokens_read_as_text(bpe):
    text = "Hello world 🙂 トマト café\nnext"
    toks = bpe.convert_ids_to_tokens(bpe(text)["input_ids"])
    assert "Ġworld" in toks and "ð" in toks  # what the raw tokens look like
    shown = readable(toks)
    assert "▁world" in shown and "↵" in shown
    assert not any(c in "".join(shown) for c in "ĠĊðãĥÃ")  # no byte letters left
    emoji = [s for s in shown if s.startswith("🙂")]
    assert emoji == ["🙂 1/4", "🙂 2/4", "🙂 3/4", "🙂 4/4"]  # one character over four tokens, each says so
    assert [s for s in shown if s.startswith("é")] == ["é 1/2", "é 2/2"]
    assert shown[0] == "<|endoftext|>"  # special tokens as they are
    # every piece of the text is accounted for, in order
    joined = "".join(s.split(" ")[0] if "/" in s else s for s in shown[1:])
    assert joined.replace("▁", " ").replace("↵", "\n") == "Hello world " + "🙂" * 4 + " " + "トトトマママトトト" + \
        " café".replace("é", "éé") + "\nnext"


def test_other_tokenizers_are_left_alone():
    wordpiece = ["[CLS]", "the", "cat", "##s", "łodz", "é", "[SEP]"]  # ł is a moved byte letter, but not UTF-8 here
    assert readable(wordpiece) == wordpiece
    spm = ["<s>", "▁The", "<0xE3>", "<0x83>", "<0x88>", "▁cat"]  # SentencePiece byte fallback: ト
    assert readable(spm) == ["<s>", "▁The", "ト 1/3", "ト 2/3", "ト 3/3", "▁cat"]


def test_axes_show_readable_tokens_and_keep_the_raw_ones_in_the_hover(bpe):
    toks = bpe.convert_ids_to_tokens(bpe("The cat 🙂")["input_ids"])
    axis = token_axis(toks)
    cats = token_labels(toks)
    assert cats[1] == "The (1)" and cats[2] == "Ġcat (2)"  # categories (what hover prints) are the raw tokens
    assert axis["labelalias"][cats[2]] == "▁cat" and axis["labelalias"][cats[-1]] == "🙂 4/4"


def test_long_axes_label_with_positions():
    """At 76 tokens the browser labels every 2nd-3rd token: bare words read as a sentence that is not there."""
    short = [f"w{i}" for i in range(LONG_AXIS)]
    assert token_axis(short)["labelalias"]["w3 (3)"] == "w3"
    long = [f"w{i}" for i in range(76)]
    assert token_axis(long)["labelalias"]["w3 (3)"] == "w3 (3)"


def test_merged_words_are_decoded_whatever_their_piece_count(bpe):
    from viz.analysis.words import span_labels

    toks = bpe.convert_ids_to_tokens(bpe(" the tokenization works", add_special_tokens=False)["input_ids"])
    spans, i = [], 0
    while i < len(toks):  # a word starts at a Ġ piece
        j = i + 1
        while j < len(toks) and not toks[j].startswith("Ġ"):
            j += 1
        spans.append((i, j))
        i = j
    labels = span_labels(toks, spans, bpe)
    assert labels == ["the", "tokenization", "works"] and not any("Ġ" in x for x in labels)
    assert np.all([len(s) for s in spans])
