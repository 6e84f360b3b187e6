"""Attention Atlas: `streamlit run app.py`. Page setup, navigation and the shared sidebar."""

import streamlit as st

from viz.app import links, serving, ui

serving.setup()  # once per process: malloc tuning, one torch thread per forward, gc.freeze (viz/app/serving.py)

st.set_page_config(page_title="Attention Atlas", page_icon="🔭", layout="wide")

# Grouped by the question a page answers. Every page stays listed: Streamlit folds a long list behind
# "View more" unless expanded (13 pages did fold, and a link below the fold could not be clicked).
PAGES = {
    "Where heads look": [
        st.Page("pages/attention.py", title="Attention", icon="🔭", default=True),
        st.Page("pages/inside.py", title="Inside a layer", icon="🔬"),
        st.Page("pages/flow.py", title="Layer flow", icon="🌊"),
        st.Page("pages/atlas.py", title="Head atlas", icon="🗺️"),
        st.Page("pages/match.py", title="Compare models", icon="🆚"),
    ],
    "What they cause": [
        st.Page("pages/routes.py", title="Routes", icon="🛤️"),
        st.Page("pages/patching.py", title="Patching", icon="🩹"),
        st.Page("pages/attribution.py", title="Does attention explain?", icon="🧭"),
        st.Page("pages/compare.py", title="Compare masking", icon="⚖️"),
    ],
    "What the model says": [
        st.Page("pages/mlm.py", title="Masked LM", icon="🎭"),
        st.Page("pages/encdec.py", title="Encoder–decoder", icon="🔁"),
        st.Page("pages/generate.py", title="Generate", icon="✍️"),
        st.Page("pages/studio.py", title="Training studio", icon="🏋️"),
    ],
}

st.set_option("client.showSidebarNavigation", True)  # off in .streamlit/config.toml until this point
page = st.navigation(PAGES, expanded=True)
links.start(page)  # a shared link's view -> session state (bad values: one line); "Copy link" atop the sidebar
ui.sidebar()
try:
    links.run(page)  # page.run(), the URL following the view (viz/app/links.py)
finally:
    ui.release_page_data()  # what outlives the run (callbacks, fragments) must not keep the page's arrays
