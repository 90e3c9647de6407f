"""Reading a CSV file's records knowing which lines of the file each one took.

The csv module reads a quoted field across line ends (a spreadsheet cell may hold a line
break), so a quote that is never closed makes the rest of the file one field: the csv module
(not strict) returns that record as if nothing were wrong, and every later line is lost in it.
``CsvRecords`` tells the cases apart and says which lines of the file are concerned:

- a quote still open at the end of the file: the record is unreadable, naming the column
  whose quote opened, the line it opened on and the lines it absorbed (to the end of the
  file), so that no line is lost without a word;
- a record that runs over several lines and has not the header's number of fields: a quote
  opened on its first line closed lines later; unreadable, naming the lines it absorbed;
- a record the csv module refuses (a field over its 128 KiB limit): unreadable, with the
  lines it took and the column where it went wrong when that can be known;
- a record over several lines with the right number of fields whose quoting is not well
  formed (a quote that closed its field is followed by more text, as when a quote opened in
  one row is closed by the quote opening a field of the next: the csv module, not strict,
  reads on) or with a value holding a whole row's worth of commas (a quote opened in one row
  closed at the same field of the next): unreadable, naming the lines it absorbed;
- any other record over several lines with the right number of fields is read (a quoted line
  break is allowed); the reader of its values judges them (intake names a value over its
  limit).

The end of the file is recognised by a sentinel line fed to the csv module after the file's
last line: were a quote still open, the sentinel ends up inside the last field.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import NamedTuple, TextIO

from sigverify_common.errors import InvalidArgument

#: Fed to the csv module after the last line (Unicode noncharacters: no text holds them).
_EOF = "\ufdd0\ufdd1end of file\ufdd1\ufdd0"
_BREAK = re.compile(r"\r\n|\r|\n")
#: How much of a record's first line is scanned to name the column of a csv error.
_KEEP_CHARS = 1 << 20


class Record(NamedTuple):
    """One record: its number among the records after the header (blank lines aside), the
    first and last line of the file it took (the header is line 1), its values, and why it
    cannot be read ("" when it can; then ``values`` is empty)."""

    number: int
    first_line: int
    last_line: int
    values: list[str]
    problem: str = ""


def _lines_text(first: int, last: int) -> str:
    return f"line {first:,}" if first == last else f"lines {first:,}-{last:,}"


def line_breaks(text: str) -> int:
    """How many line ends (CR LF, CR or LF) ``text`` holds."""
    if "\n" not in text and "\r" not in text:
        return 0
    return len(_BREAK.findall(text))


def open_field(line: str) -> tuple[int, bool]:
    """Where ``line`` (one line of a CSV file, as the csv module's default dialect reads it)
    ends: the index of its last field and whether a quote is still open there."""
    field, quoted, start = 0, False, True
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if quoted:
            if c == '"':
                if i + 1 < n and line[i + 1] == '"':
                    i += 1
                else:
                    quoted = False
        elif c == ",":
            field += 1
            start = True
            i += 1
            continue
        elif c == '"' and start:
            quoted = True
        start = False
        i += 1
    return field, quoted


def lines_spanned(text: str) -> int:
    """How many lines of a file a field's ``text`` ran over (a line end it ends with, as
    when its quote never closed, starts no further line)."""
    breaks = line_breaks(text)
    return breaks + (0 if breaks and text.endswith(("\n", "\r")) else 1)


def looks_like_rows(value: str, width: int) -> int:
    """How many of the lines after a line break in ``value`` (one field) read as rows of a
    file of ``width`` columns (at least ``width - 1`` commas): a quote opened in that field
    and closed lines later took them. At least 1 when the value, over its lines, holds
    ``width - 1`` commas: the end of one row and the start of the next (a quote opened in a
    field of one row closed at the same field of the next). 0 for a line break in a cell (an
    address's second line), and for every value of a file of fewer than 3 columns."""
    if width < 3 or ("\n" not in value and "\r" not in value):
        return 0
    rows = sum(1 for part in _BREAK.split(value)[1:] if part.count(",") >= width - 1)
    return rows or (1 if value.count(",") >= width - 1 else 0)


class CsvRecords:
    """The header and then the records of CSV text (``fh`` opened with ``newline=""``)."""

    def __init__(self, fh: TextIO, name: str = "the file") -> None:
        self._fh = fh
        self._name = name
        #: Lines of the file read so far.
        self.lines = 0
        self._ended = False
        #: The first line of the record being read, and its other lines (if any).
        self._first_text: str | None = None
        self._more: list[str] = []
        self._columns: list[str] = []
        self._reader = csv.reader(self._feed())
        self._width = 0

    def _feed(self) -> Iterator[str]:
        for text in self._fh:
            self.lines += 1
            if self._first_text is None:
                self._first_text = text
            else:
                self._more.append(text)
            yield text
        self._ended = True
        yield _EOF

    def _column(self, index: int) -> str:
        return f"column {self._columns[index]!r}" if 0 <= index < len(self._columns) else (
            f"field {index + 1}")

    def header(self) -> list[str]:
        """The first record (blank lines aside), the column names; InvalidArgument when there
        is none or it cannot be read."""
        while True:
            first = self.lines + 1
            try:
                values = next(self._reader)
            except StopIteration:  # pragma: no cover - the sentinel always comes first
                values = []
            except csv.Error as exc:
                raise InvalidArgument(f"{self._name}: unreadable header "
                                      f"({_lines_text(first, self.lines)}): {exc}") from None
            if self._ended:
                if first > self.lines:
                    raise InvalidArgument(
                        f"{self._name}: the file has no header row (it is empty"
                        + (" but for blank lines)" if self.lines else ")"))
                raise InvalidArgument(
                    f"{self._name}: unreadable header: a quote opened on line {first:,} is "
                    f"never closed (it runs to the end of the file, line {self.lines:,})")
            if values:
                break
        if self.lines > first:
            raise InvalidArgument(
                f"{self._name}: unreadable header: a quote opened on line {first:,} closes only "
                f"on line {self.lines:,} (a column name does not run over several lines)")
        self._columns = values
        self._width = len(values)
        return values

    def __iter__(self) -> Iterator[Record]:
        number = 0
        reader, width = self._reader, self._width
        while True:
            first = self.lines + 1
            self._first_text = None
            if self._more:
                self._more = []
            try:
                values = next(reader)
            except StopIteration:  # pragma: no cover - the sentinel ends the loop
                return
            except csv.Error as exc:
                number += 1
                yield Record(number, first, self.lines, [], self._refused(first, exc))
                if self._ended:
                    return
                continue
            last = self.lines
            if last == first and not self._ended:  # the common case: one line, one row
                if values and values != [""]:
                    number += 1
                    yield Record(number, first, last, values)
                continue
            if self._ended:
                if first > last:  # the sentinel alone: no line of the file was open
                    return
                number += 1
                yield self._unterminated(number, first, values)
                return
            number += 1
            if (len(values) != width or any(looks_like_rows(v, width) for v in values)
                    or not self._well_quoted()):
                yield Record(number, first, last, [], self._absorbed(first, last, values))
                continue
            yield Record(number, first, last, values)

    def _unterminated(self, number: int, first: int, values: list[str]) -> Record:
        """The last record, whose quote was still open at the end of the file."""
        last = self.lines
        cut = values[-1].rfind(_EOF)
        field = values[-1][:cut] if cut >= 0 else values[-1]
        # The field holds every line end after its quote; the file's last line may have one.
        opened = last - line_breaks(field) + (1 if field.endswith(("\n", "\r")) else 0)
        opened = max(first, min(opened, last))
        where = f"a quote opening {self._column(len(values) - 1)} on line {opened:,}"
        if opened == last:
            return Record(number, first, last, [],
                          f"{_lines_text(first, last)}: {where} is never closed (the line is "
                          "the last of the file)")
        return Record(number, first, last, [],
                      f"{_lines_text(first, last)}: {where} is never closed: it runs to the end "
                      f"of the file and absorbed {_lines_text(opened + 1, last)} "
                      f"({last - opened:,} line(s) not read as rows); close the quote and send "
                      "the file again")

    def _well_quoted(self) -> bool:
        """Whether the record's lines, read again strictly, are one well-formed record: every
        quote that closes a field is followed by a comma or the line's end."""
        try:
            return len(list(csv.reader([self._first_text or "", *self._more], strict=True))) == 1
        except csv.Error:
            return False

    def _absorbed(self, first: int, last: int, values: list[str]) -> str:
        """A record over several lines that is not one row: it has not the header's number
        of fields, or a value holds lines that read as rows of the file, or a quote closed
        before the end of its field."""
        index = next((i for i, v in enumerate(values) if looks_like_rows(v, self._width)),
                     None)
        if index is None:
            index = next((i for i, v in enumerate(values) if _BREAK.search(v)), len(values) - 1)
            found = (f"the row has {len(values):,} fields, not {self._width:,}"
                     if len(values) != self._width else
                     "the quote that closed it is followed by more text, not by the end of "
                     "the field")
        else:
            found = f"{looks_like_rows(values[index], self._width):,} of them read as rows"
        return (f"{_lines_text(first, last)}: a quote opening {self._column(index)} on line "
                f"{first:,} closes only on line {last:,}, so {_lines_text(first + 1, last)} "
                f"went into that field and {found}; close the quote where the field ends and "
                "send the file again")

    def _refused(self, first: int, exc: csv.Error) -> str:
        """A record the csv module refused (a field over its limit)."""
        where = _lines_text(first, self.lines)
        text = (self._first_text or "")[:_KEEP_CHARS].rstrip("\r\n")
        index, quoted = open_field(text)
        if self.lines > first and quoted:
            return (f"{where}: {exc}: a quote opening {self._column(index)} on line {first:,} "
                    f"had not closed by line {self.lines:,}")
        if self.lines == first:
            longest = _longest_field(text)
            if longest is not None:
                return f"{where}: {self._column(longest)}: {exc}"
        return f"{where}: {exc}"


def _longest_field(line: str) -> int | None:
    """The index of the longest field of one line (quotes counted), None when it is empty."""
    best, best_len, field, length, quoted, start = None, -1, 0, 0, False, True
    for c in line.rstrip("\r\n"):
        if c == '"' and (quoted or start):
            quoted = not quoted
        elif c == "," and not quoted:
            if length > best_len:
                best, best_len = field, length
            field, length, start = field + 1, 0, True
            continue
        length += 1
        start = False
    if length > best_len:
        best = field
    return best
