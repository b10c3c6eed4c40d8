"""safe_text: every class of dangerous character escaped, hand-written expectations."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gradlog.terminal import safe_text


def _dangerous(ch: str) -> bool:
    """A control character, bidi control, line separator or surrogate."""
    code = ord(ch)
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or 0x202A <= code <= 0x202E
        or 0x2066 <= code <= 0x2069
        or code in (0x200E, 0x200F, 0x061C, 0x2028, 0x2029)
        or 0xD800 <= code <= 0xDFFF
    )


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("run-1 ünïcode ✓ 学习", "run-1 ünïcode ✓ 学习"),  # printable text is unchanged
        ("a\\x1b", "a\\x1b"),  # a backslash is not a control character
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # ESC (C0)
        ("\x00\x07\x08", "\\x00\\x07\\x08"),  # NUL, BEL, backspace
        ("one\ntwo", "one\\ntwo"),  # a forged newline
        ("ok\rfake", "ok\\rfake"),  # carriage return overwrites the line
        ("a\tb", "a\\tb"),
        ("del\x7f", "del\\x7f"),  # DEL
        ("\x85\x9b2J\x80\x9f", "\\x85\\x9b2J\\x80\\x9f"),  # C1: NEL, CSI, ends of the block
        ("\xa0", "\xa0"),  # a no-break space is printable
        ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override
        ("\u202a\u202b\u202c\u202d", "\\u202a\\u202b\\u202c\\u202d"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),  # isolates
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),  # marks
        ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
        (os.fsdecode(b"run-\xff\xfe"), "run-\\xff\\xfe"),  # undecodable bytes of a file name
        ("\udc80\udcff", "\\x80\\xff"),
        ("\ud800\udfff", "\\ud800\\udfff"),  # other lone surrogates
        ("", ""),
    ],
)
def test_safe_text_escapes_each_class(raw: str, shown: str) -> None:
    assert safe_text(raw) == shown
    shown.encode("utf-8")  # printable anywhere UTF-8 is
    assert not any(map(_dangerous, safe_text(raw)))


def test_safe_text_output_is_all_printable_for_every_bmp_control() -> None:
    everything = "".join(map(chr, range(0x0, 0x3000)))
    assert not any(map(_dangerous, safe_text(everything)))


def test_terminal_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, gradlog.terminal; "
        "heavy = {'polars', 'scipy', 'torch', 'numpy'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
