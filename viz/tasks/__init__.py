"""One module per page-level computation (masked LM, generation, lens, head scores, flows, ...), on viz.core."""
