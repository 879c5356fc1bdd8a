"""model-tuner dashboard: home page. Run with `streamlit run app.py`."""

import streamlit as st

st.set_page_config(page_title="model-tuner", layout="wide")
st.title("model-tuner")
st.markdown(
    """
model-tuner keeps the queueing model of an LLM inference server true to the server.
It learns the decode-iteration time **alpha + beta·b** (ms, for a batch of b requests)
online with an Extended Kalman Filter, from the observed queue wait and inter-token latency.
"""
)
