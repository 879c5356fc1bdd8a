"""Tuner configuration: the seed's JSON keys (also accepted in YAML) and a few optional ones.

```
filterData:  gammaFactor, errorLevel, tPercentile          (seed)
             stateSpace, adaptive, iterations, nisGate, gateWarmup   (optional, ours)
modelData:   initState, percentChange, boundedState, minState, maxState,
             expectedObservations                         (seed)
```
How each key enters the filter is documented on :class:`FilterConfig`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from tuner.errors import ConfigError
from tuner.textfile import read_text

STATE_SPACES = ("log", "linear")
DEFAULT_GATE = 0.975
"""The NIS gate's chi-square probability when ``nisGate`` is simply true."""


@dataclass(frozen=True)
class FilterConfig:
    """A validated configuration.

    - R: observation noise, f = s² with s = errorLevel/tPercentile/√gammaFactor as in the
      seed. With relativeNoise (default) the standard deviation of entry i is
      s·(min(|ẑ_i|, |z_i|) + 0.01·expected_i): errorLevel is a percentage error, as in the
      seed's demo noise, and 1 % of expectedObservations is the floor below which a value
      counts as zero. Without it R = f·expected² exactly as in the seed.
    - P0: the seed's (percentChange·initState)²; in log space percentChange² (a percentage).
    - Q: the seed's (percentChange·x)² times driftFraction² (default 0.02: 0.2 % a step for
      percentChange 0.1); covariance inflation takes over when the state really moves.
    - Bounds: minState/maxState when boundedState.
    """

    gamma_factor: float
    error_level: float | tuple[float, ...]
    """One relative error for every observation, or one per observation."""
    t_percentile: float
    init_state: tuple[float, ...]
    percent_change: tuple[float, ...]
    bounded_state: bool
    min_state: tuple[float, ...] | None
    max_state: tuple[float, ...] | None
    expected_observations: tuple[float, ...]
    state_space: str = "linear"
    """"log": the filter works on log(state) (positive states, relative changes); "linear": on the state."""
    adaptive: bool = True
    """Inflate the covariance when innovations show the state has moved (regime changes, start-up)."""
    iterations: int = 3
    """Gauss-Newton iterations of the update (1 = the plain EKF)."""
    nis_gate: float | None = None
    """Reject updates whose NIS exceeds this chi-square probability; ``nisGate: true`` means 0.975; None disables."""
    gate_warmup: int = 10
    """Accepted steps before the gate starts rejecting."""
    relative_noise: bool = True
    """R relative to the observations above the floor (True) or the seed's fixed R = f·expected² (False)."""
    drift_fraction: float = 0.02
    """Steady-state process noise Q as a fraction of percentChange (1.0 = the seed's Q)."""
    rate_window_minutes: float = 0.0
    """Minutes over which each window's arrival rate was counted: its Poisson counting noise
    (variance rpm / minutes) is carried into R through ∂h/∂rpm. 0: the rate is exact."""

    @property
    def noise_scale(self) -> NDArray[np.float64]:
        """s = errorLevel / tPercentile / √gammaFactor per observation, the relative error."""
        level = np.broadcast_to(np.asarray(self.error_level, dtype=float), (len(self.expected_observations),))
        return level / self.t_percentile / math.sqrt(self.gamma_factor)

    def to_mapping(self) -> dict[str, Any]:
        """The configuration in the seed's layout (round-trips through :func:`parse_config`)."""
        d = asdict(self)
        filter_data = {
            "gammaFactor": d["gamma_factor"],
            "errorLevel": list(self.error_level) if isinstance(self.error_level, tuple) else self.error_level,
            "tPercentile": d["t_percentile"],
            "stateSpace": d["state_space"],
            "adaptive": d["adaptive"],
            "iterations": d["iterations"],
            "gateWarmup": d["gate_warmup"],
            "relativeNoise": d["relative_noise"],
            "driftFraction": d["drift_fraction"],
            "rateWindowMinutes": d["rate_window_minutes"],
        }
        if self.nis_gate is not None:
            filter_data["nisGate"] = self.nis_gate
        model_data: dict[str, Any] = {
            "initState": list(self.init_state),
            "percentChange": list(self.percent_change),
            "boundedState": self.bounded_state,
            "expectedObservations": list(self.expected_observations),
        }
        if self.min_state is not None:
            model_data["minState"] = list(self.min_state)
        if self.max_state is not None:
            model_data["maxState"] = list(self.max_state)
        return {"filterData": filter_data, "modelData": model_data}


def _number(section: Mapping[str, Any], where: str, key: str, *, positive: bool = True, default: Any = None) -> float:
    if key not in section:
        if default is not None:
            return float(default)
        raise ConfigError(f"{where}.{key} is missing")
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}.{key} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{where}.{key} must be positive, got {value!r}")
    return float(value)


def _vector(section: Mapping[str, Any], where: str, key: str, *, positive: bool) -> tuple[float, ...]:
    if key not in section:
        raise ConfigError(f"{where}.{key} is missing")
    value = section[key]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}.{key} must be a non-empty list of numbers, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise ConfigError(f"{where}.{key}[{i}] must be a finite number, got {item!r}")
        if positive and item <= 0:
            raise ConfigError(f"{where}.{key}[{i}] must be positive, got {item!r}")
        out.append(float(item))
    return tuple(out)


def parse_config(data: Any, n_observations: int = 2) -> FilterConfig:
    """Validate a decoded JSON/YAML document; raise ConfigError naming the key at fault."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the configuration must be a mapping with filterData and modelData, got {type(data).__name__}"
        )
    for section in ("filterData", "modelData"):
        if section not in data:
            raise ConfigError(f"{section} is missing")
        if not isinstance(data[section], Mapping):
            raise ConfigError(f"{section} must be a mapping, got {data[section]!r}")
    fd, md = data["filterData"], data["modelData"]

    gamma = _number(fd, "filterData", "gammaFactor")
    error_level: float | tuple[float, ...]
    if isinstance(fd.get("errorLevel"), list):
        error_level = _vector(fd, "filterData", "errorLevel", positive=True)
        if len(error_level) != n_observations:
            raise ConfigError(
                f"filterData.errorLevel has {len(error_level)} values but the model has {n_observations} observations"
            )
    else:
        error_level = _number(fd, "filterData", "errorLevel")
    t_percentile = _number(fd, "filterData", "tPercentile")

    state_space = fd.get("stateSpace", "linear")
    if state_space not in STATE_SPACES:
        raise ConfigError(f"filterData.stateSpace must be one of {', '.join(STATE_SPACES)}, got {state_space!r}")
    adaptive = fd.get("adaptive", True)
    if not isinstance(adaptive, bool):
        raise ConfigError(f"filterData.adaptive must be true or false, got {adaptive!r}")
    iterations = fd.get("iterations", 3)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or not 1 <= iterations <= 20:
        raise ConfigError(f"filterData.iterations must be an integer from 1 to 20, got {iterations!r}")
    nis_gate = fd.get("nisGate")
    if nis_gate is True:
        nis_gate = DEFAULT_GATE
    elif nis_gate is False:
        nis_gate = None
    if nis_gate is not None:
        nis_gate = _number({"nisGate": nis_gate}, "filterData", "nisGate")
        if not 0 < nis_gate < 1:
            raise ConfigError(f"filterData.nisGate is a probability strictly between 0 and 1, got {nis_gate!r}")
    gate_warmup = fd.get("gateWarmup", 10)
    if isinstance(gate_warmup, bool) or not isinstance(gate_warmup, int) or gate_warmup < 0:
        raise ConfigError(f"filterData.gateWarmup must be a non-negative integer, got {gate_warmup!r}")

    relative_noise = fd.get("relativeNoise", True)
    if not isinstance(relative_noise, bool):
        raise ConfigError(f"filterData.relativeNoise must be true or false, got {relative_noise!r}")
    drift_fraction = _number(fd, "filterData", "driftFraction", default=0.02)
    rate_window = _number(fd, "filterData", "rateWindowMinutes", positive=False, default=0.0)
    if rate_window < 0:
        raise ConfigError(f"filterData.rateWindowMinutes must be 0 (exact rates) or positive, got {rate_window!r}")

    positive_state = state_space == "log"
    init_state = _vector(md, "modelData", "initState", positive=positive_state)
    n = len(init_state)
    raw_change = md.get("percentChange")
    if isinstance(raw_change, (int, float)) and not isinstance(raw_change, bool):
        raw_change = [raw_change] * n  # one figure for every state entry
        md = {**md, "percentChange": raw_change}
    percent_change = _vector(md, "modelData", "percentChange", positive=True)
    if len(percent_change) != n:
        raise ConfigError(f"modelData.percentChange has {len(percent_change)} values but initState has {n}")

    bounded = md.get("boundedState", False)
    if not isinstance(bounded, bool):
        raise ConfigError(f"modelData.boundedState must be true or false, got {bounded!r}")
    min_state = max_state = None
    if bounded:
        min_state = _vector(md, "modelData", "minState", positive=positive_state)
        max_state = _vector(md, "modelData", "maxState", positive=positive_state)
        for key, vec in (("minState", min_state), ("maxState", max_state)):
            if len(vec) != n:
                raise ConfigError(f"modelData.{key} has {len(vec)} values but initState has {n}")
        for i, (lo, x0, hi) in enumerate(zip(min_state, init_state, max_state, strict=True)):
            if not lo < hi:
                raise ConfigError(f"modelData.minState[{i}]={lo:g} must be below maxState[{i}]={hi:g}")
            if not lo <= x0 <= hi:
                raise ConfigError(f"modelData.initState[{i}]={x0:g} lies outside [{lo:g}, {hi:g}]")

    expected = _vector(md, "modelData", "expectedObservations", positive=True)
    if len(expected) != n_observations:
        raise ConfigError(
            f"modelData.expectedObservations has {len(expected)} values but the model has {n_observations} observations"
        )
    return FilterConfig(
        gamma_factor=gamma,
        error_level=error_level,
        t_percentile=t_percentile,
        init_state=init_state,
        percent_change=percent_change,
        bounded_state=bounded,
        min_state=min_state,
        max_state=max_state,
        expected_observations=expected,
        state_space=state_space,
        adaptive=adaptive,
        iterations=iterations,
        nis_gate=nis_gate,
        gate_warmup=gate_warmup,
        relative_noise=relative_noise,
        drift_fraction=drift_fraction,
        rate_window_minutes=rate_window,
    )


def parse_config_text(text: str, source: str = "configuration", n_observations: int = 2) -> FilterConfig:
    """Parse JSON or YAML text (YAML is a superset of JSON, but JSON errors read better)."""
    stripped = text.lstrip()
    try:
        data = json.loads(text) if stripped.startswith("{") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{where}") from None
    try:
        return parse_config(data, n_observations)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: str | Path, n_observations: int = 2) -> FilterConfig:
    """Read a JSON or YAML configuration file."""
    return parse_config_text(read_text(path, ConfigError), str(path), n_observations)


def config_to_json(config: FilterConfig) -> str:
    return json.dumps(config.to_mapping(), indent=2)


def default_config() -> FilterConfig:
    """The seed demo's configuration (also shipped as sample_data/config.json)."""
    return parse_config(
        {
            "filterData": {"gammaFactor": 1.0, "errorLevel": 0.05, "tPercentile": 1.96},
            "modelData": {
                "initState": [4.0, 0.2],
                "percentChange": [0.1, 0.1],
                "boundedState": True,
                "minState": [0.1, 0.001],
                "maxState": [50.0, 2.0],
                "expectedObservations": [200.0, 2.0],
            },
        }
    )
