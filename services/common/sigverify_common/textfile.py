"""Opening a CSV file whatever program wrote it: its text encoding found before reading.

Spreadsheets save CSV in several encodings: UTF-8 with a byte-order mark (Excel's "CSV
UTF-8"), UTF-8 without one, or the Windows code page 1252 (Excel's plain "CSV" on Windows in
Western locales). ``detect_encoding`` reads the file once, in blocks, and answers:

- ``utf-8-sig`` when it starts with the UTF-8 byte-order mark, ``utf-8`` when every byte
  decodes as UTF-8;
- otherwise ``cp1252`` when every byte is defined there, else ``latin-1``, which decodes any
  byte (the last resort);
- but it refuses (``InvalidArgument``) a file that mixes UTF-8 sequences with bytes that are
  not UTF-8 (decoding it either way would garble some names), UTF-16 text, spreadsheet
  workbooks (xlsx, xls) given instead of CSV, compressed files (gzip, xz, zstd: known by their
  first bytes), and binary data (over 5 % of its first block control characters
  other than tab, line ends and form feed), naming the problem and what to do.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import TextIO

from sigverify_common.errors import InvalidArgument

BLOCK = 1 << 20
#: Bytes cp1252 leaves undefined.
_NOT_CP1252 = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")
#: A well-formed multi-byte UTF-8 sequence.
_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")

_SAVE_AS = "save it from the spreadsheet as 'CSV UTF-8' and try again"
#: Compressed files, by their magic bytes: (magic, name, the tool that decompresses them).
_COMPRESSED = ((b"\x1f\x8b", "gzip", "gunzip"), (b"\xfd7zXZ\x00", "xz", "unxz"),
               (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"))
#: Bytes CSV text does not hold: C0 controls but tab, line feed, form feed and carriage
#: return; and DEL.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")
#: Share of control bytes in the first block above which a file is binary, not text...
BINARY_SHARE = 0.05
#: ... when there are at least this many: a small batch with a few control characters in a
#: value (3 in a 58-byte file, found by intake's fuzz test) is text whose rows are rejected
#: one by one, not a binary file refused whole.
BINARY_MIN_CONTROLS = 32


def _not_text(path: Path, block: bytes) -> str | None:
    """Why ``block`` (the file's first) is not CSV text, or None when it may be."""
    if not block:
        return None
    controls = len(_CONTROL.findall(block))
    if controls <= BINARY_SHARE * len(block) or controls < BINARY_MIN_CONTROLS:
        return None
    zeros = sorted((block[0::2].count(0) / len(block[0::2]), block[1::2].count(0) /
                    max(len(block[1::2]), 1)))
    if len(block) >= 16 and zeros[1] > 0.9 and zeros[0] < 0.1:  # ASCII text in UTF-16
        return (f"{path}: the file looks like UTF-16 text without a byte-order mark, not CSV; "
                f"{_SAVE_AS}")
    return (f"{path}: the file is not a text file (binary data, {controls:,} control bytes in "
            f"its first {len(block):,}), so not a CSV file; give the roll or batch as CSV text")


def detect_encoding(path: Path) -> str:
    """The encoding to read ``path`` with (see the module's docstring)."""
    with path.open("rb") as fh:
        head = fh.read(8)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise InvalidArgument(f"{path}: the file is UTF-16 text, not CSV; {_SAVE_AS}")
        if head.startswith(b"PK\x03\x04"):
            raise InvalidArgument(f"{path}: the file is a workbook (xlsx) or another zip "
                                  f"archive, not CSV; {_SAVE_AS}")
        if head.startswith(b"\xd0\xcf\x11\xe0"):
            raise InvalidArgument(f"{path}: the file is an Excel 97-2003 workbook (xls), not "
                                  f"CSV; {_SAVE_AS}")
        for magic, kind, tool in _COMPRESSED:
            if head.startswith(magic):
                raise InvalidArgument(f"{path}: the file is {kind}-compressed, not CSV text; "
                                      f"decompress it first ({tool}) and give the CSV file")
        fh.seek(0)
        if (why := _not_text(path, fh.read(BLOCK))) is not None:
            raise InvalidArgument(why)
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        line = 1
        bad_line = 0
        while block := fh.read(BLOCK):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                bad_line = line + block.count(b"\n", 0, exc.start)
                break
            line += block.count(b"\n")
        else:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                bad_line = line
            else:
                return "utf-8"
        fh.seek(0)
        utf8_seen, cp1252 = False, True
        while block := fh.read(BLOCK):
            utf8_seen = utf8_seen or _UTF8_SEQUENCE.search(block) is not None
            cp1252 = cp1252 and _NOT_CP1252.search(block) is None
    if utf8_seen:
        raise InvalidArgument(
            f"{path}: the file mixes encodings: most of it is UTF-8 but line {bad_line:,} has "
            f"a byte that is not; {_SAVE_AS}")
    return "cp1252" if cp1252 else "latin-1"


def open_text(path: Path) -> TextIO:
    """``path`` opened for the csv module (``newline=""``) in its detected encoding."""
    if path.is_dir():
        raise InvalidArgument(f"{path}: is a directory, not a CSV file")
    if not path.exists():
        raise InvalidArgument(f"{path}: no such file")
    return path.open(newline="", encoding=detect_encoding(path))
