"""Causal analyses: components, patching, routes, attributions."""
