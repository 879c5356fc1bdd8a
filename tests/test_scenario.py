"""Scenario files: defaults + phases, overrides, and errors naming phases[i].key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tuner.errors import ScenarioError
from tuner.scenario import KEYS, Phase, load_scenario, parse_scenario, seed_scenario

SEED_YAML = Path(__file__).resolve().parent.parent / "sample_data" / "scenario-seed.yaml"
DEFAULTS = {"steps": 20, "rpm": 35.2, "avg_tokens": 1024, "max_batch": 48, "noise": 0.05}


def test_keys_are_exactly_the_shared_ones():
    assert KEYS == ("steps", "rpm", "avg_tokens", "max_batch", "alpha", "beta", "noise")


def test_shipped_seed_yaml_equals_seed_scenario():
    scenario = load_scenario(SEED_YAML)
    assert scenario == seed_scenario()
    assert scenario.total_steps == 60
    assert [(p.alpha, p.beta) for p in scenario.phases] == [(18.0, 1.0), (22.0, 0.7), (18.0, 1.0)]
    for p in scenario.phases:
        assert (p.steps, p.rpm, p.avg_tokens, p.max_batch, p.noise) == (20, (35.2,), 1024.0, 48, 0.05)


@pytest.mark.parametrize("key,value,expected", [
    ("steps", 7, 7), ("rpm", 12.5, (12.5,)), ("avg_tokens", 300, 300.0), ("max_batch", 8, 8),
    ("alpha", 9.5, 9.5), ("beta", 0.25, 0.25), ("noise", 0.1, 0.1), ("noise", 0, 0.0),
])
def test_each_phase_key_overrides_the_default(key, value, expected):
    data = {"defaults": {**DEFAULTS, "alpha": 18, "beta": 1}, "phases": [{}, {key: value}]}
    scenario = parse_scenario(data)
    first, second = scenario.phases
    assert getattr(second, key) == expected
    for other in KEYS:
        if other != key:
            assert getattr(second, other) == getattr(first, other)


def test_phases_without_defaults():
    phase = {**DEFAULTS, "alpha": 5, "beta": 0.5}
    scenario = parse_scenario({"phases": [phase]})
    assert scenario.phases == (Phase(20, (35.2,), 1024.0, 48, 5.0, 0.5, 0.05),)


def test_rpm_list_cycles():
    scenario = parse_scenario({"defaults": DEFAULTS, "phases": [{"alpha": 18, "beta": 1, "rpm": [20, 30, 40]}]})
    phase = scenario.phases[0]
    assert [phase.rpm_at(k) for k in range(7)] == [20.0, 30.0, 40.0, 20.0, 30.0, 40.0, 20.0]


def test_to_mapping_round_trips():
    scenario = parse_scenario({"defaults": DEFAULTS, "phases": [{"alpha": 18, "beta": 1, "rpm": [20, 30]},
                                                                 {"alpha": 22, "beta": 0.7}]})
    assert parse_scenario(scenario.to_mapping()) == scenario


def _bad(phase_override, defaults=None):
    return {"defaults": defaults if defaults is not None else {**DEFAULTS, "alpha": 18, "beta": 1},
            "phases": [{}, phase_override]}


@pytest.mark.parametrize(("data", "fragments"), [
    pytest.param(_bad({"gamma": 1}), ["phases[1]", "unknown", "gamma"], id="unknown-key"),
    pytest.param(_bad({"alpha": 1}, defaults=DEFAULTS), ["phases[0]", "missing", "alpha", "beta"],
                 id="missing-key"),
    pytest.param(_bad({"alpha": -1}), ["phases[1].alpha", "positive"], id="negative-alpha"),
    pytest.param(_bad({"beta": 0}), ["phases[1].beta", "positive"], id="zero-beta"),
    pytest.param(_bad({"rpm": -35}), ["phases[1].rpm", "positive"], id="negative-rpm"),
    pytest.param(_bad({"rpm": [20, -1]}), ["phases[1].rpm", "positive"], id="negative-rpm-in-list"),
    pytest.param(_bad({"rpm": []}), ["phases[1].rpm", "empty"], id="empty-rpm-list"),
    pytest.param(_bad({"avg_tokens": -1}), ["phases[1].avg_tokens"], id="negative-tokens"),
    pytest.param(_bad({"max_batch": 0}), ["phases[1].max_batch"], id="zero-batch"),
    pytest.param(_bad({"max_batch": 4.5}), ["phases[1].max_batch", "whole"], id="fractional-batch"),
    pytest.param(_bad({"steps": 2.5}), ["phases[1].steps", "whole"], id="fractional-steps"),
    pytest.param(_bad({"steps": "ten"}), ["phases[1].steps", "number"], id="non-numeric-steps"),
    pytest.param(_bad({"noise": -0.1}), ["phases[1].noise", "non-negative"], id="negative-noise"),
    pytest.param(_bad({"noise": 1.0}), ["phases[1].noise", "below 1"], id="noise-one"),
    pytest.param(_bad({"noise": 5}), ["phases[1].noise", "below 1"], id="noise-percent"),
    pytest.param(_bad({"alpha": True}), ["phases[1].alpha", "number"], id="bool-alpha"),
    pytest.param({"phases": []}, ["phases", "non-empty"], id="no-phases"),
    pytest.param({"defaults": DEFAULTS}, ["phases"], id="phases-missing"),
    pytest.param({"phases": [{**DEFAULTS, "alpha": 1, "beta": 1}], "extra": 1}, ["extra"], id="unknown-top-key"),
    pytest.param([1, 2], ["defaults", "phases"], id="not-a-mapping"),
])
def test_bad_scenarios_name_the_phase_and_key(data, fragments):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_load_scenario_errors(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("defaults: {steps: 3\nphases: [\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(bad_yaml)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    bad_key = tmp_path / "key.yaml"
    bad_key.write_text(yaml.safe_dump({"defaults": DEFAULTS, "phases": [{"alpha": 1, "beta": 1, "noize": 0.1}]}))
    with pytest.raises(ScenarioError, match=r"key\.yaml: phases\[0\]: unknown key\(s\) noize"):
        load_scenario(bad_key)
