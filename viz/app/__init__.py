"""The server side of the dashboard: the only modules that import streamlit (cache, ui), the byte-bounded
result store, server process settings, figure exports and the allocator settings."""
