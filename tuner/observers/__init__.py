"""Sources of measurement windows: simulated, offline traces, online metrics."""
