"""model-tuner dashboard. Run with `streamlit run app.py`.

The entry point: a navigation of the Home page (below) and every page of ``pages/``
(``N_Name.py``, listed in N order, so new modes only add a file). Home explains the tool,
links every page and embeds the Simulated mode (the same run as the Simulated page), so
the dashboard opens ready to step.
"""

from pathlib import Path
from types import MappingProxyType

import streamlit as st

from tuner.dashboard.simulated import render as render_simulated

PAGES = Path(__file__).resolve().parent / "pages"
DESCRIPTIONS = MappingProxyType({
    "Simulated": "the tuner against a simulated server whose true alpha and beta you set, phase by phase.",
    "Offline": "replay a recorded CSV trace (the project's, the seed's or vLLM's layout) step by step.",
    "Online": "tune against a live server's Prometheus metrics.",
    "Service": "the tuner service: many servers tuned at once behind a REST API.",
})


def page_name(path: Path) -> str:
    return path.stem.split("_", 1)[-1].replace("_", " ")


def home() -> None:
    st.title("model-tuner")
    st.markdown(
        """
    model-tuner keeps the performance model of an LLM inference server true to the server it describes.
    An Extended Kalman Filter learns, online, the two parameters of a queueing model of the server from the queue
    wait and inter-token latency (ITL) that the server reports, window after window.
    Each mode below drives the same tuner step by step and shows what it predicted, what it observed, and how sure
    it is of its estimate.
    """
    )
    with st.expander("The model and its units", expanded=False):
        st.markdown(
            r"""
    One decode iteration of a batch of $b$ requests takes $\alpha + \beta\,b$ **ms**: the state is
    $x = [\alpha, \beta]$ (ms, ms per request). Requests arrive at **rpm** (requests/minute), each generates
    $T$ output **tokens** on average, and at most $B$ (**max batch**) run at once; more wait in a queue.
    The queue is a birth-death chain with arrival rate $\lambda = \text{rpm}/60000$ per ms and completion rate
    $\mu(n) = b/((\alpha + \beta b)\,T)$ per ms with $b = \min(n, B)$. From it the model predicts the
    observations $z = [\text{wait\_ms}, \text{itl\_ms}]$: the mean **queue wait** (ms) and the mean
    **inter-token latency** (ms). The filter compares the prediction made *before* each update with the observed
    window; the normalized innovation squared (NIS) says how surprising each window was.
    """
        )

    st.subheader("Modes")
    for path in sorted(PAGES.glob("*.py")):
        name = page_name(path)
        st.page_link(str(path.relative_to(PAGES.parent)), label=f"**{name}** — {DESCRIPTIONS.get(name, '')}")

    st.divider()
    st.header("Simulated mode")
    st.caption("The seed's 3-phase demo (alpha/beta jump at steps 21 and 41): press Step or Run to end. "
               "This is the same run as on the Simulated page.")
    render_simulated(title=False)


st.set_page_config(page_title="model-tuner", layout="wide")
navigation = st.navigation(
    [st.Page(home, title="Home", default=True)]
    + [st.Page(str(path.relative_to(PAGES.parent)), title=page_name(path)) for path in sorted(PAGES.glob("*.py"))]
)
navigation.run()
