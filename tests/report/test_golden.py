"""Golden-structure tests of the templates: sections, headings, charts, traces, table columns.

Regenerate after an intended change with ``GRADLOG_REGEN_GOLDEN=1 pytest tests/report``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gradlog.report import build_report
from tests.report.structure import structure

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("GRADLOG_REGEN_GOLDEN") == "1"


def _check(name: str, html: str) -> None:
    got = structure(html)
    path = GOLDEN / f"{name}.json"
    if REGEN or not path.exists():
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        if not REGEN:
            pytest.fail(f"{path} did not exist and was written; check it and commit it")
        return
    want = json.loads(path.read_text(encoding="utf-8"))
    assert got == want, (
        f"structure of {name} changed; rerun with GRADLOG_REGEN_GOLDEN=1 if intended"
    )


def test_run_page_structure(runs_root: Path, tmp_path: Path) -> None:
    run = sorted(runs_root.iterdir())[0]
    _check("run", build_report([run], tmp_path / "run.html").read_text(encoding="utf-8"))


def test_batch_page_structure(runs_root: Path, tmp_path: Path) -> None:
    _check("batch", build_report([runs_root], tmp_path / "b.html").read_text(encoding="utf-8"))
