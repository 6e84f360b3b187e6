"""Ready-made decoder prompts where a name or phrase recurs and the next token can only come from copying.

Each example is plain data for the pages (Attention, Generate, later Patching and Routes) to offer:

- `prompt`: text whose last words begin a second mention of a rare name or phrase that appeared earlier;
- `expected`: the next token's text when the model copies (greedy, atlas-lm's tokenizer);
- `control`: the same last sentence without the earlier mention (a model that copies predicts `expected` only
  with the mention: this shows the token comes from the context, not from memory);
- `copied`: the earlier words the completion copies from, `domain`: the corpus style imitated.

The names are invented (none occurs in data/corpus), in the styles of the bundled corpus (Bible genealogies,
fortunes, Python docs, dictionary glosses). tests/test_atlas_lm.py holds the shipped atlas-lm to every
`expected` (and to missing it on every `control`); the card lists them.

`REPEATED_PASSAGE`: natural text whose second half repeats its first half (the card's and the test's figure:
the loss on the repeat against the loss on the first reading).
"""
from __future__ import annotations

COPY_EXAMPLES: list[dict] = [
    dict(name="genealogy", domain="Bible",
         prompt="And Abiquar the son of Melzoth reigned in Gibeah forty years. And Abiquar the son of Mel",
         expected="z", copied="Melzoth", control="And Abiquar the son of Mel"),
    dict(name="neighbour", domain="fortune",
         prompt="Mr Thistlewood keeps bees behind the church. Every morning Mr Th", expected="istle",
         copied="Thistlewood", control="Every morning Mr Th"),
    dict(name="function", domain="Python docs",
         prompt="The function zorbify_items() sorts the list in place. To sort a copy, call zorbify_",
         expected="it", copied="zorbify_items", control="To sort a copy, call zorbify_"),
    dict(name="gloss", domain="dictionary",
         prompt="florimund: a small brass tool for tuning harps; the harp maker lost his florim",
         expected="und", copied="florimund", control="the harp maker lost his florim"),
    dict(name="captain", domain="fortune",
         prompt="Captain Osgood Brimley sailed at dawn. The crew trusted Captain Osgood B", expected="rim",
         copied="Brimley", control="The crew trusted Captain Osgood B"),
    dict(name="society", domain="fortune",
         prompt="The Kelvaran Society meets on Tuesdays. Members of the Kelvar", expected="an",
         copied="Kelvaran", control="Members of the Kelvar"),
]

REPEATED_PASSAGE = ("The Lord said to Moses, Speak to the children of Israel, and tell them to bring me an offering. "
                    "A wise man keeps his counsel, but a fool tells all he knows.")
