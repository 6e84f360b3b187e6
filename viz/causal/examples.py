"""Ready-made clean/corrupted pairs that show something real on the shipped models (each checked by
tests/test_patching_page.py: the metric flips by more than a logit or a nat between the two inputs), generic
ones for other models, and the word replacement the Patching page uses to make a corrupted input."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    label: str
    clean: str
    corrupt: str
    target: str = ""  # "" = the default (top prediction on the clean input)
    foil: str = ""
    why: str = ""


SHIPPED: dict[str, list[Example]] = {
    "atlas-lm": [
        Example("keys/key → are/is", "The keys to the cabinet", "The key to the cabinet", "are", "is",
                "The verb agrees with 'keys', four tokens back, not with 'cabinet' next to it (Linzen et al. 2016): "
                "the number travels from the subject to the last token in the last layers."),
        Example("children/child → were/was", "The children in the house", "The child in the house", "were", "was",
                "Subject–verb agreement across a prepositional phrase."),
        Example("woman/man → she/he", "The woman said that", "The man said that", "she", "he",
                "The pronoun follows the subject's gender, three tokens back."),
    ],
    "minilm-mlm": [
        Example("cup/glass of [MASK]", "She poured a cup of [MASK] and read the paper.",
                "She poured a glass of [MASK] and read the paper.", "coffee", "wine",
                "The masked drink depends on one earlier word; watch it spread from 'cup' to 'of' and the mask."),
        Example("France/Italy → capital", "The capital of France is [MASK].", "The capital of Italy is [MASK].",
                "paris", "rome", "A fact recalled from one word: the country stays at its own position until the "
                                 "last layer moves it to the mask."),
        Example("bakery/library → buy", "He went to the bakery to buy some [MASK].",
                "He went to the library to buy some [MASK].", "bread", "books", "The place decides the purchase."),
    ],
    "seq2seq-dates": [
        Example("March/April → month", "3 March 2021", "3 April 2021", "", "",
                "The decoder has written '2021 -'; the month ('03' against '04') comes from the source's month word "
                "through cross-attention."),
        Example("13/14 → day", "13 March 2021", "14 March 2021", "", "", "The day, the last number written."),
    ],
    "seq2seq-reverse": [
        Example("blue/black → first output", "red green blue", "red green black", "", "",
                "Reversing: the first word out is the last word in."),
    ],
}

GENERIC = {
    "decoder": [Example("cat/dog", "The cat sat on the mat", "The dog sat on the mat")],
    "encoder": [Example("cat/dog → [MASK]", "The cat sat on the [MASK].", "The dog sat on the [MASK].")],
    "encoder-decoder": [Example("cat/dog", "The cat sat on the mat", "The dog sat on the mat")],
}


def examples_for(name: str, kind: str) -> list[Example]:
    return SHIPPED.get(name.split("@")[0], GENERIC.get(kind, []))


def words(text: str) -> list[str]:
    """The words a user can replace: runs of non-space characters."""
    return re.findall(r"\S+", text or "")


def replace_word(text: str, index: int, new: str) -> str:
    """`text` with its `index`-th word (as `words` counts) replaced by `new`, spacing kept."""
    spans = [m.span() for m in re.finditer(r"\S+", text or "")]
    if not 0 <= index < len(spans):
        return text
    a, b = spans[index]
    return text[:a] + new.strip() + text[b:]
