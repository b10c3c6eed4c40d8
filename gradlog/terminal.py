"""Text from run data made safe to print: no control sequence, forged line or bidi override
reaches the terminal, and no lone surrogate makes printing raise.

Run ids, names, tensor and file names come from files anyone can write; a name holding
``ESC [ 2 J`` or a newline would otherwise clear the screen or forge an output line. This module
imports nothing heavy, so that ``gradlog ls`` stays fast.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]
"""Bidi embeddings, overrides, isolates and marks: they reorder the text shown after them."""

_SEPARATORS = [0x2028, 0x2029]
"""Unicode line and paragraph separators: some terminals and editors break the line there."""


def _escape(code: int) -> str:
    ch = chr(code)
    if ch in _NAMED:
        return _NAMED[ch]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


_TABLE: dict[int, str] = {
    code: _escape(code)
    for code in [
        *range(0x00, 0x20),  # C0, with newline, carriage return, tab and escape
        0x7F,  # DEL
        *range(0x80, 0xA0),  # C1 (0x9b is a one-byte CSI)
        *_BIDI,
        *_SEPARATORS,
        *range(0xD800, 0xE000),  # surrogates: only ever lone in a str, unencodable
    ]
}


def safe_text(s: str) -> str:
    """``s`` with every control character, bidi control, line separator and lone surrogate
    written as a visible escape (``\\x1b``, ``\\n``, ``\\u202e``; an undecodable byte as
    ``\\xff``); other text, backslashes included, unchanged."""
    return s.translate(_TABLE)
