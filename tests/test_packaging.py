"""Packaging: metadata, true dependency floors, and a fresh venv without torch that installs the
wheel built from the sdist and runs ``gradlog analyze`` and ``gradlog report`` on the committed
sample logs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

import pytest

from gradlog import requirements
from tests.floors import floors, project

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_runs" / "logs"


def test_distribution_name_license_urls_and_classifiers() -> None:
    meta = project()
    assert meta["name"] == "torch-gradlog"  # 'gradlog' on the index is another project
    assert meta["license"] == "Apache-2.0"
    assert meta["license-files"] == ["LICENSE"]
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text
    assert "Version 2.0, January 2004" in license_text
    urls = meta["urls"]
    assert isinstance(urls, dict)
    assert {"Homepage", "Source", "Issues"} <= set(urls)
    classifiers = meta["classifiers"]
    assert isinstance(classifiers, list)
    assert "Typing :: Typed" in classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # SPDX expression instead


def test_torch_is_an_extra_not_a_dependency() -> None:
    meta = project()
    deps = meta["dependencies"]
    extras = meta["optional-dependencies"]
    assert isinstance(deps, list)
    assert isinstance(extras, dict)
    assert not [d for d in deps if d.startswith("torch")]
    assert extras["torch"] == ["torch>=2.4"]


def test_runtime_floors_are_the_checked_ones() -> None:
    assert floors() == requirements.MINIMUM
    assert floors()["polars"] == "1.32"


def test_an_old_dependency_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.version
    monkeypatch.setattr(
        metadata,
        "version",
        lambda name: "1.20.0" if name == "polars" else real(name),
    )
    with pytest.raises(requirements.DependencyError, match=r"polars 1\.20\.0 \(needs >= 1\.32\)"):
        requirements.check()
    assert requirements.version_tuple("15") == requirements.version_tuple("15.0.0")
    assert requirements.version_tuple("1.32.0rc1") > requirements.version_tuple("1.31.9")


def test_readme_images_and_links_are_absolute() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert images
    assert all(i.startswith("https://") for i in images)
    assert "pip install torch-gradlog" in readme


def _run(
    cmd: list[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=cwd,
        env=env,
    )


def test_wheel_from_sdist_works_without_torch(tmp_path: Path) -> None:
    """sdist -> wheel -> a fresh venv (no torch, no system site-packages) -> the CLI."""
    dist = tmp_path / "dist"
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    built = _run([sys.executable, "-c", code, dist], cwd=ROOT)
    assert built.returncode == 0, built.stderr[-3000:]
    sdist = dist / built.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    assert "LICENSE" in names
    assert "gradlog/report/templates" in {str(Path(n).parent) for n in names}
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "sample_runs/"))]
    wheel = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            dist,
            sdist,
        ]
    )
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    whl = next(dist.glob("torch_gradlog-*.whl"))

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", venv])
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    # The same versions as the development venv (pip's cache serves them); torch is not asked
    # for, so resolving the wheel's own dependencies must not pull it in.
    pins = tmp_path / "constraints.txt"
    pinned = {
        d.metadata["Name"].lower()
        for d in metadata.distributions()
        if d.metadata["Name"] and not d.metadata["Name"].lower().startswith(("torch", "gradlog"))
    }  # one pin per name: a stale second dist-info must not pin two versions
    pins.write_text("\n".join(f"{n}=={metadata.version(n)}" for n in sorted(pinned)))
    installed = _run([py, "-m", "pip", "install", "-q", "-c", pins, whl])
    assert installed.returncode == 0, "\n".join(
        line for line in installed.stderr.splitlines() if not line.startswith("WARNING")
    )[-3000:]
    assert _run([py, "-c", "import torch"]).returncode == 1

    recorder = _run([py, "-c", "from gradlog import Recorder"])
    assert "ImportError" in recorder.stderr
    assert "torch-gradlog[torch]" in recorder.stderr

    logs = tmp_path / "logs"
    tracked = _run(["git", "ls-files", "sample_runs/logs"], cwd=ROOT).stdout.split()
    for name in tracked or [str(p.relative_to(ROOT)) for p in SAMPLES.rglob("*") if p.is_file()]:
        target = logs / Path(name).relative_to("sample_runs/logs")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    gradlog = venv / "bin" / "gradlog"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    analysed = _run([gradlog, "analyze", logs, "-q"], cwd=tmp_path, env=env)
    assert analysed.returncode == 0, analysed.stdout + analysed.stderr
    n = len(list(logs.glob("*/*/meta.json")))
    assert analysed.stdout.startswith(f"gradlog: {n} runs (0 broken)")
    gate = _run([gradlog, "analyze", logs, "--fail-on", "error", "-qq"], cwd=tmp_path, env=env)
    assert (gate.returncode, gate.stdout, gate.stderr) == (1, "", "")  # nan_backward: error
    out = tmp_path / "report" / "index.html"
    reported = _run([gradlog, "report", logs, "-o", out], cwd=tmp_path, env=env)
    assert reported.returncode == 0, reported.stdout + reported.stderr
    assert out.is_file()
    assert len(list((out.parent / "runs").glob("*.html"))) == n
