"""Dashboard building blocks (Streamlit) and figure builders (plotly) shared by the pages."""
