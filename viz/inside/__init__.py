"""Inside one layer: each family's layer as data (recipes), the exact recomposition of a layer's output
(recompose), one token's walk through a head and the layer (walk) and `python -m viz inside` (cli)."""
