"""Simulation scenarios: phases of constant load and true parameters.

A scenario file is YAML (or JSON) with a ``defaults:`` mapping and a list of
``phases:``; each phase overrides any default. The keys are exactly ``steps``,
``rpm``, ``avg_tokens``, ``max_batch``, ``alpha``, ``beta`` and ``noise`` (a fraction:
0.05 is ±5 % uniform multiplicative noise on both observations). ``rpm`` may also be a
list, cycled through step by step, for a load that varies inside a phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import ScenarioError
from tuner.textfile import read_text

KEYS = ("steps", "rpm", "avg_tokens", "max_batch", "alpha", "beta", "noise")


@dataclass(frozen=True)
class Phase:
    steps: int
    rpm: tuple[float, ...]
    """Arrival rates cycled through step by step (one value: constant load)."""
    avg_tokens: float
    max_batch: int
    alpha: float
    beta: float
    noise: float

    def rpm_at(self, step_in_phase: int) -> float:
        return self.rpm[step_in_phase % len(self.rpm)]


@dataclass(frozen=True)
class Scenario:
    phases: tuple[Phase, ...]

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def to_mapping(self) -> dict[str, Any]:
        return {
            "phases": [
                {
                    "steps": p.steps,
                    "rpm": p.rpm[0] if len(p.rpm) == 1 else list(p.rpm),
                    "avg_tokens": p.avg_tokens,
                    "max_batch": p.max_batch,
                    "alpha": p.alpha,
                    "beta": p.beta,
                    "noise": p.noise,
                }
                for p in self.phases
            ]
        }


def _positive(value: Any, where: str, *, integer: bool = False, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioError(f"{where} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ScenarioError(f"{where} must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")
    if integer and value != int(value):
        raise ScenarioError(f"{where} must be a whole number, got {value!r}")
    return value


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping with 'defaults' and 'phases'")
    unknown = set(data) - {"defaults", "phases", "name", "description"}
    if unknown:
        raise ScenarioError(f"{source}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ScenarioError(f"{source}: defaults must be a mapping")
    phases = data.get("phases")
    if not isinstance(phases, list) or not phases:
        raise ScenarioError(f"{source}: phases must be a non-empty list")
    out = []
    for i, raw in enumerate(phases):
        where = f"{source}: phases[{i}]"
        if not isinstance(raw, dict):
            raise ScenarioError(f"{where} must be a mapping")
        merged = {**defaults, **raw}
        unknown = set(merged) - set(KEYS)
        if unknown:
            raise ScenarioError(
                f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; keys are {', '.join(KEYS)}"
            )
        missing = [k for k in KEYS if k not in merged]
        if missing:
            raise ScenarioError(f"{where}: missing {', '.join(missing)} (in the phase or in defaults)")
        rpm = merged["rpm"]
        rpms = rpm if isinstance(rpm, list) else [rpm]
        if not rpms:
            raise ScenarioError(f"{where}.rpm must not be an empty list")
        noise = _positive(merged["noise"], f"{where}.noise", allow_zero=True)
        if noise >= 1:
            raise ScenarioError(f"{where}.noise is a fraction below 1 (0.05 is ±5 %), got {noise!r}")
        out.append(
            Phase(
                steps=int(_positive(merged["steps"], f"{where}.steps", integer=True)),
                rpm=tuple(float(_positive(r, f"{where}.rpm")) for r in rpms),
                avg_tokens=float(_positive(merged["avg_tokens"], f"{where}.avg_tokens")),
                max_batch=int(_positive(merged["max_batch"], f"{where}.max_batch", integer=True)),
                alpha=float(_positive(merged["alpha"], f"{where}.alpha")),
                beta=float(_positive(merged["beta"], f"{where}.beta")),
                noise=float(noise),
            )
        )
    return Scenario(tuple(out))


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    text = read_text(path, ScenarioError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ScenarioError(f"{path}: not valid YAML") from None
    return parse_scenario(data, str(path))


def seed_scenario() -> Scenario:
    """The seed's 3-phase demo (also shipped as sample_data/scenario-seed.yaml)."""
    base = {"steps": 20, "rpm": 35.2, "avg_tokens": 1024, "max_batch": 48, "noise": 0.05}
    return parse_scenario(
        {
            "defaults": base,
            "phases": [{"alpha": 18, "beta": 1}, {"alpha": 22, "beta": 0.7}, {"alpha": 18, "beta": 1}],
        }
    )
