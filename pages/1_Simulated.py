"""Simulated mode: the tuner against the simulated observer (logic in tuner.dashboard.simulated)."""

import streamlit as st

from tuner.dashboard.simulated import render

st.set_page_config(page_title="Simulated · model-tuner", layout="wide")
render()
