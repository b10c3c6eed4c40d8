from typing import Any

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.groups import describe_fixed, differing_keys, is_run_key, sweep_groups


def test_run_keys_are_not_setup() -> None:
    cfg = AnalysisConfig()
    assert is_run_key("seed", cfg)
    assert is_run_key("data_seed", cfg)
    assert is_run_key("Name", cfg)
    assert not is_run_key("model_name", cfg)  # which model is setup, not a run's label
    assert not is_run_key("lr", cfg)


def test_differing_keys() -> None:
    cfg = AnalysisConfig()
    a = {"lr": 0.1, "batch_size": 64, "seed": 0, "name": "a", "layers": [64, 64]}
    b = {"lr": 0.01, "batch_size": 64.0, "seed": 1, "name": "b", "layers": [64, 64]}
    assert differing_keys(a, b, cfg) == ["lr"]
    assert differing_keys(a, {**b, "momentum": 0.9}, cfg) == ["lr", "momentum"]
    assert differing_keys(a, {**a, "layers": [64, 32]}, cfg) == ["layers"]


def test_sweep_groups_split_by_the_other_keys() -> None:
    cfg = AnalysisConfig()
    configs: list[dict[str, Any]] = [
        {"lr": 0.1, "optimizer": "SGD", "seed": 0},
        {"lr": 0.01, "optimizer": "SGD", "seed": 1},
        {"lr": 0.001, "optimizer": "Adam"},
        {"lr": 0.01, "optimizer": "Adam"},
        {"optimizer": "Adam"},  # no lr: in no lr group
    ]
    assert sweep_groups(configs, "lr", cfg) == [[0, 1], [2, 3]]
    assert describe_fixed(configs, [2, 3], [[0, 1]], "lr", cfg) == "optimizer=Adam"
    assert describe_fixed(configs, [0, 1], [], "lr", cfg) == ""
