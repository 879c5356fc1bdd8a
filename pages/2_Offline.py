"""Offline mode: replay a CSV trace (logic in tuner.dashboard.offline)."""

import streamlit as st

from tuner.dashboard.offline import render

st.set_page_config(page_title="Offline · model-tuner", layout="wide")
render()
