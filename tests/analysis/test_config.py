"""AnalysisConfig: TOML and --set overrides, and every bad value refused in one line that names
the key, the value and the allowed range."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.config import allowed_values
from gradlog.errors import ConfigError

DOCS = Path(__file__).parents[2] / "docs" / "ANALYSIS.md"


def _set(**values: str) -> AnalysisConfig:
    return AnalysisConfig().with_settings(values, source="--set", text=True)


def _toml(tmp_path: Path, text: str) -> AnalysisConfig:
    p = tmp_path / "a.toml"
    p.write_text(text)
    return AnalysisConfig.from_toml(p)


def test_replace_and_toml(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, '[analysis]\nspike_z = 8\ndisabled = ["loss"]\nmax_events = 3\n')
    assert cfg.spike_z == 8.0
    assert isinstance(cfg.spike_z, float)
    assert cfg.disabled == ("loss",)
    assert cfg.max_events == 3
    assert cfg.replace(spike_z="4.5").spike_z == 4.5
    assert _set(disabled="spikes, loss", spike_window="7").disabled == ("spikes", "loss")


def test_every_default_passes_and_has_a_declared_type_and_range() -> None:
    cfg = AnalysisConfig()
    hints = typing.get_type_hints(AnalysisConfig)
    for f in dataclasses.fields(cfg):
        assert "allowed" in f.metadata, f.name
        assert typing.get_origin(hints[f.name]) or hints[f.name] is type(f.default), f.name
        # the default round-trips through TOML-typed and --set-typed checking
        value = getattr(cfg, f.name)
        assert cfg.with_settings({f.name: value}, source="x", text=False) == cfg
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        if text:
            assert cfg.with_settings({f.name: text}, source="x", text=True) == cfg


def test_docs_name_every_setting_with_its_range() -> None:
    section = DOCS.read_text().split("Every setting has a type and an allowed range")[1]
    section = section.split("\n\n", 2)[1]
    for f in dataclasses.fields(AnalysisConfig):
        line = next((ln for ln in section.splitlines() if f"`{f.name}`" in ln), None)
        assert line is not None, f.name
        kind = allowed_values(f).split(" in ")[0].split(" >")[0].split()[-1]
        assert kind.rstrip("s") in line or "fraction" in line, (f.name, line)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"spike_window": "0"}, r"^spike_window must be an integer >= 1, got 0 \(from --set\)$"),
        ({"min_window": "-3"}, r"^min_window must be an integer >= 1, got -3 \(from --set\)$"),
        ({"max_events": "1.5"}, r"^max_events must be an integer >= 0, got 1.5 \(from --set\)$"),
        ({"spike_z": "0"}, r"^spike_z must be a number > 0, got 0 \(from --set\)$"),
        ({"spike_z": "true"}, r"^spike_z must be a number > 0, got true \(from --set\)$"),
        ({"spike_z": "high"}, r"^spike_z must be a number > 0, got high \(from --set\)$"),
        ({"spike_z": "nan"}, r"^spike_z must be a number > 0, got nan \(from --set\)$"),
        ({"spike_z": "inf"}, r"^spike_z must be a number > 0, got inf \(from --set\)$"),
        ({"spike_z": "-Infinity"}, r"^spike_z must be a number > 0, got -Infinity \(from --set\)"),
        ({"spike_z": ""}, r"^spike_z must be a number > 0, got '' \(from --set\)$"),
        ({"window_frac": "1.5"}, r"^window_frac must be a number in \(0, 1\], got 1.5 \(from"),
        ({"window_frac": "0"}, r"^window_frac must be a number in \(0, 1\], got 0 \(from --set"),
        ({"dying_zero_frac": "-0.1"}, r"^dying_zero_frac must be a number in \[0, 1\], got -0.1"),
        ({"spike_z": "8\x1b[31m"}, r"^spike_z must be a number > 0, got '8\\x1b\[31m' \(from"),
        ({"loss_name": " "}, r"^loss_name must be a non-empty string, got ' ' \(from --set\)$"),
        ({"disabled": "a,,b"}, None),  # empty items are dropped, not an error
        ({"spike_windw": "3"}, r"^unknown analysis setting spike_windw \(from --set\); did you "),
        ({"nope": "1"}, r"^unknown analysis setting nope \(from --set\); known: adam_eps_ratio, "),
        (
            {"update_ratio_high": "1e-5"},
            r"^update_ratio_low < update_ratio_high with update_ratio_target between them, got "
            r"low 0.0001, target 0.001, high 1e-05 \(from --set\)$",
        ),
    ],
)
def test_bad_set_values_are_one_line_naming_key_value_and_range(
    values: dict[str, str], message: str | None
) -> None:
    if message is None:
        assert _set(**values).disabled == ("a", "b")
        return
    with pytest.raises(ConfigError, match=message) as info:
        _set(**values)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("spike_z = true", r"^spike_z must be a number > 0, got true \(from .*a.toml\)$"),
        ("spike_window = true", r"^spike_window must be an integer >= 1, got true \(from "),
        ("spike_window = 5.0", r"^spike_window must be an integer >= 1, got 5.0 \(from "),
        ("spike_window = 0", r"^spike_window must be an integer >= 1, got 0 \(from "),
        ("spike_z = nan", r"^spike_z must be a number > 0, got nan \(from "),
        ("spike_z = -inf", r"^spike_z must be a number > 0, got -inf \(from "),
        ("spike_z = '8'", r"^spike_z must be a number > 0, got '8' \(from "),
        ("spike_z = [1]", r"^spike_z must be a number > 0, got \[1\] \(from "),
        ("loss_name = 3", r"^loss_name must be a non-empty string, got 3 \(from "),
        ("loss_name = false", r"^loss_name must be a non-empty string, got false \(from "),
        ("disabled = 'spikes'", r"^disabled must be a list of names, got 'spikes' \(from "),
        ("disabled = [1]", r"^disabled must be a list of names, got \[1\] \(from "),
        ("disabled = ['']", r"^disabled must be a list of names, got \[''\] \(from "),
        ("[analysis.spikes]\nz = 1", r"^unknown analysis setting spikes \(from .*\); did you "),
        ("[other]\nz = 1", r"^unknown analysis setting other \(from .*a.toml\); known: "),
        ("analysis = 3", r"^config file .*a.toml: analysis must be a table, got 3$"),
        ("spike_z = [", r"^config file .*a.toml is not valid TOML: "),
        ("spike_z = " + "[" * 100_000 + "]" * 100_000, r"^config file .*a.toml is nested too deep"),
        ("a = " + "{b = " * 5_000 + "1" + "}" * 5_000, r"^config file .*a.toml is nested too deep"),
        ("[" + ".".join(["x"] * 5_000) + "]", r"^unknown analysis setting x \(from .*a.toml\)"),
        ("spike_z = " + "[" * 300 + "]" * 300, r"^spike_z must be a number > 0, got \[+\.\.\. \("),
    ],
)
def test_bad_toml_is_one_line_naming_key_value_and_range(
    tmp_path: Path, toml: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _toml(tmp_path, toml + "\n")
    assert "\n" not in str(info.value)


def test_unreadable_toml_file_is_named(tmp_path: Path) -> None:
    p = tmp_path / "b.toml"
    p.write_bytes(b"spike_z = '\xff'\n")
    with pytest.raises(ConfigError, match=r"^config file .*b.toml is not valid TOML: .*$"):
        AnalysisConfig.from_toml(p)
    with pytest.raises(ConfigError, match=r"^cannot read config file .*nope.toml: "):
        AnalysisConfig.from_toml(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"^cannot read config file .*: Is a directory$"):
        AnalysisConfig.from_toml(tmp_path)


def test_python_construction_is_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"^spike_window must be an integer >= 1, got 0$"):
        AnalysisConfig(spike_window=0)
    with pytest.raises(ConfigError, match=r"^spike_z must be a number > 0, got true$"):
        AnalysisConfig(spike_z=True)
    with pytest.raises(ConfigError, match=r"^max_events must be an integer >= 0, got 2.0$"):
        AnalysisConfig(max_events=2.0)  # type: ignore[arg-type]
    assert AnalysisConfig(spike_z=8).spike_z == 8.0
    assert AnalysisConfig(disabled=["loss"]).disabled == ("loss",)  # type: ignore[arg-type]
