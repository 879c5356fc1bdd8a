"""Configuration parsing: the seed's JSON, the same keys in YAML, and errors that name the key."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from tuner.config import FilterConfig, default_config, load_config, parse_config, parse_config_text
from tuner.errors import ConfigError

SEED_JSON = Path(__file__).resolve().parent.parent / "sample_data" / "config.json"


def seed_mapping() -> dict:
    return json.loads(SEED_JSON.read_text())


def test_seed_json_parses_to_the_seed_values():
    cfg = load_config(SEED_JSON)
    assert isinstance(cfg, FilterConfig)
    assert cfg.gamma_factor == 1.0
    assert cfg.error_level == 0.05
    assert cfg.t_percentile == 1.96
    assert cfg.init_state == (4.0, 0.2)
    assert cfg.percent_change == (0.1, 0.1)
    assert cfg.bounded_state is True
    assert cfg.min_state == (0.1, 0.001)
    assert cfg.max_state == (50.0, 2.0)
    assert cfg.expected_observations == (200.0, 2.0)
    assert cfg == default_config()


def test_same_keys_in_yaml_give_an_equal_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(seed_mapping(), default_flow_style=False))
    assert not path.read_text().lstrip().startswith("{")
    assert load_config(path) == load_config(SEED_JSON)


def test_handwritten_yaml(tmp_path):
    text = """
filterData:
  gammaFactor: 1.0
  errorLevel: 0.05
  tPercentile: 1.96
modelData:
  initState: [4.0, 0.2]
  percentChange: [0.1, 0.1]
  boundedState: true
  minState: [0.1, 0.001]
  maxState: [50.0, 2.0]
  expectedObservations: [200.0, 2.0]
"""
    assert parse_config_text(text) == load_config(SEED_JSON)


def test_noise_scale_is_the_seeds_formula():
    m = seed_mapping()
    m["filterData"].update(gammaFactor=4.0, errorLevel=0.1, tPercentile=2.0)
    cfg = parse_config(m)
    assert list(cfg.noise_scale) == pytest.approx([0.1 / 2.0 / 2.0] * 2, rel=1e-15)


@pytest.mark.parametrize("over", [
    {},
    {"filterData": {"stateSpace": "log", "adaptive": False, "iterations": 5, "nisGate": 0.99, "gateWarmup": 3,
                    "relativeNoise": False, "driftFraction": 0.2, "errorLevel": [0.05, 0.02],
                    "rateWindowMinutes": 5}},
    {"modelData": {"boundedState": False}},
])
def test_to_mapping_round_trips(over):
    m = seed_mapping()
    for section, values in over.items():
        m[section].update(values)
        if values.get("boundedState") is False:
            del m["modelData"]["minState"], m["modelData"]["maxState"]
    cfg = parse_config(m)
    again = parse_config(cfg.to_mapping())
    assert again == cfg
    assert parse_config(json.loads(json.dumps(cfg.to_mapping()))) == cfg


def _mutate(path: tuple[str, ...], value=None, delete=False) -> dict:
    m = copy.deepcopy(seed_mapping())
    node = m
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return m


BAD = [
    pytest.param(_mutate(("modelData", "minState"), [0.1, 0.001, 0.5]),
                 ["modelData.minState has 3 values but initState has 2"], id="minState-length"),
    pytest.param(_mutate(("modelData", "maxState"), [50.0]),
                 ["modelData.maxState has 1 values but initState has 2"], id="maxState-length"),
    pytest.param(_mutate(("modelData", "percentChange"), [0.1, 0.1, 0.1]),
                 ["modelData.percentChange has 3 values but initState has 2"], id="percentChange-length"),
    pytest.param(_mutate(("filterData", "gammaFactor"), delete=True), ["filterData.gammaFactor", "missing"],
                 id="missing-gammaFactor"),
    pytest.param(_mutate(("modelData", "initState"), delete=True), ["modelData.initState", "missing"],
                 id="missing-initState"),
    pytest.param(_mutate(("modelData", "expectedObservations"), delete=True),
                 ["modelData.expectedObservations", "missing"], id="missing-expected"),
    pytest.param(_mutate(("modelData",), delete=True), ["modelData", "missing"], id="missing-section"),
    pytest.param(_mutate(("filterData", "errorLevel"), "five"), ["filterData.errorLevel", "number", "five"],
                 id="non-numeric-errorLevel"),
    pytest.param(_mutate(("modelData", "initState"), [4.0, "x"]), ["modelData.initState[1]", "number"],
                 id="non-numeric-initState"),
    pytest.param(_mutate(("filterData", "tPercentile"), True), ["filterData.tPercentile", "number"],
                 id="bool-tPercentile"),
    pytest.param(_mutate(("filterData", "tPercentile"), -1.96), ["filterData.tPercentile", "positive"],
                 id="negative-tPercentile"),
    pytest.param(_mutate(("filterData", "gammaFactor"), 0), ["filterData.gammaFactor", "positive"],
                 id="zero-gammaFactor"),
    pytest.param(_mutate(("modelData", "percentChange"), [0.1, -0.1]), ["modelData.percentChange[1]", "positive"],
                 id="negative-percentChange"),
    pytest.param(_mutate(("modelData", "expectedObservations"), [200.0, -2.0]),
                 ["modelData.expectedObservations[1]", "positive"], id="negative-expected"),
    pytest.param(_mutate(("modelData", "minState"), [60.0, 0.001]), ["minState[0]", "maxState[0]", "below"],
                 id="min-above-max"),
    pytest.param(_mutate(("modelData", "minState"), [50.0, 0.001]), ["minState[0]", "maxState[0]", "below"],
                 id="min-equals-max"),
    pytest.param(_mutate(("modelData", "initState"), [60.0, 0.2]), ["modelData.initState[0]", "outside"],
                 id="init-outside-bounds"),
    pytest.param(_mutate(("filterData", "errorLevel"), [0.05, 0.05, 0.05]),
                 ["filterData.errorLevel has 3 values", "2 observations"], id="errorLevel-list-length"),
    pytest.param(_mutate(("modelData", "expectedObservations"), [200.0]),
                 ["modelData.expectedObservations has 1 values", "2 observations"], id="expected-length"),
    pytest.param(_mutate(("filterData", "iterations"), 0), ["filterData.iterations"], id="iterations-zero"),
    pytest.param(_mutate(("filterData", "nisGate"), 1.5), ["filterData.nisGate"], id="nisGate-above-one"),
    pytest.param(_mutate(("filterData", "stateSpace"), "cubic"), ["filterData.stateSpace", "cubic"],
                 id="bad-stateSpace"),
    pytest.param(_mutate(("modelData", "boundedState"), "yes"), ["modelData.boundedState"], id="bad-boundedState"),
    pytest.param(_mutate(("filterData", "rateWindowMinutes"), -1), ["filterData.rateWindowMinutes", "0"],
                 id="negative-rateWindowMinutes"),
    pytest.param(_mutate(("filterData", "rateWindowMinutes"), "1m"), ["filterData.rateWindowMinutes", "number"],
                 id="text-rateWindowMinutes"),
    pytest.param([1, 2], ["mapping"], id="not-a-mapping"),
]


@pytest.mark.parametrize(("data", "fragments"), BAD)
def test_bad_config_names_key_and_problem(data, fragments):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "\n" not in message


def test_mismatch_message_is_exactly_the_issues_example():
    with pytest.raises(ConfigError, match=r"^modelData\.minState has 3 values but initState has 2$"):
        parse_config(_mutate(("modelData", "minState"), [0.1, 0.001, 0.5]))


def test_bad_json_text_gives_line_number(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "filterData": {\n    "gammaFactor": 1.0,,\n  }\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "JSON" in message and "line 3" in message


def test_bad_yaml_text_gives_line_number(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("filterData:\n  gammaFactor: 1.0\n  errorLevel: [0.05\nmodelData: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "YAML" in message
    assert "line 4" in message


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.json")


def test_file_errors_are_prefixed_with_the_path(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_mutate(("modelData", "minState"), [0.1, 0.001, 0.5])))
    with pytest.raises(ConfigError, match=r"c\.json: modelData\.minState has 3 values but initState has 2"):
        load_config(path)


def test_nis_gate_true_means_the_975_level_and_false_disables_it():
    from tuner.config import default_config, parse_config

    mapping = default_config().to_mapping()
    mapping["filterData"]["nisGate"] = True
    assert parse_config(mapping).nis_gate == 0.975
    mapping["filterData"]["nisGate"] = False
    assert parse_config(mapping).nis_gate is None
    mapping["filterData"]["nisGate"] = 1.5
    with pytest.raises(ConfigError, match=r"filterData\.nisGate"):
        parse_config(mapping)
