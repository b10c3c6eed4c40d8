"""A check of a Parquet footer that no Arrow call makes: every column chunk's physical type.

Arrow aborts the whole process (``std::terminate``, not an exception) on some corrupt footers: a
column chunk whose ``type`` field names no physical type, or another type than the schema's
column, when its metadata is built (pyarrow 26) or its pages are decoded (pyarrow 15). A reader
must name such a part, not die on it, so :func:`footer_problem` walks the footer's Thrift
(compact protocol) itself, reading only what it needs, before Arrow touches the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

MAGIC = b"PAR1"
_MAX_FOOTER = 256 << 20
_PHYSICAL_TYPES = range(8)  # BOOLEAN .. FIXED_LEN_BYTE_ARRAY

# Thrift compact protocol field types
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(
    13
)


class _CorruptError(ValueError):
    pass


class _Reader:
    """Just enough of the Thrift compact protocol to walk a FileMetaData."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.depth = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise _CorruptError("footer ends early")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        out = shift = 0
        while True:
            b = self.byte()
            out |= (b & 0x7F) << shift
            if not b & 0x80:
                return out
            shift += 7
            if shift > 70:
                raise _CorruptError("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def field(self, last: int) -> tuple[int, int]:
        """(field id, type) of the next field of a struct; type 0 at its end."""
        head = self.byte()
        kind = head & 0x0F
        if kind == _STOP:
            return 0, _STOP
        delta = head >> 4
        return (last + delta if delta else self.zigzag()), kind

    def list_header(self) -> tuple[int, int]:
        head = self.byte()
        size = head >> 4
        if size == 15:
            size = self.varint()
        if size > len(self.data):
            raise _CorruptError("list longer than the footer")
        return size, head & 0x0F

    def skip(self, kind: int) -> None:
        if kind in (_TRUE, _FALSE):
            return
        if kind == _BYTE:
            self.byte()
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.pos += 8
        elif kind == _BINARY:
            n = self.varint()  # read first: `self.pos += self.varint()` would lose the advance
            self.pos += n
        elif kind in (_LIST, _SET):
            size, elem = self.list_header()
            for _ in range(size):
                self.skip_element(elem)
        elif kind == _MAP:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip_element(types >> 4)
                    self.skip_element(types & 0x0F)
        elif kind == _STRUCT:
            self.struct(lambda _fid, k: self.skip(k))
        else:
            raise _CorruptError(f"unknown Thrift type {kind}")
        if self.pos > len(self.data):
            raise _CorruptError("footer ends early")

    def skip_element(self, kind: int) -> None:
        if kind in (_TRUE, _FALSE):
            self.byte()  # a bool inside a list takes a byte
        else:
            self.skip(kind)

    def struct(self, on_field: Callable[[int, int], None]) -> None:
        self.depth += 1
        if self.depth > 64:
            raise _CorruptError("footer nested too deeply")
        last = 0
        while True:
            fid, kind = self.field(last)
            if kind == _STOP:
                break
            on_field(fid, kind)
            last = fid
        self.depth -= 1


def _schema_types(r: _Reader) -> list[int | None]:
    """The physical type of each schema element (None for groups), in order."""
    size, elem = r.list_header()
    if elem != _STRUCT:
        raise _CorruptError("schema is not a list of structs")
    out: list[int | None] = []
    for _ in range(size):
        found: list[int | None] = [None]
        children = [0]

        def on(
            fid: int, kind: int, found: list[int | None] = found, ch: list[int] = children
        ) -> None:
            if fid == 1 and kind == _I32:
                found[0] = r.zigzag()
            elif fid == 5 and kind == _I32:
                ch[0] = r.zigzag()
            else:
                r.skip(kind)

        r.struct(on)
        out.append(None if children[0] else found[0])
    return out


def _chunk_types(r: _Reader) -> list[list[int | None]]:
    """Per row group, the ``meta_data.type`` of each column chunk (None where absent)."""
    size, elem = r.list_header()
    if elem != _STRUCT:
        raise _CorruptError("row groups are not a list of structs")
    groups: list[list[int | None]] = []
    for _ in range(size):
        chunks: list[int | None] = []

        def on_group(fid: int, kind: int, chunks: list[int | None] = chunks) -> None:
            if fid != 1 or kind != _LIST:
                r.skip(kind)
                return
            n, e = r.list_header()
            if e != _STRUCT:
                raise _CorruptError("columns are not a list of structs")
            for _ in range(n):
                got: list[int | None] = [None]

                def on_chunk(cf: int, ck: int, got: list[int | None] = got) -> None:
                    if cf == 3 and ck == _STRUCT:

                        def on_meta(mf: int, mk: int) -> None:
                            if mf == 1 and mk == _I32:
                                got[0] = r.zigzag()
                            else:
                                r.skip(mk)

                        r.struct(on_meta)
                    else:
                        r.skip(ck)

                r.struct(on_chunk)
                chunks.append(got[0])

        r.struct(on_group)
        groups.append(chunks)
    return groups


def footer_problem(path: str | Path) -> str | None:
    """Why ``path``'s Parquet footer cannot be trusted to Arrow, or None: magic bytes, footer
    length, and every column chunk's physical type (a valid one, the schema column's)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < 12:
                return None  # Arrow names it (too small)
            f.seek(size - 8)
            tail = f.read(8)
            length = int.from_bytes(tail[:4], "little")
            if tail[4:] != MAGIC or not 0 < length <= min(size - 12, _MAX_FOOTER):
                return None  # Arrow names a missing magic or a bad length
            f.seek(size - 8 - length)
            data = f.read(length)
    except OSError:
        return None  # Arrow names it
    r = _Reader(data)
    leaves: list[int | None] = []
    groups: list[list[int | None]] = []
    try:

        def on(fid: int, kind: int) -> None:
            if fid == 2 and kind == _LIST:
                leaves.extend(t for t in _schema_types(r) if t is not None)
            elif fid == 4 and kind == _LIST:
                groups.extend(_chunk_types(r))
            else:
                r.skip(kind)

        r.struct(on)
    except (_CorruptError, RecursionError) as exc:
        return f"corrupt footer: {exc}"
    for g, chunks in enumerate(groups):
        if len(chunks) != len(leaves):
            return (
                f"corrupt footer: row group {g} has {len(chunks)} columns, the schema {len(leaves)}"
            )
        for c, (got, want) in enumerate(zip(chunks, leaves, strict=True)):
            if got is not None and (got not in _PHYSICAL_TYPES or got != want):
                return (
                    f"corrupt footer: column {c} of row group {g} has physical type {got}, "
                    f"the schema {want}"
                )
    return None
