"""Run names: any text is a name, only a safe slug reaches the disk, and run directories are
always new and always inside the root."""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

import pytest

from gradlog.errors import ConfigError
from gradlog.recorder import naming
from gradlog.recorder.naming import MAX_NAME_CHARS, MAX_SLUG_CHARS, create_run_dir, slugify

SAFE = re.compile(r"[A-Za-z0-9._-]+")
NASTY_NAMES = [
    "../../etc/passwd",
    "..",
    ".",
    "/abs/path",
    "a/b\\c",
    "</script><script>alert(1)</script>",
    "日本語の実験",
    "café crème",
    "x" * 300,
    "é" * 150,  # 300 bytes of UTF-8
    "  spaces  and\ttabs\n",
    "-._leading",
    "",
    "CON",
    "a..b",
    "run:1 | lr=3e-4; rm -rf ~",
]


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_slug_is_file_name_safe(name: str) -> None:
    slug = slugify(name)
    assert SAFE.fullmatch(slug), slug
    assert slug not in (".", "..")
    assert ".." not in slug
    assert not slug.startswith(("-", ".", "_"))
    assert not slug.endswith(("-", ".", "_"))
    assert 1 <= len(slug) <= MAX_SLUG_CHARS


def test_slug_examples() -> None:
    assert slugify("resnet50 lr=0.1") == "resnet50-lr-0.1"
    assert slugify("../../etc/passwd") == "etc-passwd"
    assert slugify("</script>") == "script"
    assert slugify("café crème") == "cafe-creme"
    assert slugify("日本語") == "run"  # nothing ASCII survives: a fixed fallback
    assert slugify("") == "run"
    assert slugify("a..b") == "a.b"
    assert slugify("x" * 300) == "x" * MAX_SLUG_CHARS


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_validate_name_keeps_any_text(name: str) -> None:
    assert naming.validate_name(name) == name


def test_validate_name_rejects_nul_non_str_and_overlong() -> None:
    with pytest.raises(ConfigError, match="run name contains a NUL character"):
        naming.validate_name("a\x00b")
    with pytest.raises(ConfigError, match="run name must be a str, got int"):
        naming.validate_name(3)
    with pytest.raises(ConfigError, match=f"use at most {MAX_NAME_CHARS}"):
        naming.validate_name("x" * (MAX_NAME_CHARS + 1))


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_run_dir_is_created_directly_inside_root(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    run = create_run_dir(root, name)
    assert run.is_dir()
    assert run.parent == root
    assert run.resolve().parent == root.resolve()
    assert list(run.iterdir()) == []
    assert SAFE.fullmatch(run.name)
    assert slugify(name) in run.name
    # Nothing else was created anywhere under tmp_path.
    assert _tree(tmp_path) == {"root", f"root{os.sep}{run.name}"}


def test_same_name_never_collides(tmp_path: Path) -> None:
    runs = [create_run_dir(tmp_path, "same name") for _ in range(50)]
    assert len({r.name for r in runs}) == 50
    assert all(r.is_dir() and list(r.iterdir()) == [] for r in runs)


def test_collision_retries_with_a_new_suffix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = iter(["aaaaaa", "aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(tokens))
    monkeypatch.setattr(time, "strftime", lambda fmt: "20240101-000000")
    first = create_run_dir(tmp_path, "n")
    (first / "keep.txt").write_text("mine")
    second = create_run_dir(tmp_path, "n")
    assert first.name == "20240101-000000-n-aaaaaa"
    assert second.name == "20240101-000000-n-bbbbbb"
    assert (first / "keep.txt").read_text() == "mine"


def test_gives_up_with_a_clear_error_when_every_name_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secrets, "token_hex", lambda n: "cccccc")
    create_run_dir(tmp_path, "n")
    with pytest.raises(ConfigError, match="could not create a unique run directory under"):
        create_run_dir(tmp_path, "n")


def test_shared_run_id_may_exist_and_must_be_safe(tmp_path: Path) -> None:
    a = create_run_dir(tmp_path, "ignored", run_id="job-42.rank-shared")
    b = create_run_dir(tmp_path, "other", run_id="job-42.rank-shared")
    assert a == b == tmp_path / "job-42.rank-shared"
    for bad in ("../escape", "a/b", "", ".", "..", "x y", "é"):
        with pytest.raises(ConfigError, match="is not file-name safe"):
            create_run_dir(tmp_path, "n", run_id=bad)
    assert _tree(tmp_path) == {"job-42.rank-shared"}
