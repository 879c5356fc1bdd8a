"""vLLM metrics emulator: a discrete-event simulation of continuous batching behind /metrics.

- :mod:`tuner.emulator.simulation`: the pure simulation (:class:`ServerSim`) and
  :func:`simulate_windows`, the discrete-event counterpart of the simulated observer;
- :mod:`tuner.emulator.exposition`: the Prometheus text format with vLLM's names;
- :mod:`tuner.emulator.server`: the HTTP server (``/metrics``, ``/control``);
- ``python -m tuner.emulator``: the command line.
"""
