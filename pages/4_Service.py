"""Service mode: watch a running tuner service (logic in tuner.service.dashboard)."""

import streamlit as st

from tuner.service.dashboard import render

st.set_page_config(page_title="Service · model-tuner", layout="wide")
render()
