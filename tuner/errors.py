"""The project's error types. Every message names what is wrong and where."""

from __future__ import annotations


class TunerError(Exception):
    """Base class: an input the tuner cannot use. Its message is meant for a user."""


class ConfigError(TunerError):
    """A tuner configuration (JSON or YAML) is malformed or inconsistent."""


class ScenarioError(TunerError):
    """A simulation scenario file is malformed."""


class TraceError(TunerError):
    """A CSV trace cannot be read."""


class ObserverError(TunerError):
    """A metrics source (Prometheus, a collector) failed or returned unusable data."""
