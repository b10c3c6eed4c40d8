from pathlib import Path

import pytest

from gradlog.analysis import AnalysisConfig
from gradlog.errors import ConfigError


def test_replace_and_toml(tmp_path: Path) -> None:
    p = tmp_path / "a.toml"
    p.write_text('[analysis]\nspike_z = 8\ndisabled = ["loss"]\nmax_events = 3\n')
    cfg = AnalysisConfig.from_toml(p)
    assert cfg.spike_z == 8.0
    assert cfg.disabled == ("loss",)
    assert cfg.max_events == 3
    assert cfg.replace(spike_z="4.5").spike_z == 4.5


def test_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown analysis setting 'nope'; allowed:"):
        AnalysisConfig().replace(nope=1)
    with pytest.raises(ConfigError, match="max_events must be a non-negative integer"):
        AnalysisConfig().replace(max_events=1.5)
    p = tmp_path / "b.toml"
    p.write_text("spike_z = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        AnalysisConfig.from_toml(p)
