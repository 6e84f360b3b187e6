"""Attention Atlas: `streamlit run app.py`. Page setup, navigation and the shared sidebar."""

import streamlit as st

from viz import ui
from viz.memory import keep_freed_memory

keep_freed_memory()  # once per process: big attention tensors reuse freed memory instead of faulting in pages

st.set_page_config(page_title="Attention Atlas", page_icon="🔭", layout="wide")

PAGES = [
    st.Page("pages/attention.py", title="Attention", icon="🔭", default=True),
    st.Page("pages/flow.py", title="Layer flow", icon="🌊"),
    st.Page("pages/mlm.py", title="Masked LM", icon="🎭"),
    st.Page("pages/compare.py", title="Compare masking", icon="⚖️"),
    st.Page("pages/encdec.py", title="Encoder–decoder", icon="🔁"),
    st.Page("pages/generate.py", title="Generate", icon="✍️"),
    st.Page("pages/studio.py", title="Training studio", icon="🏋️"),
    st.Page("pages/atlas.py", title="Head atlas", icon="🗺️"),
]

page = st.navigation(PAGES)
ui.sidebar()
page.run()
