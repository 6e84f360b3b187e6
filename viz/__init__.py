"""Attention Atlas library: load models, capture attention, analyse, build figures.

Nothing in here imports streamlit except `viz.cache` and `viz.ui`.
"""
